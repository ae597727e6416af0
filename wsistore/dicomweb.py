"""DICOMweb client side: a series on a DICOMweb server (a PACS) as ingest's and verify's source,
and STOW-RS of a restored series into one.

URLs are ``dicomweb+http://HOST[:PORT]/ROOT?study=UID[&series=UID]`` (``dicomweb+https://`` over
TLS): ``ROOT`` is the server's DICOMweb root (Orthanc's ``/dicom-web``); without ``series``, the
study must hold one whole-slide series. A store target names the root alone.

Credentials never travel on the command line (a URL with ``user:password@`` is refused): they
come from the environment, ``WSISTORE_DICOMWEB_TOKEN`` (a bearer token) or
``WSISTORE_DICOMWEB_USER`` with ``WSISTORE_DICOMWEB_PASSWORD`` or ``WSISTORE_DICOMWEB_PASSWORD_FILE``
(HTTP Basic), else from a netrc file (``$NETRC`` or ``~/.netrc``, as requests reads it).

A series is fetched instance by instance (found with wsidicom's web client, its VL Whole Slide
Microscopy instances only; each one retrieved whole with WADO-RS, ``application/dicom`` in its
stored transfer syntax) into a folder as ``SOPInstanceUID.dcm``, hashed as it arrives: the folder
then reads as any DICOM input, and its fingerprint is the instances' SOP Instance UIDs and
sha256s as fetched. A connection lost mid-instance is retried (:data:`ATTEMPTS` times); the
folder is a temporary one, removed whatever happens, so nothing half-fetched is left.

STOW-RS sends one instance per request (the file's own bytes), retries what the network or a
busy server lost, and reports each instance as stored or refused with the server's reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsistore.errors import InputError, WsistoreError, first_line, held_back

SCHEMES = ("dicomweb+http", "dicomweb+https")
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Tries per request when the connection drops or the server is busy (5xx, 408, 429).
ATTEMPTS = 3
#: Seconds before the second try; doubled for each one after.
BACKOFF = 1.0
#: Seconds to connect, and between bytes received.
TIMEOUT = (10, 120)
_CHUNK = 1 << 20
_RETRIED_STATUS = (408, 429, 500, 502, 503, 504)
ENV_TOKEN = "WSISTORE_DICOMWEB_TOKEN"
ENV_USER = "WSISTORE_DICOMWEB_USER"
ENV_PASSWORD = "WSISTORE_DICOMWEB_PASSWORD"
ENV_PASSWORD_FILE = "WSISTORE_DICOMWEB_PASSWORD_FILE"
CREDENTIALS_HELP = (
    f"set {ENV_USER} and {ENV_PASSWORD} (or {ENV_PASSWORD_FILE}), or {ENV_TOKEN}, "
    "or give them in a netrc file ($NETRC or ~/.netrc)"
)


def is_dicomweb_url(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` is a ``dicomweb+http(s)://`` URL."""
    return isinstance(text, str) and text.split("://", 1)[0].lower() in SCHEMES and "://" in text


@dataclass(frozen=True)
class DicomWebUrl:
    """A DICOMweb server's root (``http(s)://HOST:PORT/ROOT``) and, for a source, the study and
    series on it."""

    root: str
    study: str | None = None
    series: str | None = None

    @classmethod
    def parse(cls, text: str) -> DicomWebUrl:
        """Parse ``dicomweb+http(s)://HOST[:PORT]/ROOT[?study=UID[&series=UID]]``; refused in one
        line when malformed or when it carries credentials."""
        parts = urllib.parse.urlsplit(text)
        if parts.scheme.lower() not in SCHEMES or not parts.hostname:
            raise InputError(f"{text}: not a DICOMweb URL (want dicomweb+http://HOST[:PORT]/ROOT?study=UID&series=UID)")
        if parts.username is not None or parts.password is not None:
            raise InputError(f"credentials never go on the command line; {CREDENTIALS_HELP}")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise InputError(f"{text}: malformed port") from None
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"study", "series"})
        if unknown:
            raise InputError(f"{text}: unknown parameter(s) {', '.join(unknown)} (want study=UID and series=UID)")
        values = {}
        for key in ("study", "series"):
            given = query.get(key, [])
            if len(given) > 1 or (given and not re.fullmatch(r"[0-9]+(\.[0-9]+)*", given[0])):
                raise InputError(f"{text}: {key} must be one UID (digits and dots), got {', '.join(given)}")
            values[key] = given[0] if given else None
        if values["series"] and not values["study"]:
            raise InputError(f"{text}: a series needs its study (study=UID&series=UID)")
        root = urllib.parse.urlunsplit((parts.scheme.split("+", 1)[1], parts.netloc, parts.path.rstrip("/"), "", ""))
        return cls(root, values["study"], values["series"])

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.root).netloc

    def __str__(self) -> str:
        query = urllib.parse.urlencode({k: v for k, v in (("study", self.study), ("series", self.series)) if v})
        return f"dicomweb+{self.root}" + (f"?{query}" if query else "")


