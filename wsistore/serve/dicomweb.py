"""DICOMweb for every archive ``wsistore serve`` serves, rooted at ``/dicomweb``.

Each archive is one series of VL Whole Slide Microscopy instances, exactly those that
``restore --format dicom`` would write for it with the served model (JPEG quality 90 frames of
512 x 512; :func:`~wsistore.restoration.dicom_series.restored_series`: the same attributes and
the same derived UIDs, stable across restarts). A DICOM source keeps its patient and study, so
its archive appears in its own study; archives of one slide share a study.

- QIDO-RS: ``/studies``, ``/series``, ``/instances`` and the same below a study (and a series):
  matching on any attribute of the level by keyword or tag (``PatientID=X``, ``00100020=X``),
  ``*`` and ``?`` wildcards, UID lists, date and time ranges, ``includefield`` (``all`` or
  attributes), ``limit`` and ``offset``; ``fuzzymatching`` is accepted and ignored.
- WADO-RS metadata (DICOM JSON): ``.../metadata`` of a study, series or instance.
- WADO-RS frames: ``.../instances/{uid}/frames/{n[,m...]}`` as ``multipart/related`` of
  ``image/jpeg`` (or ``application/octet-stream``: the JPEG as stored with ``transfer-syntax=*``,
  raw RGB with the uncompressed syntax). Level 0 is super-resolved on demand through the same
  cache and the same bound on work at once as the DeepZoom tiles; the /2 level is the 2 x 2
  mean of level-0 frames as decoded; coarser levels come from the stored pyramid. Coded frames
  are kept in an LRU of :data:`FRAME_CACHE_BYTES`; their URLs name immutable content (a
  generator or archive change makes new UIDs), so they are served ``immutable``.
- WADO-RS retrieve: a study, series or instance as ``multipart/related; type=application/dicom``
  (Part 10 files in their stored transfer syntax, frames made as they are sent).
- CORS: any origin may read (viewers served elsewhere), with ``Authorization`` and ``Accept``
  allowed in requests.

Errors are DICOMweb's status codes (400 a malformed request or query, 404 an unknown UID or
frame, 406 a media type that cannot be sent) with one line in ``text/plain`` and the same line
in a ``Warning: 299`` header field, as PS3.18 describes errors and warnings.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from wsistore._version import __version__
from wsistore.errors import first_line
from wsistore.restoration.cache import SingleFlightCache
from wsistore.restoration.dicom_series import (
    DicomCodec,
    ReadFrames,
    SeriesInstance,
    SeriesUids,
    level0_spacing,
    part10_chunks,
    part10_header,
    restored_series,
)
from wsistore.restoration.levels import output_levels

#: The frames offered: what ``restore --format dicom`` writes by default.
CODEC = DicomCodec("jpeg")
FRAME_SIZE = 512
#: Coded frames kept per series.
FRAME_CACHE_BYTES = 64 << 20
DICOM_JSON = "application/dicom+json"
UNCOMPRESSED = "1.2.840.10008.1.2.1"
IMMUTABLE = "public, max-age=31536000, immutable"
#: The attributes of a study and of a series (QIDO-RS records; PS3.18 tables 10.6.3-3 and -4).
STUDY_KEYWORDS = tuple(
    "StudyDate StudyTime AccessionNumber ReferringPhysicianName PatientName PatientID IssuerOfPatientID "
    "PatientBirthDate PatientSex PatientAge StudyInstanceUID StudyID StudyDescription".split()
)
SERIES_KEYWORDS = ("Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription")
#: An instance's attributes in a QIDO-RS answer unless ``includefield`` asks for more.
INSTANCE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "ImageType",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
)
_CONTROL = ("limit", "offset", "fuzzymatching", "includefield")
_UID_LIST = re.compile(r"[\\,]")


class DicomWebError(Exception):
    """A DICOMweb request refused with ``status`` and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DicomWebSeries:
    """One served archive as a DICOM series: its instances (made when first asked for), their
    frames coded on demand and kept in an LRU."""

    name: str
    slide: Any  # RestoredSlide
    _made: list[SeriesInstance] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: SingleFlightCache[tuple[str, int]] = field(default_factory=lambda: SingleFlightCache(FRAME_CACHE_BYTES))

    @property
    def instances(self) -> list[SeriesInstance]:
        """The instances restore would write for the archive with the served model (made once)."""
        with self._lock:
            if self._made is None:
                self._made = self._make()
            return self._made

    @property
    def provenance(self) -> dict[str, Any]:
        """What restore would record for the whole slide with the served model."""
        md = self.slide.archive.metadata
        return self.slide.provenance() | {"region": [0, 0, md.width, md.height], "wsistore_version": __version__}

    @cached_property
    def _uids(self) -> tuple[str, str]:
        uids = SeriesUids(self.slide.archive, self.provenance, CODEC, FRAME_SIZE)
        return str(uids.of_source("study", "StudyInstanceUID")), str(uids.of_series("series"))

    def uids(self) -> tuple[str, str]:
        """The study's and the series' UIDs, without making the instances (what finding a
        series by its UIDs needs)."""
        return self._uids

    def _make(self) -> list[SeriesInstance]:
        archive = self.slide.archive
        md = archive.metadata
        region = (0, 0, md.width, md.height)
        provenance = self.provenance
        levels = output_levels(archive, region, 2, FRAME_SIZE)
        level0 = ReadFrames(CODEC, FRAME_SIZE, (md.width, md.height), level0_spacing(archive), self._level0)
        made = restored_series(archive, provenance, level0, levels, _created(md.created))
        for instance in made:
            instance.frames.source = self._cached(instance)
            instance.dataset = _as_written(instance)
        return made

    def _level0(self, box: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = box
        return np.asarray(self.slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0)))[..., :3]

    def _cached(self, instance: SeriesInstance) -> Callable[[int, int], bytes]:
        frames = instance.frames

        def coded(x: int, y: int) -> bytes:
            def code() -> np.ndarray:
                return np.frombuffer(frames.code(x, y), dtype=np.uint8)

            return self._cache.get((instance.uid, y * frames.cols + x), code).tobytes()

        return coded

    @property
    def first(self) -> Any:
        return self.instances[0].dataset

    @property
    def study_uid(self) -> str:
        return self.uids()[0]

    @property
    def series_uid(self) -> str:
        return self.uids()[1]

    def instance(self, uid: str) -> SeriesInstance:
        for instance in self.instances:
            if instance.uid == uid:
                return instance
        raise DicomWebError(404, f"no instance {uid} in series {self.series_uid}")


