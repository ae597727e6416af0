"""Which image of a file is the slide, and where each stored frame goes: the rules every reader
follows, in one place.

- **The main image.** A file may hold several images: a pyramid, and label, macro, overview or
  thumbnail pictures, sometimes several series or a thumbnail as its first page. The slide is
  the largest image that is not one of the named pictures (:func:`main_series`), whatever the
  page order: a macro larger than a small scan stays the macro.
- **Images kept elsewhere.** Olympus VSI keeps its image in companion ``.ets`` files beside the
  ``.vsi``, which holds only the overview; Zeiss CZI is a container no reader here decodes.
  Both are refused by name (:func:`refusal`) rather than archived as something else.
- **Frame order.** A tiled DICOM instance that states neither a dimension organisation nor
  per-frame positions leaves its frame order unsaid. Row by row (TILED_FULL) and column by
  column are the candidates; the seams between neighbouring frames are continuous only in the
  right one (:func:`decide_frame_order`). When the seams do not tell, the user must say.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

#: Series or page names of the pictures stored beside a slide's pyramid (lower case).
ASSOCIATED_NAMES = ("label", "macro", "thumbnail", "overview", "map")
#: The formats the readers decode, for the messages that refuse another.
SUPPORTED_FORMATS = (
    "Aperio SVS, Hamamatsu NDPI/VMS, Leica SCN, MIRAX, Philips TIFF, Ventana BIF, generic and OME-TIFF "
    "(OpenSlide, tiffslide), DICOM WSI (wsidicom), PNG/JPEG/BMP"
)
#: Frame orders of a tiled image: row by row (DICOM TILED_FULL) or column by column.
FrameOrder = Literal["row", "column"]
FRAME_ORDERS: tuple[FrameOrder, ...] = ("row", "column")
#: The seams of the right order are continuous: their mean step is at most this many times the
#: mean step between neighbouring pixels inside the frames ...
CONTINUOUS_SEAM = 2.5
#: ... and the other order's seams are at least this many times the right one's.
DECISIVE_RATIO = 3.0
#: Neighbouring frame pairs compared per candidate order (spread over the image).
SEAM_PAIRS = 48


def series_pixels(series: Any) -> int:
    """Pixels of a tifffile series' full-resolution image (its Y times X)."""
    dims = dict(zip(series.axes, series.shape, strict=False))
    return int(dims.get("Y", 0)) * int(dims.get("X", 0))


def main_series(series: Sequence[Any]) -> int:
    """Index of the slide among a TIFF file's tifffile series: the largest one not named as a
    label, macro, overview, thumbnail or map (the first of equals); 0 when all are named."""
    candidates = [i for i, s in enumerate(series) if str(s.name).strip().lower() not in ASSOCIATED_NAMES]
    if not candidates:
        return 0
    return max(candidates, key=lambda i: (series_pixels(series[i]), -i))


def refusal(path: Path) -> str | None:
    """Why ``path`` is a format whose image the readers cannot decode (one line), or None."""
    if path.suffix.lower() == ".vsi":
        companion = path.parent / f"_{path.stem}_"
        where = f"{companion.name}/stack*/*.ets" if companion.is_dir() else f"{companion.name}/ (missing here)"
        return (
            f"{path}: Olympus VSI keeps its image in companion .ets files ({where}), which no reader here decodes; "
            f"the .vsi itself holds only the overview, which is not the slide. Supported: {SUPPORTED_FORMATS}"
        )
    if path.is_file():
        with path.open("rb") as f:
            magic = f.read(10)
        if magic == b"ZISRAWFILE":
            return f"{path}: Zeiss CZI, which no reader here decodes. Supported: {SUPPORTED_FORMATS}"
    return None