def session() -> Any:
    """A requests session with the credentials the environment names (netrc otherwise)."""
    import requests

    s = requests.Session()
    token, user = os.environ.get(ENV_TOKEN), os.environ.get(ENV_USER)
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    elif user:
        password = os.environ.get(ENV_PASSWORD)
        path = os.environ.get(ENV_PASSWORD_FILE)
        if password is None and path:
            try:
                password = Path(path).read_text().strip("\r\n")
            except OSError as exc:
                raise InputError(f"{ENV_PASSWORD_FILE}={path}: {exc.strerror or exc}") from None
        if password is None:
            raise InputError(f"{ENV_USER} is set but neither {ENV_PASSWORD} nor {ENV_PASSWORD_FILE}")
        s.auth = (user, password)
    return s


def _quiet() -> contextlib.AbstractContextManager[None]:
    """The clients' warnings and log lines held back (UIDs longer than their VR allows ...)."""
    return held_back(("pydicom", "wsidicom", "dicomweb_client"))


class _Lost(Exception):
    """A response cut short (retried)."""


def _http_error(url: DicomWebUrl, what: str, exc: BaseException) -> WsistoreError:
    """One line for a request that failed: unreachable, credentials refused, not found ..."""
    import requests

    response = getattr(exc, "response", None)
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = re.sub(r"^.*?\] ", "", first_line(exc)).rstrip("')\"")
        if "Errno 111" in str(exc) or "refused" in str(exc).lower():
            reason = "connection refused"
        return InputError(f"cannot reach the DICOMweb server {url.host} ({what}): {reason}")
    if isinstance(exc, requests.exceptions.Timeout):
        return InputError(f"the DICOMweb server {url.host} did not answer in time ({what})")
    if response is not None:
        status = f"{response.status_code} {response.reason or ''}".strip()
        if response.status_code in (401, 403):
            return InputError(f"{url.host} refused the credentials ({status}) for {what}; {CREDENTIALS_HELP}")
        if response.status_code == 404:
            return InputError(f"{url.root}: {what} not found ({status}); check the DICOMweb root and the UIDs")
        return InputError(f"{url.host} answered {status} for {what}")
    if isinstance(exc, (_Lost, requests.exceptions.ChunkedEncodingError)):
        detail = str(exc) if isinstance(exc, _Lost) else "the answer ended before its length"
        return WsistoreError(f"{url.host} dropped the connection during {what} ({detail}), {ATTEMPTS} times")
    return WsistoreError(f"{what} on {url.host} failed: {first_line(exc)}")


def _retrying(url: DicomWebUrl, what: str, call: Any) -> Any:
    """``call()`` tried up to :data:`ATTEMPTS` times while the connection drops or the server
    is busy; a last failure is one line (:func:`_http_error`)."""
    import requests

    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError, _Lost) as exc:
            error: BaseException = exc
            refused = isinstance(exc, requests.exceptions.ConnectionError) and "refused" in str(exc).lower()
            if refused:  # nothing listens there: no point in waiting
                raise _http_error(url, what, exc) from None
        except requests.exceptions.HTTPError as exc:
            error = exc
            if exc.response is None or exc.response.status_code not in _RETRIED_STATUS:
                raise _http_error(url, what, exc) from None
        if attempt < ATTEMPTS:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
    raise _http_error(url, what, error) from None


