"""A conservative tissue mask, computed from a low-resolution level of the slide.

The slide is read once, tile by tile, at the coarsest pyramid level no coarser than
:data:`READ_DOWNSAMPLE` (level 0 for single-level files), box-averaged to about 4 level-0
pixels per pixel (this removes sensor noise and JPEG ringing). Pixels are pooled into mask
cells of :data:`CELL` level-0 pixels keeping the mean colour, the darkest luminance and
the strongest saturation, so thin structures (fat membranes, faint tissue edges) are not
averaged away. The glass colour is the brightest common colour; a cell is tissue when it
is darker or more saturated than glass by a margin. The mask is then dilated: a chunk
is dropped as background only when no tissue lies within :data:`DILATE_CELLS` cells.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numba
import numpy as np
from scipy import ndimage

from wsistore.errors import InputError
from wsistore.readers import ArraySlide, SlideReader

T = TypeVar("T")
R = TypeVar("R")

#: Level-0 pixels per mask cell.
CELL = 32
#: Read the coarsest level whose downsample is at most this.
READ_DOWNSAMPLE = 8.0
#: A cell is tissue when its darkest pixel is this much darker than glass...
DARKER_BY = 18.0
#: ...or its most saturated pixel this much more saturated (max - min of RGB).
SATURATED_BY = 14.0
#: Dilation, in cells, before deciding which chunks hold tissue.
DILATE_CELLS = 4
_READ_TILE = 2048
#: The most mask cells a slide may have (~22 bytes each: 3 GB): 1.4e11 level-0 pixels, far
#: beyond any scanner; a header that declares more is refused before memory is spent.
MAX_CELLS = 2**27


@dataclass(frozen=True)
class TissueMask:
    """Tissue cells of a slide and the colour of its glass."""

    tissue: np.ndarray  # bool (rows, cols), one cell per CELL x CELL level-0 pixels
    cell: int
    background_rgb: tuple[int, int, int]
    level: int  # the slide level it was computed from

    @property
    def fill_value(self) -> int:
        """The archive's zarr fill value: the glass colour's mean, so stock Zarr readers
        show dropped chunks as grey glass; also what edge chunks are padded with."""
        return int(round(sum(self.background_rgb) / 3))

    @property
    def fraction(self) -> float:
        """Fraction of the slide area covered by tissue (undilated)."""
        return float(self.tissue.mean()) if self.tissue.size else 0.0

    def pixels(self, height: int, width: int) -> np.ndarray:
        """Bool ``(height, width)`` mask at level-0 pixel resolution (undilated)."""
        full = np.repeat(np.repeat(self.tissue, self.cell, axis=0), self.cell, axis=1)
        return full[:height, :width]

    def dilated(self, cells: int = DILATE_CELLS) -> np.ndarray:
        """The tissue cells grown by ``cells`` in every direction (a square structuring element)."""
        if cells <= 0 or not self.tissue.any():
            return self.tissue.copy()
        structure = np.ones((2 * cells + 1, 2 * cells + 1), dtype=bool)
        return ndimage.binary_dilation(self.tissue, structure=structure)

    def chunks_with_tissue(self, chunk_hr: int, grid: tuple[int, int]) -> np.ndarray:
        """Bool ``grid = (rows, cols)``: which chunks of ``chunk_hr`` level-0 pixels to keep."""
        dilated = self.dilated()
        keep = np.zeros(grid, dtype=bool)
        for r in range(grid[0]):
            r0, r1 = r * chunk_hr // self.cell, -(-(r + 1) * chunk_hr // self.cell)
            for c in range(grid[1]):
                c0, c1 = c * chunk_hr // self.cell, -(-(c + 1) * chunk_hr // self.cell)
                keep[r, c] = bool(dilated[r0:r1, c0:c1].any())
        return keep


def detect_tissue(slide: SlideReader, progress: Callable[[int], None] | None = None, workers: int = 1) -> TissueMask:
    """Compute the tissue mask of ``slide``, streaming one tile at a time (``workers``
    threads read and decode the next tiles; they are pooled in order)."""
    level = slide.get_best_level_for_downsample(READ_DOWNSAMPLE)
    downsample = slide.level_downsamples[level]
    width, height = slide.dimensions
    rows, cols = -(-height // CELL), -(-width // CELL)
    if rows * cols > MAX_CELLS:
        raise InputError(
            f"{slide.path.name} declares {width:,} x {height:,} pixels ({width * height / 1e9:,.0f} gigapixels): "
            f"too large for the tissue mask (at most {MAX_CELLS * CELL * CELL / 1e9:,.0f} gigapixels)"
        )
    # ~22 bytes per cell (0.2 GB for a 10-gigapixel slide): float32 sums are exact here,
    # a cell holds at most 32 x 32 pixels of 0-255
    mean = np.zeros((rows, cols, 3), dtype=np.float32)
    count = np.zeros((rows, cols), dtype=np.uint16)
    darkest = np.full((rows, cols), 255.0, dtype=np.float32)
    saturation = np.zeros((rows, cols), dtype=np.float32)

    # bring fine levels to about 4 level-0 pixels per pixel by a box mean, which also
    # removes sensor noise and JPEG ringing before darkest/most-saturated pooling
    factor = max(1, int(4 // downsample))
    lw, lh = slide.level_dimensions[level]
    boxes = [
        (tx, ty, min(_READ_TILE, lw - tx), min(_READ_TILE, lh - ty))
        for ty in range(0, lh, _READ_TILE)
        for tx in range(0, lw, _READ_TILE)
    ]

    def read(box: tuple[int, int, int, int]) -> np.ndarray:
        tx, ty, w, h = box
        return _box_mean(slide.read_region((round(tx * downsample), round(ty * downsample)), level, (w, h)), factor)

    step = downsample * factor
    for (tx, ty, w, h), tile in zip(boxes, _read_ahead(read, boxes, workers), strict=True):
        cy = np.minimum(((ty // factor + np.arange(tile.shape[0])) * step // CELL).astype(int), rows - 1)
        cx = np.minimum(((tx // factor + np.arange(tile.shape[1])) * step // CELL).astype(int), cols - 1)
        _pool(tile, cy, cx, mean, count, darkest, saturation)
        if progress:
            progress(w * h)

    mean /= np.maximum(count, 1)[:, :, None].astype(np.float32)
    background = _glass_colour(mean[count > 0])
    bg_luma = float(_luma(np.asarray(background, dtype=np.float32)))
    bg_sat = float(np.ptp(np.asarray(background, dtype=np.float32)))
    tissue = (count > 0) & ((bg_luma - darkest > DARKER_BY) | (saturation - bg_sat > SATURATED_BY))
    return TissueMask(tissue=tissue, cell=CELL, background_rgb=background, level=level)


def _read_ahead(read: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """``read(item)`` for each item, in order, with up to ``2 * workers`` reads running ahead
    on ``workers`` threads (memory stays bounded)."""
    if workers <= 1:
        yield from map(read, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(read, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@numba.njit(nogil=True, cache=True)
def _pool(
    tile: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    mean: np.ndarray,
    count: np.ndarray,
    darkest: np.ndarray,
    saturation: np.ndarray,
) -> None:
    """Pool a tile into its cells (``cy``/``cx``: the cell of each row/column, in runs): sum
    of colours, darkest luminance, highest saturation (max - min of RGB), all float32, in one
    pass: each cell's colours summed down its rows, then across its columns, in order (as
    ``numpy.add.reduceat`` along y, then x), then added to ``mean``."""
    h, w = tile.shape[0], tile.shape[1]
    column = np.empty((w, 3), dtype=np.float32)
    low = np.empty(w, dtype=np.float32)
    high = np.empty(w, dtype=np.float32)
    y0 = 0
    while y0 < h:
        y1 = y0 + 1
        while y1 < h and cy[y1] == cy[y0]:
            y1 += 1
        for y in range(y0, y1):
            for x in range(w):
                r, g, b = np.float32(tile[y, x, 0]), np.float32(tile[y, x, 1]), np.float32(tile[y, x, 2])
                luma = r * np.float32(0.299) + g * np.float32(0.587) + b * np.float32(0.114)
                sat = max(max(r, g), b) - min(min(r, g), b)
                if y == y0:
                    column[x, 0], column[x, 1], column[x, 2] = r, g, b
                    low[x], high[x] = luma, sat
                else:
                    column[x, 0] += r
                    column[x, 1] += g
                    column[x, 2] += b
                    low[x] = min(low[x], luma)
                    high[x] = max(high[x], sat)
        row = cy[y0]
        x0 = 0
        while x0 < w:
            x1 = x0 + 1
            while x1 < w and cx[x1] == cx[x0]:
                x1 += 1
            col = cx[x0]
            s0, s1, s2, lo, hi = column[x0, 0], column[x0, 1], column[x0, 2], low[x0], high[x0]
            for x in range(x0 + 1, x1):
                s0 += column[x, 0]
                s1 += column[x, 1]
                s2 += column[x, 2]
                lo = min(lo, low[x])
                hi = max(hi, high[x])
            mean[row, col, 0] += s0
            mean[row, col, 1] += s1
            mean[row, col, 2] += s2
            count[row, col] += np.uint16((y1 - y0) * (x1 - x0))
            darkest[row, col] = min(darkest[row, col], lo)
            saturation[row, col] = max(saturation[row, col], hi)
            x0 = x1
        y0 = y1


def _box_mean(tile: np.ndarray, factor: int) -> np.ndarray:
    """float32 mean over ``factor x factor`` blocks (edges replicated to a whole block); the
    tile itself (uint8, pooled as float32) for ``factor`` 1."""
    if factor == 1:
        return tile  # uint8: pooled as float32 values
    h, w = -(-tile.shape[0] // factor) * factor, -(-tile.shape[1] // factor) * factor
    if (h, w) != tile.shape[:2]:
        tile = np.pad(tile, ((0, h - tile.shape[0]), (0, w - tile.shape[1]), (0, 0)), mode="edge")
    blocks = tile.reshape(h // factor, factor, w // factor, factor, 3).astype(np.float32)
    return blocks.mean(axis=(1, 3))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _glass_colour(colours: np.ndarray) -> tuple[int, int, int]:
    """The most common bright colour: the mode of cell luminance above 180, or white."""
    if colours.size == 0:
        return (255, 255, 255)
    luma = _luma(colours)
    bright = luma > 180
    if bright.sum() < max(4, 0.02 * len(luma)):
        return (255, 255, 255)
    hist, edges = np.histogram(luma[bright], bins=np.arange(180, 257, 2))
    peak = edges[int(np.argmax(hist))]
    near = bright & (np.abs(luma - (peak + 1)) <= 3)
    colour = np.median(colours[near], axis=0)
    return (int(round(colour[0])), int(round(colour[1])), int(round(colour[2])))


def tissue_pixels(image: np.ndarray) -> np.ndarray:
    """Bool ``(y, x)`` tissue mask of an in-memory RGB image, at cell granularity
    (the same rule as for slides, undilated)."""
    return detect_tissue(ArraySlide(image)).pixels(*image.shape[:2])