def _as_written(instance: SeriesInstance) -> Any:
    """The instance's header as its Part 10 file states it (values as text, as any reader
    of the file sees them)."""
    import io

    import pydicom

    return pydicom.dcmread(io.BytesIO(part10_header(instance)), stop_before_pixels=True)


def _created(text: str) -> datetime.datetime:
    """The archive's creation time: the instances' creation and contribution time, so that
    their metadata is the same on every start."""
    try:
        made = datetime.datetime.fromisoformat(text)
    except ValueError:
        made = datetime.datetime(1970, 1, 1)
    return made if made.tzinfo else made.replace(tzinfo=datetime.UTC)


# -- QIDO-RS records and matching -------------------------------------------------------------
def _subset(dataset: Any, keywords: Iterable[str]) -> Any:
    from pydicom.dataset import Dataset

    out = Dataset()
    for keyword in keywords:
        if keyword in dataset:
            out[keyword] = dataset[keyword]
    return out


def _study_record(series: Sequence[DicomWebSeries], base: str) -> Any:
    record = _subset(series[0].first, STUDY_KEYWORDS)
    record.ModalitiesInStudy = sorted({str(s.first.Modality) for s in series})
    record.NumberOfStudyRelatedSeries = len(series)
    record.NumberOfStudyRelatedInstances = sum(len(s.instances) for s in series)
    record.RetrieveURL = f"{base}/studies/{record.StudyInstanceUID}"
    return record


def _series_record(series: DicomWebSeries, base: str) -> Any:
    record = _subset(series.first, STUDY_KEYWORDS + SERIES_KEYWORDS)
    record.NumberOfSeriesRelatedInstances = len(series.instances)
    record.RetrieveURL = f"{base}/studies/{series.study_uid}/series/{series.series_uid}"
    return record


def _instance_record(series: DicomWebSeries, instance: SeriesInstance, base: str) -> Any:
    from pydicom.dataset import Dataset

    record = Dataset()
    record.update(instance.dataset)
    record.AvailableTransferSyntaxUID = instance.transfer_syntax
    record.RetrieveURL = f"{base}/studies/{series.study_uid}/series/{series.series_uid}/instances/{instance.uid}"
    return record


