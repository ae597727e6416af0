"""``restore``: an archive -> a full-resolution pyramid on disk (BigTIFF, OME-Zarr or DICOM).

Steps: open the archive (refusing incomplete or damaged ones) -> load the generator once
-> prepare ``OUT.partial`` (or resume it) -> stream level 0 band by band through Dask and
the generator, encoding rows while the next band is restored -> add the archive's LR
levels -> write the metadata -> rename into place.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wsistore._version import __version__
from wsistore.archive.partial import PartialOutput
from wsistore.archive.reader import Archive
from wsistore.dicomweb import DicomWebUrl, StowError, StowReport, is_dicomweb_url, probe, store_series
from wsistore.errors import InputError, WsistoreError, first_line
from wsistore.geometry import Region
from wsistore.models.weights import LoadedGenerator
from wsistore.outputs import OutputKind
from wsistore.progress import Progress
from wsistore.restoration.bands import iter_rows
from wsistore.restoration.dicom_writer import CODECS, JPEG2000_PSNR, DicomCodec, DicomWsiWriter, is_restored_dicom
from wsistore.restoration.engine import TileRestorer, level0_array, make_restorer
from wsistore.restoration.int8 import DEFAULT_PRECISION, PRECISIONS
from wsistore.restoration.levels import OutputLevel, check_region, output_levels
from wsistore.restoration.tiff_writer import DEFAULT_JPEG_QUALITY, TiffPyramidWriter, TileCodec, is_restored_tiff
from wsistore.restoration.zarr_writer import OmeZarrWriter, is_restored_zarr


class OutputWriter(Protocol):
    """What restore needs of an output format (see ``tiff_writer``, ``zarr_writer``)."""

    #: the output pyramid's levels step by this factor
    level_factor: int
    #: level 0 arrives in rows this many HR pixels high
    row_height: int

    def describe(self) -> str:
        """How tiles are encoded (part of the settings ``resume`` checks)."""

    def open(self, output: PartialOutput, level0: OutputLevel) -> set[int]:
        """Start, or resume, in ``output``'s work directory; returns the level-0 rows already done."""

    def write_rows(self, rows: Iterator[tuple[int, np.ndarray]]) -> None:
        """Write and journal level-0 rows as they arrive."""

    def finish(self, archive: Archive, levels: list[OutputLevel], provenance: dict[str, Any]) -> str:
        """Add the archive's LR levels and the metadata; returns the result's name in the work directory."""


#: What restore writes, and so all that ``--overwrite`` lets it replace.
RESTORE_OUTPUT = OutputKind(
    "restore",
    "a wsistore restore output (a TIFF, OME-Zarr or DICOM folder it wrote)",
    lambda p: is_restored_tiff(p) or is_restored_zarr(p) or is_restored_dicom(p),
)

#: Output format -> its writer, from the options and the HR compute tile side.
WRITERS: dict[str, Callable[[RestoreOptions, int], OutputWriter]] = {
    "tiff": lambda o, _: TiffPyramidWriter(o.tile, o.workers, TileCodec(o.lossless, o.quality or DEFAULT_JPEG_QUALITY)),
    "zarr": lambda o, compute_tile: OmeZarrWriter(o.tile, compute_tile),
    "dicom": lambda o, _: DicomWsiWriter(
        o.tile,
        o.workers,
        DicomCodec(o.codec or ("jpeg2000" if o.lossless else "jpeg"), o.quality or DEFAULT_JPEG_QUALITY, o.lossless),
    ),
}


@dataclass(frozen=True)
class RestoreOptions:
    """Settings of one restore; validated on construction."""

    model: str | None = None  # None: the best shipped weights, else bicubic
    device: str = "auto"
    batch: int | None = None  # CUDA batch (halved on out-of-memory); the CPU runs one tile at a time
    tile: int = 512  # output tile side (HR pixels)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    region: Region | None = None  # x, y, width, height in level-0 pixels
    format: str = "tiff"
    quality: int | None = None  # JPEG quality (TIFF, DICOM)
    lossless: bool = False
    codec: str | None = None  # DICOM frames: jpeg (default) or jpeg2000
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    compile: bool = False
    precision: str = DEFAULT_PRECISION  # auto (int8 on CPUs with VNNI, else fp32), fp32 or int8 (CPU, OpenVINO)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.format not in WRITERS:
            raise InputError(f"format must be one of {', '.join(WRITERS)}, got {self.format!r}")
        if self.tile < 128 or self.tile > 4096 or self.tile & (self.tile - 1):
            raise InputError(f"tile must be a power of two from 128 to 4096, got {self.tile}")
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if self.batch is not None and self.batch < 1:
            raise InputError(f"batch must be at least 1, got {self.batch}")
        if self.quality is not None:
            if self.lossless:
                raise InputError("a JPEG quality and lossless tiles exclude each other")
            if self.format == "zarr":
                raise InputError(
                    "a JPEG quality applies to TIFF and DICOM tiles; OME-Zarr output is always lossless (zstd)"
                )
            if self.codec == "jpeg2000":
                raise InputError(
                    f"a JPEG quality applies to JPEG frames; JPEG 2000 is lossy at {JPEG2000_PSNR} dB or lossless"
                )
            if not 1 <= self.quality <= 100:
                raise InputError(f"quality must be 1-100, got {self.quality}")
        if self.lossless and self.format == "zarr":
            raise InputError("lossless applies to TIFF and DICOM; OME-Zarr output is always lossless (zstd)")
        if self.codec is not None:
            if self.format != "dicom":
                raise InputError("codec applies to DICOM output (--format dicom)")
            if self.codec not in CODECS:
                raise InputError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
            if self.lossless and self.codec == "jpeg":
                raise InputError("JPEG baseline is lossy; lossless DICOM frames are JPEG 2000 (--codec jpeg2000)")