# -- fetching a series --------------------------------------------------------------------------
@dataclass
class FetchedSeries:
    """A series fetched into ``folder`` (``SOPInstanceUID.dcm`` files): where it came from and
    each instance's sha256 as fetched."""

    url: DicomWebUrl
    folder: Path
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """The instances' UIDs and sha256s, as one digest (what ``--resume`` compares)."""
        lines = "".join(f"{sha}  {uid}\n" for uid, sha in sorted(self.sha256.items()))
        return hashlib.sha256(lines.encode()).hexdigest()


@contextlib.contextmanager
def fetched_series(text: str, near: str | os.PathLike[str] | None = None) -> Iterator[FetchedSeries]:
    """The series ``text`` names fetched into a temporary folder (beside ``near`` when it is a
    local path, else in the system's temporary folder), removed when the block ends."""
    url = DicomWebUrl.parse(text)
    if not url.study:
        raise InputError(f"{text}: name the study (?study=UID[&series=UID])")
    parent = None
    if near is not None and "://" not in os.fspath(near):
        parent = Path(os.fspath(near)).resolve().parent
        parent = parent if parent.is_dir() else None
    folder = Path(tempfile.mkdtemp(prefix=".wsistore-dicomweb-", dir=parent))
    try:
        fetched = FetchedSeries(url, folder)
        with _quiet():
            _fetch(fetched, session())
        yield fetched
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _client(url: DicomWebUrl, http: Any) -> Any:
    from dicomweb_client.api import DICOMwebClient
    from wsidicom.web import WsiDicomWebClient

    client = DICOMwebClient(url.root, session=http, timeout=TIMEOUT)
    client.set_http_retry_params(retry=False)  # retried here, with the errors made one line
    return WsiDicomWebClient(client), client


def _fetch(fetched: FetchedSeries, http: Any) -> None:
    """Find the series' WSI instances with wsidicom's web client and fetch each one."""
    url = fetched.url
    web, client = _client(url, http)
    assert url.study is not None
    series = url.series or _only_wsi_series(url, client)
    found = _retrying(
        url, f"the instances of series {series}", lambda: list(web.get_wsi_instances(url.study, [series]))
    )
    uids = sorted({str(uid) for _, uid, _ in found})
    if not uids:
        raise InputError(_not_a_wsi(url, client, series))
    for n, uid in enumerate(uids, 1):
        what = f"instance {uid} ({n} of {len(uids)})"
        target = f"{url.root}/studies/{url.study}/series/{series}/instances/{uid}"
        path = fetched.folder / f"{uid}.dcm"
        fetched.sha256[uid] = _retrying(url, what, lambda t=target, p=path: _download(http, t, p))


def _only_wsi_series(url: DicomWebUrl, client: Any) -> str:
    """The study's one series of modality SM (slide microscopy); refused when it has none or several."""
    assert url.study is not None
    study = url.study
    answers = _retrying(url, f"the series of study {study}", lambda: client.search_for_series(study))
    series = sorted(
        str(a["0020000E"]["Value"][0]) for a in answers if "SM" in (a.get("00080060", {}).get("Value") or [])
    )
    if len(series) != 1:
        found = f"{len(series)} slide microscopy (SM) series" + (f": {', '.join(series)}" if series else "")
        raise InputError(f"{url}: study {study} has {found}; name one with &series=UID")
    return series[0]


