"""``wsistore verify``: check every shard and chunk against the manifest, and optionally
the archive against its source slide — what an archive manager runs before deleting
an original.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsistore.archive.format import ASSOCIATED_GROUP, HR_ARRAY, LOSS_ARRAY, ArchiveMetadata, recorded_file_sha256
from wsistore.archive.manifest import chunk_coords, chunk_id, read_shard_index, shard_chunks
from wsistore.archive.reader import Archive, ChunkState
from wsistore.archive.writer import coding_psnr, rms
from wsistore.codecs import codec_from_config
from wsistore.degradation import Downsample, loss_rms, read_window
from wsistore.dicomweb import fetched_series, is_dicomweb_url
from wsistore.errors import ArchiveError, first_line
from wsistore.geometry import Box
from wsistore.progress import Progress
from wsistore.readers import SlideReader, given_frame_order, independent_reader, open_slide

#: A lossy chunk matches its source when its PSNR against a fresh downsample is within
#: this of the PSNR recorded at ingest (the downsample is exact, so only the decoder
#: could move it).
PSNR_TOLERANCE_DB = 0.05
#: A recomputed loss map value (RMS, grey levels) matches the recorded one within this.
LOSS_TOLERANCE = 0.01
#: Background chunks: pixels further than this from the glass colour count as content.
CONTENT_DELTA = 40
#: Tissue chunks the second decoder checks (spread over the slide).
INDEPENDENT_CHUNKS = 16
#: The second decoder's fresh downsample matches a stored chunk when its PSNR against it is at
#: least the one recorded at ingest (at most :data:`LOSSLESS_CEILING_DB` for lossless chunks)
#: less this: two decoders of one lossy source (JPEG's IDCTs) differ by a grey level here and
#: there, a wrong image or placement costs tens of dB.
INDEPENDENT_TOLERANCE_DB = 1.0
LOSSLESS_CEILING_DB = 50.0


@dataclass
class VerifyReport:
    """Outcome of a verification; ``problems`` empty means the archive is sound."""

    archive: str
    shards: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    against: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    url: str | os.PathLike[str],
    against: str | os.PathLike[str] | None = None,
    reader: str = "auto",
    workers: int | None = None,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
    frame_order: str | None = None,
) -> VerifyReport:
    """Verify an archive (``storage_options``: a URL's filesystem options); raises
    ArchiveError only when it cannot be opened at all. With ``against``, the source is read
    as ingest read it (``reader``; a DICOM's frame order as the user named it at ingest, unless
    ``frame_order`` names one) and, where another decoder reads the format, by that one too."""
    archive = Archive.open(url, check=False, storage_options=storage_options)
    report = VerifyReport(archive=archive.location.url)
    workers = workers or os.cpu_count() or 1
    report.problems.extend(archive.metadata_problems())
    _check_arrays(archive, report)
    _decode_all(archive, report, workers, progress)
    loss = _check_loss_map(archive, report)
    if against is not None and is_dicomweb_url(against):  # fetched again, compared as a DICOM folder
        with fetched_series(os.fspath(against)) as fetched:
            _compare_source(
                archive, fetched.folder, reader, report, workers, progress, loss, frame_order, str(fetched.url)
            )
    elif against is not None:
        _compare_source(archive, Path(against), reader, report, workers, progress, loss, frame_order)
    return report


def _check_loss_map(archive: Archive, report: VerifyReport) -> np.ndarray | None:
    """The loss map (format 1.2): present, decodes, one cell per level-0 chunk, finite exactly
    where a chunk is stored; returns it when sound enough to compare with the source."""
    if LOSS_ARRAY not in archive.manifest.arrays:
        if archive.metadata.format_version not in ("1.0", "1.1"):
            report.problems.append(f"the loss map ({LOSS_ARRAY}) is missing from the manifest")
        return None
    try:
        loss = archive.loss_map()
    except Exception as exc:
        report.problems.append(f"the loss map does not decode ({first_line(exc)})")
        return None
    assert loss is not None
    base = archive.level(0)
    grid = (-(-base.height // base.chunk), -(-base.width // base.chunk))
    if loss.shape != grid:
        report.problems.append(f"the loss map is {loss.shape}, the chunk grid of level 0 is {grid}")
        return None
    bad = [
        (r, q)
        for r in range(grid[0])
        for q in range(grid[1])
        if bool(np.isfinite(loss[r, q]) and loss[r, q] >= 0) != (base.chunk_state(r, q) != ChunkState.BACKGROUND)
    ]
    if bad:
        shown = ", ".join(f"row {r} col {q}" for r, q in bad[:6])
        report.problems.append(
            f"the loss map is not a finite, non-negative value exactly on the stored chunks ({len(bad)} cells: {shown})"
        )
        return None
    return loss


def _check_arrays(archive: Archive, report: VerifyReport) -> None:
    """Every shard: present, same bytes, and its index lists exactly the manifest's chunks."""
    loc = archive.location
    for name, record in sorted(archive.manifest.arrays.items()):
        if not _opens(archive, name):
            report.problems.append(f"array {name} is missing or its zarr.json is unreadable")
        on_disk = {k for k in loc.walk_files(name) if k.startswith(f"{name}/c/")}
        for key, expected in sorted(record.shards.items()):
            path = f"{name}/{key}"
            on_disk.discard(path)
            report.shards += 1
            coords = tuple(int(p) for p in key.split("/")[1:])
            ids = [chunk_id(c) for c in shard_chunks(record, coords)]
            listed = [i for i in ids if i in record.chunks]
            if not loc.exists(path):
                report.problems.append(f"shard {path} is missing: {len(listed)} chunks lost ({_names(name, listed)})")
                continue
            data = loc.read_bytes(path)
            if len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
                report.problems.append(f"shard {path} has changed since ingest ({len(data)} bytes, sha256 differs)")
            try:
                index = read_shard_index(data, len(ids))
            except ArchiveError as exc:
                report.problems.append(f"shard {path} is damaged: {exc}; chunks lost: {_names(name, listed)}")
                continue
            for cid, entry in zip(ids, index):
                want = record.chunks.get(cid)
                if want is None and entry is not None:
                    report.problems.append(f"chunk {_name(name, cid)} is stored but not in the manifest")
                elif want is not None and entry is None:
                    report.problems.append(
                        f"chunk {_name(name, cid)} is lost (listed in the manifest, absent from {path})"
                    )
                elif want is not None and entry is not None:
                    offset, nbytes = entry
                    crc = int.from_bytes(data[offset + nbytes - 4 : offset + nbytes], "little")
                    if [nbytes, crc] != want:
                        report.problems.append(f"chunk {_name(name, cid)} differs from the manifest (size or checksum)")
        for extra in sorted(on_disk):
            report.problems.append(f"file {extra} is not in the manifest")


def _decode_all(archive: Archive, report: VerifyReport, workers: int, progress: bool) -> None:
    """Decode every stored chunk of every array (crc32c checked by zarr)."""
    jobs = []
    for name, record in sorted(archive.manifest.arrays.items()):
        if not _opens(archive, name):
            continue
        array = archive.group[name]
        for cid in record.chunks:
            coords = chunk_coords(cid)
            sel = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, record.chunk_shape))
            jobs.append((name, cid, array, sel))
    report.chunks = len(jobs)

    def decode(job: tuple[str, str, Any, tuple[slice, ...]]) -> str | None:
        name, cid, array, sel = job
        try:
            array[sel]
        except Exception as exc:
            return f"chunk {_name(name, cid)} does not decode ({first_line(exc)})"
        return None

    with ThreadPoolExecutor(workers) as pool, Progress(len(jobs), "verify", "chunk", progress) as bar:
        for problem in bar.over(pool.map(decode, jobs)):
            if problem:
                report.problems.append(problem)