@dataclass
class RestoreResult:
    """What a restore produced."""

    output: str
    width: int
    height: int
    levels: list[tuple[int, int]]
    generator: dict[str, Any]
    precision: str  # fp32, bf16 (CUDA) or int8
    fallback: str | None  # why auto ran fp32 on the CPU (GeneratorRunner.fallback)
    tiles_total: int
    tiles_background: int
    rows_resumed: int
    seconds: float
    #: a DICOMweb output: what the server stored and refused
    stored: StowReport | None = None

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.seconds if self.seconds else 0.0


def restore(
    archive: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: RestoreOptions | None = None,
    generator: LoadedGenerator | None = None,
    storage_options: dict[str, Any] | None = None,
) -> RestoreResult:
    """Restore ``archive`` (or ``options.region`` of it) to ``out``, a local path, or (format
    dicom) a DICOMweb server's root ``dicomweb+http(s)://HOST/ROOT`` to send the series to.

    ``generator`` replaces ``options.model`` with a generator already in memory;
    ``storage_options`` configure the filesystem of an archive URL.
    """
    options = options or RestoreOptions()
    if is_dicomweb_url(out):
        return _restore_to_dicomweb(archive, os.fspath(out), options, generator, storage_options)
    start = time.perf_counter()
    model = generator or options.model
    opened = Archive.open(archive, storage_options=storage_options)
    restorer = make_restorer(opened, model, options.device, options.batch, options.compile, options.precision)
    source = restorer.archive
    md = source.metadata
    g = restorer.grid
    region = check_region(options.region, md.width, md.height)
    writer = WRITERS[options.format](options, g.hr_tile)
    levels = output_levels(source, region, writer.level_factor, options.tile)
    provenance = restorer.provenance() | {"region": list(region), "wsistore_version": __version__}
    settings = {
        "format": options.format,
        "archive_manifest_sha256": md.manifest_sha256,
        "generator": restorer.generator.describe(),
        "precision": restorer.runner.precision,
        "device": restorer.runner.device.type,
        "compute_tile": g.tile,
        "halo": g.halo,
        "region": list(region),
        "tile": options.tile,
        "codec": writer.describe(),
    }
    if "://" in os.fspath(out):
        raise InputError(f"restore writes local files; {os.fspath(out)} is a URL")
    inputs = [archive, *([options.model] if options.model and Path(options.model).exists() else [])]
    output = PartialOutput.prepare(out, RESTORE_OUTPUT, options.overwrite, options.resume, inputs=inputs)
    try:
        return _restore(restorer, output, settings, writer, levels, provenance, region, options, start)
    except OSError as exc:
        raise WsistoreError(
            f"cannot write {output.work.path}: {exc.strerror or first_line(exc)}; the partial output is kept, "
            "rerun with --resume once fixed"
        ) from exc
    finally:
        output.release()


def _restore_to_dicomweb(
    archive: str | os.PathLike[str],
    url: str,
    options: RestoreOptions,
    generator: LoadedGenerator | None,
    storage_options: dict[str, Any] | None,
) -> RestoreResult:
    """Restore as DICOM into a temporary folder and send the series to the DICOMweb server
    ``url`` by STOW-RS; :class:`StowError` (with the report) when any instance is not stored."""
    target = DicomWebUrl.parse(url)
    if target.study or target.series:
        raise InputError(f"{url}: a STOW-RS target is the server's DICOMweb root, without study or series")
    if options.format != "dicom":
        raise InputError("a DICOMweb output takes --format dicom")
    if options.resume or options.overwrite:
        raise InputError(
            "--resume and --overwrite apply to files; to a DICOMweb server the series is sent whole again, "
            "its instances keep their UIDs"
        )
    probe(target)  # before minutes of restoring: the server is there and takes the credentials
    with tempfile.TemporaryDirectory(prefix="wsistore-stow-") as folder:
        result = restore(archive, Path(folder) / "series.dicom", options, generator, storage_options)
        report = store_series(str(target), sorted(Path(result.output).glob("*.dcm")))
    result.output, result.stored = str(target), report
    if not report.ok:
        raise StowError(report)
    return result


def _restore(
    restorer: TileRestorer,
    output: PartialOutput,
    settings: dict[str, Any],
    writer: OutputWriter,
    levels: list[OutputLevel],
    provenance: dict[str, Any],
    region: Region,
    options: RestoreOptions,
    start: float,
) -> RestoreResult:
    source = restorer.archive
    g = restorer.grid
    output.start(settings)

    x, y, w, h = region
    level0 = level0_array(restorer)[y : y + h, x : x + w]
    tiles = g.tiles_in((x, y, x + w, y + h))
    background = sum(restorer.is_background(r, c) for r, c in tiles)
    threads = options.workers + restorer.runner.batch
    bar = Progress(len(tiles), "restore", "tile", options.progress)
    try:
        done = writer.open(output, levels[0])
        writer.write_rows(iter_rows(level0, writer.row_height, done, threads, bar.update))
        produced = writer.finish(source, levels, provenance)
    finally:
        bar.close()
        restorer.close()
    output.commit(produced)
    return RestoreResult(
        output=str(output.final.path),
        width=w,
        height=h,
        levels=[(lv.width, lv.height) for lv in levels],
        generator=restorer.generator.describe(),
        precision=restorer.runner.precision,
        fallback=restorer.runner.fallback,
        tiles_total=len(tiles),
        tiles_background=background,
        rows_resumed=len(done),
        seconds=time.perf_counter() - start,
    )
