"""Generic tiled pyramidal BigTIFF, readable by OpenSlide, tiffslide, QuPath and libvips.

Levels are full-resolution pages in the main IFD chain, the reduced ones marked
``SubFileType = 1``: OpenSlide's generic-TIFF driver reads only the main chain (it sees
one level when the pyramid is in SubIFDs) and tiffslide reads both. Every level carries
resolution tags in pixels per centimetre from the source's microns per pixel; level 0
carries the ICC profile and an ImageDescription naming the generator and its weights'
sha256 and saying the image is super-resolved. No vendor (Aperio) description is faked.

Level 0 is encoded row by row into a spool in the work directory (each row journalled,
so ``--resume`` skips finished rows) and the file is assembled from the spooled tiles
at the end; tiles are JPEG (YCbCr 4:2:0, as tifffile writes them) or, lossless, deflate
with horizontal differencing.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from wsistore._version import __version__
from wsistore.archive.reader import Archive
from wsistore.outputs import ascii_text
from wsistore.restoration.levels import OutputLevel
from wsistore.restoration.spool import SpooledLevel0, cut_tiles

DEFAULT_JPEG_QUALITY = 90
#: libdeflate level 1: 3.5x faster than level 6 for 7% more bytes (measured on H&E tiles).
DEFLATE_LEVEL = 1
RESULT_NAME = "restored.tif"
_SUBSAMPLING = (2, 2)
#: The first line of level 0's ImageDescription: what marks a TIFF that restore wrote.
DESCRIPTION_TITLE = (
    "wsistore super-resolved image: level 0 was rebuilt from a reduced-resolution archive by a generator; "
    "lower levels are the archive's stored pyramid"
)


@dataclass(frozen=True)
class TileCodec:
    """How TIFF tiles are compressed: JPEG at ``quality`` or lossless deflate."""

    lossless: bool = False
    quality: int = DEFAULT_JPEG_QUALITY

    def encode(self, tile: np.ndarray) -> bytes:
        """Compress one full-size ``(t, t, 3)`` tile exactly as tifffile would."""
        if self.lossless:
            return bytes(tifffile.TIFF.COMPRESSORS[8](tifffile.TIFF.PREDICTORS[2](tile, axis=-2), level=DEFLATE_LEVEL))
        jpeg = tifffile.TIFF.COMPRESSORS[7]
        return bytes(jpeg(tile, level=self.quality, subsampling=_SUBSAMPLING, colorspace="RGB", outcolorspace="YCBCR"))

    def tiff_arguments(self) -> dict[str, Any]:
        if self.lossless:
            return {"compression": "zlib", "predictor": 2}
        return {"compression": "jpeg", "subsampling": _SUBSAMPLING}

    def describe(self) -> str:
        if self.lossless:
            return f"deflate level {DEFLATE_LEVEL} with horizontal predictor (lossless)"
        return f"JPEG quality {self.quality}, YCbCr 4:2:0"


class TiffPyramidWriter(SpooledLevel0[TileCodec]):
    """Writes one restore as a pyramidal BigTIFF inside a :class:`PartialOutput`."""

    #: Levels step by 4 (the archive's 4x, 16x ... levels) down to one tile.
    level_factor = 4

    def finish(self, archive: Archive, levels: list[OutputLevel], provenance: dict[str, Any]) -> str:
        """Write the pyramid from the spooled level 0 and the archive's LR levels; returns
        the file's name in the work directory."""
        result = self.output.work.path / RESULT_NAME
        md = archive.metadata
        icc = archive.icc_profile
        lengths = self.spooled_lengths(levels[0])
        with tifffile.TiffWriter(result, bigtiff=True) as tif, ThreadPoolExecutor(self.workers) as pool:
            for i, level in enumerate(levels):
                if level.archive_level is None:
                    tiles = self._spooled_tiles(level, lengths)
                else:
                    tiles = self._lr_tiles(archive, level, pool)
                extra: dict[str, Any] = {}
                if md.mpp:
                    extra["resolution"] = tuple(1e4 / (m * level.downsample) for m in md.mpp)
                    extra["resolutionunit"] = "CENTIMETER"
                if i == 0:
                    extra.update(description=self._description(provenance), software=f"wsistore {__version__}")
                    if icc:
                        extra["iccprofile"] = icc
                else:
                    extra["subfiletype"] = 1
                tif.write(
                    tiles,
                    shape=(level.height, level.width, 3),
                    dtype=np.uint8,
                    tile=(self.tile, self.tile),
                    photometric="rgb",
                    metadata=None,
                    **self.codec.tiff_arguments(),
                    **extra,
                )
        return RESULT_NAME

    def _description(self, provenance: dict[str, Any]) -> str:
        """The level-0 ImageDescription: plain ``key = value`` lines, first line says what it is;
        non-ASCII characters (of file names) escaped as ``\\xe9``, ``\\u2013``."""
        gen = provenance["generator"]
        lines = [
            DESCRIPTION_TITLE,
            "super_resolved = true",
            f"generator = {gen['name']}",
            f"architecture = {gen['architecture']}",
            f"weights_sha256 = {gen['weights_sha256'] or 'none (fixed interpolation)'}",
            *([f"adaptation_sha256 = {gen['adaptation_sha256']}"] if gen.get("adaptation_sha256") else []),
            f"scale = {provenance['scale']}",
            f"precision = {provenance['precision']} on {provenance['device']}",
            *([f"runtime = {provenance['runtime']}"] if provenance.get("runtime") else []),
            f"compute_tile_lr = {provenance['compute_tile_lr']}; halo_lr = {provenance['halo_lr']}",
            f"region = {','.join(str(v) for v in provenance['region'])}",
            f"source = {provenance['source']} (sha256 {provenance['source_sha256']})",
            f"archive = {provenance['archive']}",
            f"tiles = {self.codec.describe()}",
            f"wsistore = {provenance['wsistore_version']}",
        ]
        return ascii_text("\n".join(lines))  # TIFF strings are 7-bit ASCII; file names need not be

    def _lr_tiles(self, archive: Archive, level: OutputLevel, pool: ThreadPoolExecutor) -> Iterator[bytes]:
        x0, y0, x1, y1 = level.box
        assert level.archive_level is not None
        for ty in range(y0, y1, self.tile):
            row = archive.read_lr(level.archive_level, (x0, ty, x1, min(ty + self.tile, y1)))
            yield from pool.map(self.codec.encode, cut_tiles(row, self.tile))


def is_restored_tiff(path: Path) -> bool:
    """Whether ``path`` is a TIFF that restore wrote (level 0 described as super-resolved)."""
    if not path.is_file():
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            description = tif.pages.first.description
    except Exception:  # not a TIFF at all, or a damaged one: not ours to replace
        return False
    return description.startswith(DESCRIPTION_TITLE)