@dataclass(frozen=True)
class FrameGrid:
    """The tiling of one image: frames of ``tile = (width, height)`` over ``size = (width,
    height)`` pixels (the last column and row of frames may pass the border)."""

    tile: tuple[int, int]
    size: tuple[int, int]

    @property
    def across(self) -> int:
        return -(-self.size[0] // self.tile[0])

    @property
    def down(self) -> int:
        return -(-self.size[1] // self.tile[1])

    @property
    def frames(self) -> int:
        return self.across * self.down

    def cell(self, frame: int, order: FrameOrder) -> tuple[int, int]:
        """``(row, col)`` of frame ``frame`` (0-based) stored in ``order``."""
        if order == "row":
            return divmod(frame, self.across)
        col, row = divmod(frame, self.down)
        return row, col

    def frame_at(self, row: int, col: int, order: FrameOrder) -> int:
        """The frame stored at ``(row, col)`` in ``order``."""
        return row * self.across + col if order == "row" else col * self.down + row

    def origin(self, frame: int, order: FrameOrder) -> tuple[int, int]:
        """``(x, y)`` of frame ``frame``'s top-left pixel."""
        row, col = self.cell(frame, order)
        return col * self.tile[0], row * self.tile[1]


@dataclass(frozen=True)
class FrameOrderDecision:
    """What the seams said: the order chosen (None: not decisive) and each order's seam cost
    (mean step across its seams over the mean step inside the frames, 1 is seamless)."""

    order: FrameOrder | None
    costs: dict[str, float]
    pairs: int

    def describe(self) -> str:
        """One phrase for the archive's record and the messages."""
        if not self.pairs:
            return "one row or column of frames: both orders place them alike"
        shown = ", ".join(f"{o} by {o} {self.costs[o]:.2f}" for o in FRAME_ORDERS)
        return f"seam steps over in-frame steps on {self.pairs} frame pairs: {shown}"


def decide_frame_order(grid: FrameGrid, read_frame: Callable[[int], np.ndarray]) -> FrameOrderDecision:
    """The frame order under which neighbouring frames join without seams.

    For each candidate order, up to :data:`SEAM_PAIRS` pairs of neighbouring cells (right and
    below, spread over the image, inside its pixel matrix) are compared: the mean absolute step
    between the two pixel lines that meet at the seam, over the mean step between neighbouring
    lines inside the two frames. The right order's cost is near 1; the wrong one cuts tissue at
    every seam. Decisive when the best cost is at most :data:`CONTINUOUS_SEAM` and the other is
    at least :data:`DECISIVE_RATIO` times it. A grid one frame wide or high has one order only.
    """
    if grid.across == 1 or grid.down == 1:
        return FrameOrderDecision("row", {"row": 1.0, "column": 1.0}, 0)
    cache: dict[int, np.ndarray] = {}

    def frame(index: int) -> np.ndarray:
        if index not in cache:
            cache[index] = np.asarray(read_frame(index), dtype=np.float32)
        return cache[index]

    costs: dict[str, float] = {}
    pairs = _seam_pairs(grid)
    for order in FRAME_ORDERS:
        seam = inner = 0.0
        for (r0, c0), (r1, c1) in pairs:
            a, b = frame(grid.frame_at(r0, c0, order)), frame(grid.frame_at(r1, c1, order))
            seam_step, inner_step = _steps(a, b, grid, (r0, c0), horizontal=c1 > c0)
            seam += seam_step
            inner += inner_step
        costs[order] = seam / max(inner, 1e-6)
    best = min(FRAME_ORDERS, key=lambda o: costs[o])
    other = costs["column" if best == "row" else "row"]
    decisive = costs[best] <= CONTINUOUS_SEAM and other >= DECISIVE_RATIO * max(costs[best], 1e-6)
    return FrameOrderDecision(best if decisive else None, costs, len(pairs))


def _seam_pairs(grid: FrameGrid) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Neighbouring cells (right and below) whose seam lies inside the pixel matrix, at most
    :data:`SEAM_PAIRS` per direction, evenly spread."""
    right = [((r, c), (r, c + 1)) for r in range(grid.down) for c in range(grid.across - 1)]
    below = [((r, c), (r + 1, c)) for r in range(grid.down - 1) for c in range(grid.across)]
    chosen = []
    for pairs in (right, below):
        step = max(1, math.ceil(len(pairs) / (SEAM_PAIRS // 2)))
        chosen += pairs[::step]
    return chosen


def _steps(
    a: np.ndarray, b: np.ndarray, grid: FrameGrid, cell: tuple[int, int], horizontal: bool
) -> tuple[float, float]:
    """Summed absolute steps across the seam between ``a`` and its right (or lower) neighbour
    ``b``, and between the neighbouring lines on either side inside them, over the seam's
    length inside the pixel matrix."""
    (tw, th), (width, height) = grid.tile, grid.size
    row, col = cell
    if horizontal:
        length = min(th, height - row * th)
        a_last, a_prev = a[:length, tw - 1], a[:length, tw - 2]
        b_first, b_next = b[:length, 0], b[:length, 1]
    else:
        length = min(tw, width - col * tw)
        a_last, a_prev = a[th - 1, :length], a[th - 2, :length]
        b_first, b_next = b[0, :length], b[1, :length]
    seam = float(np.abs(a_last - b_first).sum())
    inner = float(np.abs(a_last - a_prev).sum() + np.abs(b_next - b_first).sum()) / 2
    return seam, inner