@dataclass(frozen=True)
class Query:
    """A QIDO-RS query: attribute filters (tag -> value), the attributes asked for beyond the
    defaults (``everything`` for ``includefield=all``), ``limit`` and ``offset``."""

    filters: dict[int, str]
    include: frozenset[int]
    everything: bool
    limit: int | None
    offset: int

    @classmethod
    def parse(cls, params: Iterable[tuple[str, str]]) -> Query:
        filters: dict[int, str] = {}
        include: set[int] = set()
        everything, limit, offset = False, None, 0
        for key, value in params:
            if key == "includefield":
                for name in filter(None, (v.strip() for v in value.split(","))):
                    if name == "all":
                        everything = True
                    else:
                        include.add(_tag(name))
            elif key in ("limit", "offset"):
                if not value.isdigit():
                    raise DicomWebError(400, f"{key} must be a non-negative integer, got {value!r}")
                limit, offset = (int(value), offset) if key == "limit" else (limit, int(value))
            elif key == "fuzzymatching":
                continue
            else:
                filters[_tag(key)] = value
        return cls(filters, frozenset(include), everything, limit, offset)

    def matches(self, record: Any) -> bool:
        return all(_matches(record, tag, value) for tag, value in self.filters.items())

    def page(self, records: list[Any]) -> list[Any]:
        end = None if self.limit is None else self.offset + self.limit
        return records[self.offset : end]


def _tag(name: str) -> int:
    """The tag a query key names: a keyword (``PatientID``) or eight hex digits (``00100020``)."""
    from pydicom.datadict import tag_for_keyword

    if "." in name:
        raise DicomWebError(400, f"sequence matching ({name}) is not supported")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise DicomWebError(400, f"unknown attribute {name!r} in the query")
    return int(tag)


def _matches(record: Any, tag: int, wanted: str) -> bool:
    """PS3.4 C.2.2.2 matching of ``wanted`` against the record's element ``tag``: empty matches
    all, UID lists, ranges of dates and times, wildcards, else single values."""
    if wanted == "":
        return True
    element = record.get(tag)
    if element is None or element.value in (None, "", []):
        return False
    raw = element.value
    values = (
        [str(v) for v in raw] if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" else [str(raw)]
    )
    if element.VR == "UI":
        return any(v in _UID_LIST.split(wanted) for v in values)
    if element.VR in ("DA", "TM", "DT") and "-" in wanted:
        low, high = wanted.split("-", 1)
        return any((not low or v >= low) and (not high or v <= high) for v in values)
    if element.VR == "PN":
        return any(fnmatch.fnmatchcase(v.upper(), wanted.upper()) for v in values)
    if "*" in wanted or "?" in wanted:
        return any(fnmatch.fnmatchcase(v, wanted) for v in values)
    return any(v == wanted for v in values)


