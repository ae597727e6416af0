"""The canonical compute grid: fixed LR tiles on the archive's global grid.

The generator only ever sees windows of ``tile + 2 * halo`` LR pixels whose core starts
at a multiple of ``tile``; the halo covers the generator's receptive field, and past the
slide border the window is extended by the archive's own half-sample symmetric rule.
Every request (a full restore, a region, an on-demand read) computes the same tiles, so
they give the same pixels, whatever the batch, worker count or output tile size.

Tile size (measured with ``python -m benchmarks.bench_restore --sweep``; BENCHMARKS.md):
generator work per useful pixel is ``((tile + 2 halo) / tile) ** 2``. On a GPU, where
batches of large convolutions keep the per-pixel speed flat (an assumption the sweep is
there to check on the GPU machine), the tile is the smallest power of two
from 256 that keeps that overhead at or below :data:`MAX_HALO_OVERHEAD` (1024 for
EDSR-32x64's 72-pixel halo: 1.30x instead of 2.44x at 256 and 1.64x at 512). On the
2-core CPU the raw per-pixel speed also varies little (EDSR-32x64: 0.17 HR MP/s at 64 and
128, 0.14 at 256), so larger tiles would still gain throughput, but an on-demand read pays
for whole tiles (EDSR-32x64: 11 s for a 256 tile, 48 s for a read across four), so CPU
tiles stay at 256, the archive's chunk size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsistore.geometry import Box

#: Halo rounding: windows stay multiples of 16 for tensor-core friendly shapes.
HALO_ALIGN = 8
#: Largest acceptable generator work per useful pixel on a GPU.
MAX_HALO_OVERHEAD = 1.35
GPU_TILES = (256, 512, 1024)
CPU_TILE = 256


def halo_for(receptive_field: int) -> int:
    """LR halo for a generator: its receptive field rounded up to :data:`HALO_ALIGN`."""
    return max(HALO_ALIGN, math.ceil(receptive_field / HALO_ALIGN) * HALO_ALIGN)


def halo_overhead(tile: int, halo: int) -> float:
    """Generator work per useful output pixel: ``((tile + 2 halo) / tile) ** 2``."""
    return ((tile + 2 * halo) / tile) ** 2


def choose_tile(halo: int, device_type: str) -> int:
    """The compute tile side in LR pixels for a halo on a device type (``cpu``/``cuda``)."""
    if device_type != "cuda":
        return CPU_TILE
    for tile in GPU_TILES:
        if halo_overhead(tile, halo) <= MAX_HALO_OVERHEAD:
            return tile
    return GPU_TILES[-1]


@dataclass(frozen=True)
class ComputeGrid:
    """Fixed LR compute tiles over a slide; HR boxes are cropped to the source size."""

    lr_width: int
    lr_height: int
    width: int
    height: int
    scale: int
    tile: int
    halo: int

    @property
    def rows(self) -> int:
        return math.ceil(self.lr_height / self.tile)

    @property
    def cols(self) -> int:
        return math.ceil(self.lr_width / self.tile)

    @property
    def window_side(self) -> int:
        """LR side of every generator input."""
        return self.tile + 2 * self.halo

    @property
    def hr_tile(self) -> int:
        """HR side of a full compute tile."""
        return self.tile * self.scale

    def core(self, row: int, col: int) -> Box:
        """LR box ``(x0, y0, x1, y1)`` the tile restores, clipped to the LR image."""
        t = self.tile
        return col * t, row * t, min((col + 1) * t, self.lr_width), min((row + 1) * t, self.lr_height)

    def window(self, row: int, col: int) -> Box:
        """LR box the generator reads: the full-size core plus the halo (may pass the border)."""
        t, h = self.tile, self.halo
        return col * t - h, row * t - h, (col + 1) * t + h, (row + 1) * t + h

    def hr_box(self, row: int, col: int) -> Box:
        """HR box ``(x0, y0, x1, y1)`` of the tile's output, cropped to the source size."""
        t = self.hr_tile
        return col * t, row * t, min((col + 1) * t, self.width), min((row + 1) * t, self.height)

    def hr_crop(self, row: int, col: int) -> Box:
        """Where the tile's output lies in the generator's HR output (window coordinates)."""
        x0, y0, x1, y1 = self.hr_box(row, col)
        off = self.halo * self.scale
        return off, off, off + x1 - x0, off + y1 - y0

    def tiles_in(self, box: Box) -> list[tuple[int, int]]:
        """``(row, col)`` of the tiles whose HR output meets an HR ``box`` (clipped to the image)."""
        x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], self.width), min(box[3], self.height)
        if x0 >= x1 or y0 >= y1:
            return []
        t = self.hr_tile
        return [(r, c) for r in range(y0 // t, math.ceil(y1 / t)) for c in range(x0 // t, math.ceil(x1 / t))]
