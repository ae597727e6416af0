"""Build real-data test slides: pyramidal tiled TIFFs whose tissue is real H&E tiles
from ``../shared/data/tiles`` laid on glass, streamed tile by tile (never whole in memory).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from tests.data import TILES

GLASS = (238, 236, 240)


@lru_cache(maxsize=32)
def load_tile(name: str, downsample: int = 1) -> np.ndarray:
    """A real tile as RGB uint8, optionally reduced by ``downsample`` (box filter)."""
    image = Image.open(TILES / f"{name}.png").convert("RGB")
    if downsample > 1:
        image = image.resize((image.width // downsample, image.height // downsample), Image.BOX)
    return np.asarray(image)


@lru_cache(maxsize=1)
def _glass_tile() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (np.asarray(GLASS) + rng.integers(-2, 3, size=(509, 509, 3))).astype(np.uint8)


def glass(height: int, width: int, seed: int) -> np.ndarray:
    """Slide glass: a flat colour with a little sensor noise (a repeated noise tile)."""
    tile = _glass_tile()
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    offset = seed % tile.shape[0]
    return np.tile(np.roll(tile, offset, axis=0), reps)[:height, :width].copy()


def render(
    layout: Sequence[Sequence[str | None]], cell: int, downsample: int, y0: int, y1: int, width: int
) -> np.ndarray:
    """Rows ``y0:y1`` (at this level) of a mosaic: ``layout[i][j]`` names a tile or is glass."""
    c = cell // downsample
    strip = glass(y1 - y0, width, seed=y0 * 7 + downsample)
    for i in range(y0 // c, -(-y1 // c)):
        for j, name in enumerate(layout[i] if i < len(layout) else []):
            if name is None:
                continue
            tile = load_tile(name, downsample)[:c, :c]
            ty0, tx0 = i * c, j * c
            ys = slice(max(ty0, y0), min(ty0 + tile.shape[0], y1))
            xs = slice(tx0, min(tx0 + tile.shape[1], width))
            if ys.start < ys.stop and xs.start < xs.stop:
                strip[ys.start - y0 : ys.stop - y0, xs] = tile[ys.start - ty0 : ys.stop - ty0, : xs.stop - tx0]
    return strip


def write_mosaic_slide(
    path: Path,
    layout: Sequence[Sequence[str | None]],
    cell: int = 1024,
    size: tuple[int, int] | None = None,
    downsamples: Sequence[int] = (1, 4, 16),
    mpp: float | None = 0.25,
    icc: bytes | None = None,
    tile: int = 512,
) -> Path:
    """A pyramidal JPEG-tiled BigTIFF of the mosaic; returns ``path``."""
    width, height = size or (cell * max(len(r) for r in layout), cell * len(layout))
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k, d in enumerate(downsamples):
            w, h = -(-width // d), -(-height // d)
            extra: dict = {}
            if k == 0:
                if mpp:
                    extra.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
                if icc:
                    extra["iccprofile"] = icc
            else:
                extra["subfiletype"] = 1
            tif.write(
                _tiles(layout, cell, d, w, h, tile),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                metadata=None,
                **extra,
            )
    return path


def _tiles(
    layout: Sequence[Sequence[str | None]], cell: int, d: int, w: int, h: int, tile: int
) -> Iterator[np.ndarray]:
    for y0 in range(0, h, tile):
        strip = render(layout, cell, d, y0, min(y0 + tile, h), w)
        for x0 in range(0, w, tile):
            out = np.zeros((tile, tile, 3), np.uint8)
            part = strip[:, x0 : x0 + tile]
            out[: part.shape[0], : part.shape[1]] = part
            yield out
