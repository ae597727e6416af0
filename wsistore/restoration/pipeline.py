"""``restore``: an archive -> a full-resolution pyramid on disk (BigTIFF or OME-Zarr).

Steps: open the archive (refusing incomplete or damaged ones) -> load the generator once
-> prepare ``OUT.partial`` (or resume it) -> stream level 0 band by band through Dask and
the generator, encoding rows while the next band is restored -> add the archive's LR
levels -> write the metadata -> rename into place.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from wsistore._version import __version__
from wsistore.archive.reader import Archive
from wsistore.errors import InputError
from wsistore.models.weights import LoadedGenerator
from wsistore.restoration.bands import iter_rows
from wsistore.restoration.engine import RestoreSpec, TileRestorer, level0_array, restorer_for
from wsistore.restoration.levels import Region, check_region, output_levels
from wsistore.restoration.output import RestoreOutput
from wsistore.restoration.runner import GeneratorRunner, default_model, resolve_device
from wsistore.restoration.tiff_writer import DEFAULT_JPEG_QUALITY, TiffPyramidWriter, TileCodec
from wsistore.restoration.zarr_writer import ZSTD_LEVEL, OmeZarrWriter

FORMATS = ("tiff", "zarr")
#: TIFF levels step by 4 (the archive's 4x, 16x ... levels) down to one tile.
TIFF_LEVEL_FACTOR = 4


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
    quality: int | None = None  # JPEG quality (TIFF)
    lossless: bool = False
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.tile < 128 or self.tile > 4096 or self.tile & (self.tile - 1):
            raise InputError(f"--tile must be a power of two from 128 to 4096, got {self.tile}")
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")
        if self.batch is not None and self.batch < 1:
            raise InputError(f"--batch must be at least 1, got {self.batch}")
        if self.quality is not None:
            if self.lossless:
                raise InputError("--quality and --lossless exclude each other")
            if self.format != "tiff":
                raise InputError("--quality applies to TIFF tiles; OME-Zarr output is always lossless (zstd)")
            if not 1 <= self.quality <= 100:
                raise InputError(f"--quality must be 1-100, got {self.quality}")
        if self.lossless and self.format != "tiff":
            raise InputError("--lossless applies to TIFF; OME-Zarr output is always lossless (zstd)")


@dataclass
class RestoreResult:
    """What a restore produced."""

    output: str
    width: int
    height: int
    levels: list[tuple[int, int]]
    generator: dict[str, Any]
    tiles_total: int
    tiles_background: int
    rows_resumed: int
    seconds: float

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.seconds if self.seconds else 0.0


def restore(
    archive: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: RestoreOptions | None = None,
    generator: LoadedGenerator | None = None,
) -> RestoreResult:
    """Restore ``archive`` (or ``options.region`` of it) to ``out``.

    ``generator`` replaces ``options.model`` with a generator already in memory.
    """
    options = options or RestoreOptions()
    start = time.perf_counter()
    opened = Archive.open(archive)
    if generator is None:
        model = options.model or default_model()
        spec = RestoreSpec(os.fspath(archive), opened.metadata.manifest_sha256, model, options.device, options.batch, options.compile)
        restorer = restorer_for(spec, opened)
    else:
        restorer = TileRestorer(opened, GeneratorRunner(generator, resolve_device(options.device), options.batch, options.compile))
    source = restorer.archive
    md = source.metadata
    region = check_region(options.region, md.width, md.height)
    factor = TIFF_LEVEL_FACTOR if options.format == "tiff" else 2
    levels = output_levels(source, region, factor, options.tile)
    codec = TileCodec(options.lossless, options.quality or DEFAULT_JPEG_QUALITY)
    provenance = restorer.provenance() | {"region": list(region), "wsistore_version": __version__}
    settings = {
        "format": options.format,
        "archive_manifest_sha256": md.manifest_sha256,
        "generator": restorer.generator.describe(),
        "precision": restorer.runner.precision,
        "device": restorer.runner.device.type,
        "compute_tile": restorer.grid.tile,
        "halo": restorer.grid.halo,
        "region": list(region),
        "tile": options.tile,
        "codec": codec.describe() if options.format == "tiff" else f"zstd level {ZSTD_LEVEL}",
    }
    output = RestoreOutput.prepare(out, settings, options.overwrite, options.resume)

    x, y, w, h = region
    level0 = level0_array(restorer)[y : y + h, x : x + w]
    g = restorer.grid
    tiles = g.tiles_in((x, y, x + w, y + h))
    background = sum(restorer.is_background(r, c) for r, c in tiles)
    threads = options.workers + restorer.runner.batch
    bar = tqdm(total=len(tiles), unit="tile", desc="restore", disable=not options.progress, leave=False)
    try:
        if options.format == "tiff":
            tiff = TiffPyramidWriter(output, codec, options.tile, options.workers)
            done = tiff.finished_rows()
            tiff.spool_rows(iter_rows(level0, options.tile, done, threads, bar.update))
            produced = tiff.assemble(source, levels, _description(provenance, codec))
        else:
            shard = -(-g.hr_tile // options.tile) * options.tile
            zarr_out = OmeZarrWriter(output, options.tile, shard)
            done = zarr_out.finished_rows()
            zarr_out.write_rows(levels[0], iter_rows(level0, zarr_out.row_height, done, threads, bar.update))
            produced = zarr_out.finish(source, levels, provenance)
    finally:
        bar.close()
        if generator is not None:
            restorer.runner.close()
    output.commit(produced)
    return RestoreResult(
        output=str(output.final),
        width=w,
        height=h,
        levels=[(lv.width, lv.height) for lv in levels],
        generator=restorer.generator.describe(),
        tiles_total=len(tiles),
        tiles_background=background,
        rows_resumed=len(done),
        seconds=time.perf_counter() - start,
    )


def _description(provenance: dict[str, Any], codec: TileCodec) -> str:
    """The level-0 ImageDescription: plain ``key = value`` lines, first line says what it is."""
    gen = provenance["generator"]
    lines = [
        "wsistore super-resolved image: level 0 was rebuilt from a reduced-resolution archive by a generator; "
        "lower levels are the archive's stored pyramid",
        "super_resolved = true",
        f"generator = {gen['name']}",
        f"architecture = {gen['architecture']}",
        f"weights_sha256 = {gen['weights_sha256'] or 'none (fixed interpolation)'}",
        f"scale = {provenance['scale']}",
        f"precision = {provenance['precision']} on {provenance['device']}",
        f"compute_tile_lr = {provenance['compute_tile_lr']}; halo_lr = {provenance['halo_lr']}",
        f"region = {','.join(str(v) for v in provenance['region'])}",
        f"source = {provenance['source']} (sha256 {provenance['source_sha256']})",
        f"archive = {provenance['archive']}",
        f"tiles = {codec.describe()}",
        f"wsistore = {provenance['wsistore_version']}",
    ]
    return "\n".join(lines)