def _answer(records: list[Any], query: Query, defaults: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON of the matching records: the level's default attributes, those asked for by
    ``includefield`` and the matching keys (every attribute with ``includefield=all``)."""
    from pydicom.datadict import tag_for_keyword

    wanted = {int(tag_for_keyword(k) or 0) for k in defaults} | set(query.include) | set(query.filters)
    wanted |= {0x00081190, 0x00083002}  # Retrieve URL, Available Transfer Syntax UID
    out = []
    for record in query.page([r for r in records if query.matches(r)]):
        if not query.everything:
            record = _subset(record, (r.keyword for r in record if int(r.tag) in wanted))
        out.append(record.to_json_dict())
    return out


# -- media types --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Accepted:
    """One media range of an Accept header: ``type`` (``multipart/related``'s ``type`` parameter
    or the plain type) and its ``transfer-syntax`` (None: not stated)."""

    type: str
    transfer_syntax: str | None


def accepted(header: str | None) -> list[Accepted]:
    """The media ranges of ``header`` in the order given (q=0 ranges dropped); none for an
    absent header."""
    found = []
    for part in (header or "").split(","):
        fields = [f.strip() for f in part.split(";") if f.strip()]
        if not fields:
            continue
        params = {}
        for item in fields[1:]:
            key, _, value = item.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        if params.get("q") in ("0", "0.0", "0.00", "0.000"):
            continue
        media = fields[0].lower()
        if media == "multipart/related":
            media = params.get("type", "*/*").lower()
        found.append(Accepted(media, params.get("transfer-syntax")))
    return found


def _frame_media(header: str | None, stored: str) -> tuple[str, str]:
    """The media type and transfer syntax frames are sent in for ``header``: the stored JPEG
    (``image/jpeg``, or ``application/octet-stream`` with ``transfer-syntax=*`` or the stored
    syntax), or raw RGB (``application/octet-stream``, uncompressed)."""
    ranges = accepted(header) or [Accepted("*/*", None)]
    for r in ranges:
        if r.type in ("image/jpeg", "image/*", "*/*") and r.transfer_syntax in (None, "*", stored):
            return "image/jpeg", stored
        if r.type == "application/octet-stream":
            if r.transfer_syntax in ("*", stored):
                return "application/octet-stream", stored
            if r.transfer_syntax in (None, UNCOMPRESSED):
                return "application/octet-stream", UNCOMPRESSED
    raise DicomWebError(
        406,
        f"frames are offered as image/jpeg (transfer syntax {stored}) or application/octet-stream "
        f"({stored} or {UNCOMPRESSED}); the request accepts {header}",
    )


def _check_dicom_media(header: str | None, stored: Iterable[str]) -> None:
    """Refuse (406) a retrieve whose Accept allows no Part 10 file in the stored syntaxes."""
    ranges = accepted(header) or [Accepted("*/*", None)]
    syntaxes = set(stored)
    for r in ranges:
        if r.type in ("application/dicom", "*/*") and (
            r.transfer_syntax in (None, "*") or r.transfer_syntax in syntaxes
        ):
            return
    raise DicomWebError(
        406, f"instances are sent as application/dicom in their stored transfer syntax; the request accepts {header}"
    )


def _multipart(parts: Iterable[tuple[str, bytes]], boundary: str) -> bytes:
    out = bytearray()
    for content_type, body in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


def _frame_numbers(text: str, count: int) -> list[int]:
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or len(item) > 9:
            raise DicomWebError(400, f"malformed frame list {text!r}: want numbers from 1, comma-separated")
        n = int(item)
        if not 1 <= n <= count:
            raise DicomWebError(404, f"frame {n} outside 1..{count}")
        numbers.append(n)
    return numbers


# -- the application ----------------------------------------------------------------------------
def build(slides: Sequence[Any], limiter: anyio.CapacityLimiter) -> Starlette:
    """The DICOMweb application over ``slides`` (:class:`~wsistore.serve.app.ServedSlide`), to
    be mounted at ``/dicomweb``; frames are made in threads under ``limiter``."""
    all_series = [DicomWebSeries(s.name, s.slide) for s in slides]

    def base(request: Request) -> str:
        """The DICOMweb root as the client reached it (``http://HOST:PORT/dicomweb``)."""
        return str(request.url.replace(path=request.scope.get("root_path", ""), query="")).rstrip("/")

    def studies_of(uid: str | None = None) -> dict[str, list[DicomWebSeries]]:
        grouped: dict[str, list[DicomWebSeries]] = {}
        for s in all_series:
            grouped.setdefault(s.study_uid, []).append(s)
        if uid is not None:
            if uid not in grouped:
                raise DicomWebError(404, f"no study {uid}")
            return {uid: grouped[uid]}
        return grouped

    def series_of(study: str | None, uid: str | None = None) -> list[DicomWebSeries]:
        found = [s for group in studies_of(study).values() for s in group]
        if uid is not None:
            found = [s for s in found if s.series_uid == uid]
            if not found:
                raise DicomWebError(404, f"no series {uid}" + (f" in study {study}" if study else ""))
        return found

    async def in_thread(call: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(call, *args, limiter=limiter)

    async def search_studies(request: Request) -> Response:
        query = Query.parse(request.query_params.multi_items())
        groups = await in_thread(studies_of)
        records = [_study_record(group, base(request)) for group in groups.values()]
        return _json(_answer(records, query, STUDY_KEYWORDS + ("ModalitiesInStudy", "NumberOfStudyRelatedSeries")))

    async def search_series(request: Request) -> Response:
        query = Query.parse(request.query_params.multi_items())
        found = await in_thread(series_of, request.path_params.get("study"))
        records = [_series_record(s, base(request)) for s in found]
        return _json(_answer(records, query, STUDY_KEYWORDS + SERIES_KEYWORDS + ("NumberOfSeriesRelatedInstances",)))

    async def search_instances(request: Request) -> Response:
        p = request.path_params
        query = Query.parse(request.query_params.multi_items())
        found = await in_thread(series_of, p.get("study"), p.get("series"))
        records = [_instance_record(s, i, base(request)) for s in found for i in s.instances]
        keywords = INSTANCE_KEYWORDS + ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber")
        return _json(_answer(records, query, keywords))

    async def metadata(request: Request) -> Response:
        p = request.path_params
        found = await in_thread(series_of, p["study"], p.get("series"))
        if "instance" in p:
            datasets = [found[0].instance(p["instance"]).dataset]
        else:
            datasets = [i.dataset for s in found for i in s.instances]
        return _json([ds.to_json_dict() for ds in datasets])

    async def frames(request: Request) -> Response:
        p = request.path_params
        found = await in_thread(series_of, p["study"], p["series"])
        instance = found[0].instance(p["instance"])
        numbers = _frame_numbers(p["frames"], instance.frames.count)
        media, syntax = _frame_media(request.headers.get("accept"), instance.transfer_syntax)

        def make() -> list[tuple[str, bytes]]:
            parts = []
            for n in numbers:
                data = instance.frames.frame(n - 1)
                if syntax == UNCOMPRESSED:
                    data = instance.frames.codec.decode(data).tobytes()
                parts.append((f"{media}; transfer-syntax={syntax}", data))
            return parts

        boundary = uuid.uuid4().hex
        body = _multipart(await in_thread(make), boundary)
        content_type = f'multipart/related; type="{media}"; transfer-syntax={syntax}; boundary={boundary}'
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": IMMUTABLE})

    async def retrieve(request: Request) -> Response:
        p = request.path_params
        found = await in_thread(series_of, p["study"], p.get("series"))
        if "instance" in p:
            instances = [found[0].instance(p["instance"])]
        else:
            instances = [i for s in found for i in s.instances]
        _check_dicom_media(request.headers.get("accept"), (i.transfer_syntax for i in instances))
        boundary = uuid.uuid4().hex

        async def stream() -> AsyncIterator[bytes]:
            for instance in instances:
                content_type = f"application/dicom; transfer-syntax={instance.transfer_syntax}"
                yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
                coded = (instance.frames.frame(k) for k in range(instance.frames.count))
                chunks = part10_chunks(instance, coded)
                while True:
                    chunk = await in_thread(next, chunks, None)
                    if chunk is None:
                        break
                    yield chunk
                yield b"\r\n"
            yield f"--{boundary}--\r\n".encode()

        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        return StreamingResponse(stream(), headers={"Content-Type": content_type})

    study, series, instance = "/studies/{study}", "/series/{series}", "/instances/{instance}"
    routes = [
        Route("/studies", search_studies),
        Route("/series", search_series),
        Route("/instances", search_instances),
        Route(f"{study}/series", search_series),
        Route(f"{study}/instances", search_instances),
        Route(f"{study}{series}/instances", search_instances),
        Route(f"{study}/metadata", metadata),
        Route(f"{study}{series}/metadata", metadata),
        Route(f"{study}{series}{instance}/metadata", metadata),
        Route(f"{study}{series}{instance}/frames/{{frames}}", frames),
        Route(study, retrieve),
        Route(f"{study}{series}", retrieve),
        Route(f"{study}{series}{instance}", retrieve),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["Accept", "Authorization", "Content-Type", "Range"],
        expose_headers=["Content-Type", "Content-Length", "Warning"],
    )
    handlers: dict[Any, Any] = {DicomWebError: _error, Exception: _internal_error}
    return Starlette(routes=routes, middleware=[cors], exception_handlers=handlers)


def _json(payload: list[dict[str, Any]]) -> Response:
    return JSONResponse(payload, media_type=DICOM_JSON, headers={"Cache-Control": "no-cache"})


def _warning(message: str) -> dict[str, str]:
    text = message.replace('"', "'").encode("ascii", "replace").decode()
    return {"Warning": f'299 wsistore: "{text}"'}


async def _error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, DicomWebError) else 400
    line = first_line(exc)
    return PlainTextResponse(line + "\n", status_code=status, headers=_warning(line))


async def _internal_error(request: Request, exc: Exception) -> Response:
    import logging

    logging.getLogger("wsistore.serve").error(
        "%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, first_line(exc)
    )
    line = f"internal error: {type(exc).__name__}"
    return PlainTextResponse(line + "\n", status_code=500, headers=_warning(line))