def _compare_source(
    archive: Archive,
    source: Path,
    reader: str,
    report: VerifyReport,
    workers: int,
    progress: bool,
    loss: np.ndarray | None = None,
    frame_order: str | None = None,
    shown: str | None = None,
) -> None:
    """The source file is the one archived, every LR chunk matches a fresh downsample, every
    HR chunk (hybrid archives) the source's pixels, and every cell of the ``loss`` map (when
    given) a fresh computation from the source; both kinds of chunk within their codec's
    tolerance, as ingest recorded it. Then a second decoder checks a sample of tissue chunks
    (:func:`_compare_independent`). ``shown``: the source's name in the report, where ``source``
    is a copy of it (a series fetched from a DICOMweb URL)."""
    md = archive.metadata
    result: dict[str, Any] = {"source": shown or str(source)}
    report.against = result
    frame_order = frame_order or given_frame_order(md.source.properties)
    slide = open_slide(source, reader, frame_order)
    try:
        sha, file_sha256 = slide.fingerprint()
        result["sha256_matches"] = sha == md.source.sha256
        if not result["sha256_matches"]:
            report.problems.append(
                f"{shown or source.name} is not the archived source (sha256 differs{_differing(md, file_sha256)})"
            )
        if slide.dimensions != (md.width, md.height):
            report.problems.append(
                f"{shown or source.name} is {slide.dimensions}, the archive's source was {(md.width, md.height)}"
            )
            return
        base = archive.level(0)
        down = Downsample(md.scale)
        psnr = archive.manifest.arrays["0"].coding_psnr
        lossless = archive.codec.lossless
        bg = np.asarray(md.tissue.background_rgb, dtype=np.int16)
        hr = archive.hr
        hr_psnr = archive.manifest.arrays[HR_ARRAY].coding_psnr if hr is not None else {}
        hr_lossless = codec_from_config(md.hybrid["hr_codec"]).lossless if hr is not None and md.hybrid else False
        jobs = [(r, q) for r in range(-(-base.height // base.chunk)) for q in range(-(-base.width // base.chunk))]

        def compare(rq: tuple[int, int]) -> tuple[str | None, float | None]:
            r, q = rq
            box = base.chunk_box(r, q)
            window = _source_window(slide, down, box, md)
            fresh = down.reduce_window(window)
            state = base.chunk_state(r, q)
            if state == ChunkState.BACKGROUND:
                content = float((np.abs(fresh.astype(np.int16) - bg).max(axis=2) > CONTENT_DELTA).mean())
                return None, content
            stored = base.read(box)
            cid = chunk_id((0, r, q))
            if state == ChunkState.DERIVED:  # no LR stored (format 1.6): the HR chunk is checked below
                ok = True
            elif lossless or state == ChunkState.UNIFORM:
                ok = np.array_equal(stored, fresh)
            else:
                ok = abs(coding_psnr(fresh, stored) - psnr[cid]) <= PSNR_TOLERANCE_DB
            if not ok:
                return f"chunk 0 row {r} col {q} does not match the source within the codec's tolerance", None
            wx0, wy0 = down.hr_window(*box)[:2]
            s = md.scale
            hr_box = (s * box[0], s * box[1], min(s * box[2], md.width), min(s * box[3], md.height))
            source_hr = window[hr_box[1] - wy0 : hr_box[3] - wy0, hr_box[0] - wx0 : hr_box[2] - wx0]
            stored_hr = None
            if hr is not None and archive.is_hr(r, q):
                stored_hr = hr.read(hr_box)
                if hr_lossless or hr.chunk_state(r, q) == ChunkState.UNIFORM:
                    ok = np.array_equal(stored_hr, source_hr)
                else:
                    recorded = hr_psnr.get(cid)
                    ok = recorded is not None and abs(coding_psnr(source_hr, stored_hr) - recorded) <= PSNR_TOLERANCE_DB
                if not ok:
                    return (
                        f"chunk {HR_ARRAY} row {r} col {q} does not match the source within its codec's tolerance",
                        None,
                    )
            if loss is not None:
                # an HR chunk's cell is its own loss (format 1.5), else the bicubic baseline's
                fresh_loss = loss_rms(source_hr, stored, s) if stored_hr is None else rms(source_hr, stored_hr)
                if not abs(fresh_loss - float(loss[r, q])) <= LOSS_TOLERANCE:
                    return (
                        f"loss map row {r} col {q} is {float(loss[r, q]):.3f}, the source gives {fresh_loss:.3f}",
                        None,
                    )
            return None, None

        worst = 0.0
        compared = 0
        with ThreadPoolExecutor(workers) as pool, Progress(len(jobs), "compare", "chunk", progress) as bar:
            for problem, content in bar.over(pool.map(compare, jobs)):
                if problem:
                    report.problems.append(problem)
                if content is None:
                    compared += 1
                else:
                    worst = max(worst, content)
        result["chunks_compared"] = compared
        if hr is not None:
            result["hr_chunks_compared"] = len(archive.manifest.arrays[HR_ARRAY].chunks) + len(
                archive.manifest.arrays[HR_ARRAY].uniform
            )
        result["background_chunks"] = len(jobs) - compared
        result["background_max_content_fraction"] = worst
        if worst > 0.01:
            report.notes.append(
                f"a dropped background chunk has {worst:.1%} of pixels far from the glass colour "
                "(debris or faint tissue); use --keep-background at ingest to keep everything"
            )
        _compare_independent(archive, source, slide, report, frame_order)
    finally:
        slide.close()


def _compare_independent(
    archive: Archive, source: Path, slide: SlideReader, report: VerifyReport, frame_order: str | None
) -> None:
    """A second decoder, independent of the one ingest used (:func:`independent_reader`), reads
    up to :data:`INDEPENDENT_CHUNKS` stored tissue chunks' windows of the source; each fresh 4x
    downsample must match the stored LR within :data:`INDEPENDENT_TOLERANCE_DB` of the PSNR
    ingest recorded. A format only one decoder reads is said plainly."""
    assert report.against is not None
    result = report.against
    result["decoders"] = [slide.name]
    second, what = independent_reader(source, slide.name, frame_order)
    if second is None:
        result["independent"] = what
        report.notes.append(
            f"only one decoder checked the pixels: {slide.name} ({what}); a reading error shared by ingest "
            "and verify would go unseen"
        )
        return
    try:
        md, base = archive.metadata, archive.level(0)
        record = archive.manifest.arrays["0"]
        stored_ids = sorted(record.chunks, key=lambda cid: chunk_coords(cid)[1:])
        step = max(1, -(-len(stored_ids) // INDEPENDENT_CHUNKS))
        sample = stored_ids[::step][:INDEPENDENT_CHUNKS]
        down = Downsample(md.scale)
        worst = float("inf")
        for cid in sample:
            _, r, q = chunk_coords(cid)
            box = base.chunk_box(r, q)
            found = coding_psnr(down.reduce_window(_source_window(second, down, box, md)), base.read(box))
            recorded = min(record.coding_psnr.get(cid, LOSSLESS_CEILING_DB), LOSSLESS_CEILING_DB)
            worst = min(worst, found - recorded)
            if found < recorded - INDEPENDENT_TOLERANCE_DB:
                report.problems.append(
                    f"chunk 0 row {r} col {q}: {second.name}'s reading of the source gives {found:.1f} dB against "
                    f"the stored chunk, ingest ({slide.name}) recorded {recorded:.1f} dB: the archive may hold "
                    "the wrong image or misplaced tiles"
                )
        result["decoders"].append(second.name)
        result["independent_chunks"] = len(sample)
        result["independent_worst_db"] = None if not sample else round(worst, 3)
    finally:
        second.close()


def _source_window(slide: SlideReader, down: Downsample, box: Box, md: ArchiveMetadata) -> np.ndarray:
    """The source pixels that level-0 ``box``'s fresh downsample reads (its window, extended past
    the slide's border as ingest does)."""
    return read_window(
        lambda b: slide.read_region((b[0], b[1]), 0, (b[2] - b[0], b[3] - b[1])),
        down.hr_window(*box),
        md.width,
        md.height,
    )


def _differing(md: ArchiveMetadata, file_sha256: dict[str, str]) -> str:
    """Which of a multi-file source's files differ from those archived (their sha256s are in
    the source's properties, ``wsistore.source-sha256[NAME]``), as ``: a.dcm, b.dcm``."""
    recorded = recorded_file_sha256(md.source.properties)
    if not recorded:
        return ""
    names = sorted(n for n in recorded.keys() | file_sha256.keys() if recorded.get(n) != file_sha256.get(n))
    return f": {', '.join(names)}" if names else ""


def _opens(archive: Archive, name: str) -> bool:
    """Whether zarr opens ``name`` as an array (its zarr.json present and readable)."""
    try:
        return name in archive.group and hasattr(archive.group[name], "shape")
    except Exception:
        return False


def _name(array: str, cid: str) -> str:
    parts = cid.split(".")
    if len(parts) == 3 and not array.startswith(ASSOCIATED_GROUP):
        return f"{array} row {parts[1]} col {parts[2]}"
    return f"{array} [{cid}]"


def _names(array: str, ids: list[str], limit: int = 6) -> str:
    shown = ", ".join(_name(array, i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