def _not_a_wsi(url: DicomWebUrl, client: Any, series: str) -> str:
    """Why the series has no WSI instance to fetch: it is not there, or holds other kinds."""
    from pydicom.uid import UID

    assert url.study is not None
    study = url.study
    answers = _retrying(
        url,
        f"the instances of series {series}",
        lambda: client.search_for_instances(study, series, fields=["SOPClassUID"]),
    )
    if not answers:
        return f"{url}: no series {series} in study {study} on {url.host}"
    classes = sorted({UID(a.get("00080016", {}).get("Value", ["?"])[0]).name for a in answers})
    return (
        f"{url}: series {series} is not a whole-slide image: it holds {len(answers)} instance(s) of "
        f"{', '.join(classes)}, none of VL Whole Slide Microscopy Image Storage"
    )


def _download(http: Any, target: str, path: Path) -> str:
    """GET one instance (``application/dicom``, its stored transfer syntax) into ``path``;
    returns the sha256 of the bytes written. A response cut short raises :class:`_Lost`."""
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    with http.get(target, headers={"Accept": accept}, stream=True, timeout=TIMEOUT) as response:
        response.raise_for_status()
        chunks = response.iter_content(_CHUNK)
        media = response.headers.get("Content-Type", "")
        boundary = re.search(r'boundary="?([^";]+)"?', media)
        digest = hashlib.sha256()
        with path.open("wb") as out:
            parts = _parts(chunks, boundary[1].encode()) if boundary else chunks
            for data in parts:
                digest.update(data)
                out.write(data)
    if path.stat().st_size < 132:
        raise InputError(f"{target}: the server sent no DICOM file ({path.stat().st_size} bytes)")
    return digest.hexdigest()


def _parts(chunks: Iterator[bytes], boundary: bytes) -> Iterator[bytes]:
    """The body of the first (only) part of a ``multipart/related`` stream, piece by piece;
    :class:`_Lost` when the stream ends before the part does."""
    opening, closing = b"--" + boundary, b"\r\n--" + boundary
    buffer = b""
    for chunk in chunks:  # the part's header
        buffer += chunk
        start = buffer.find(opening)
        end = buffer.find(b"\r\n\r\n", start) if start >= 0 else -1
        if end >= 0:
            buffer = buffer[end + 4 :]
            break
    else:
        raise _Lost("no part before the connection closed")
    received = 0
    for chunk in itertools.chain([b""], chunks):
        buffer += chunk
        at = buffer.find(closing)
        if at >= 0:
            yield buffer[:at]
            return
        keep = len(closing)
        if len(buffer) > keep:
            received += len(buffer) - keep
            yield buffer[:-keep]
            buffer = buffer[-keep:]
    raise _Lost(f"after {received:,} bytes of the instance")


# -- storing a series ---------------------------------------------------------------------------
@dataclass
class Stored:
    """One instance sent by STOW-RS: ``stored`` or ``refused`` (and the server's reason)."""

    uid: str
    file: str
    status: str
    reason: str = ""


@dataclass
class StowReport:
    """What the server stored and refused, instance by instance."""

    url: str
    instances: list[Stored] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(i.status == "stored" for i in self.instances)

    @property
    def stored(self) -> list[Stored]:
        return [i for i in self.instances if i.status == "stored"]

    def lines(self) -> list[str]:
        """One line per instance, then the count."""
        out = [f"{i.status} {i.uid}" + (f": {i.reason}" if i.reason else "") for i in self.instances]
        return [*out, f"{len(self.stored)} of {len(self.instances)} instances stored on {self.url}"]


class StowError(WsistoreError):
    """Some instances were not stored; ``report`` says which."""

    def __init__(self, report: StowReport) -> None:
        missing = len(report.instances) - len(report.stored)
        super().__init__(
            f"{missing} of {len(report.instances)} instances were not stored on {report.url} (see the report above); "
            "run again to send the series again: its instances keep their UIDs"
        )
        self.report = report


class _Body:
    """A multipart/related body of one Part 10 file, read from disk as requests sends it."""

    def __init__(self, path: Path, boundary: str) -> None:
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self.length = len(head) + path.stat().st_size + len(tail)
        self.segments: list[Any] = [io.BytesIO(head), path.open("rb"), io.BytesIO(tail)]

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        out = b""
        while self.segments and (n < 0 or len(out) < n):
            piece = self.segments[0].read(-1 if n < 0 else n - len(out))
            if piece:
                out += piece
            else:
                self.segments.pop(0).close()
        return out

    def close(self) -> None:
        for segment in self.segments:
            segment.close()


def probe(url: DicomWebUrl) -> None:
    """Fail early (one line) when the server cannot be reached or refuses the credentials."""
    http = session()

    def search() -> None:
        response = http.get(f"{url.root}/studies", params={"limit": "1"}, timeout=TIMEOUT)
        response.raise_for_status()

    _retrying(url, "a search of its studies", search)


def store_series(text: str, files: list[Path]) -> StowReport:
    """Send ``files`` (Part 10 instances) to the DICOMweb root ``text`` by STOW-RS, one per
    request; the report says, for each, whether the server stored it and why not."""
    import pydicom

    url = DicomWebUrl.parse(text)
    http = session()
    report = StowReport(str(url))
    series: dict[tuple[str, str], list[Stored]] = {}
    for path in files:
        with _quiet():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[*_UIDS])
        uid = str(ds.SOPInstanceUID)

        def send(path: Path = path) -> Any:
            boundary = uuid.uuid4().hex
            body = _Body(path, boundary)
            headers = {
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
                "Content-Length": str(len(body)),
            }
            try:
                response = http.post(f"{url.root}/studies", data=body, headers=headers, timeout=TIMEOUT)
            finally:
                body.close()
            if response.status_code in _RETRIED_STATUS:
                response.raise_for_status()
            return response

        try:
            response = _retrying(url, f"storing {path.name}", send)
        except WsistoreError as exc:
            if "refused the credentials" in str(exc) or "cannot reach" in str(exc):
                raise
            report.instances.append(Stored(uid, path.name, "refused", first_line(exc)))
            continue
        report.instances.append(_stow_outcome(uid, path.name, response))
        series.setdefault((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)), []).append(report.instances[-1])
    for (study, uid), sent in series.items():
        _confirm(url, http, study, uid, sent)
    return report


#: What a STOW-RS report needs of each file.
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _confirm(url: DicomWebUrl, http: Any, study: str, series: str, sent: list[Stored]) -> None:
    """Search the series (QIDO-RS) for the instances the server said it stored: one it does
    not hold is refused (a server may answer success for an instance it filtered out)."""

    def search() -> Any:
        target = f"{url.root}/studies/{study}/series/{series}/instances"
        response = http.get(target, headers={"Accept": "application/dicom+json"}, timeout=TIMEOUT)
        response.raise_for_status()
        return response.json() if response.content else []

    held = {
        str(a.get("00080018", {}).get("Value", [""])[0]) for a in _retrying(url, f"a search of series {series}", search)
    }
    for stored in sent:
        if stored.status == "stored" and stored.uid not in held:
            stored.status = "refused"
            stored.reason = "the server answered success, but a search of the series does not find it"


def _stow_outcome(uid: str, name: str, response: Any) -> Stored:
    """Stored or refused, from a STOW-RS response (its ReferencedSOPSequence and FailedSOPSequence)."""
    if response.status_code in (401, 403):
        raise InputError(f"the server refused the credentials ({response.status_code}); {CREDENTIALS_HELP}")
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if isinstance(payload, list):
        payload = payload[0] if payload else {}
    failed = {
        str(item.get("00081155", {}).get("Value", [""])[0]): item.get("00081197", {}).get("Value", [None])[0]
        for item in payload.get("00081198", {}).get("Value", [])
    }
    referenced = {
        str(item.get("00081155", {}).get("Value", [""])[0]) for item in payload.get("00081199", {}).get("Value", [])
    }
    if uid not in failed and (uid in referenced or (response.status_code == 200 and not failed)):
        return Stored(uid, name, "stored")
    code = failed.get(uid)
    reason = (
        f"failure reason {code:#06x}" if isinstance(code, int) else f"HTTP {response.status_code} {response.reason}"
    )
    text = response.headers.get("Warning", "")
    return Stored(uid, name, "refused", reason + (f" ({text})" if text else ""))
