"""Which levels a restore output holds, and where a region falls on each.

Level 0 is the super-resolved image; coarser levels are the archive's stored LR pyramid
(the antialiased 4x, 8x ... downsample of the original), never super-resolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsistore.archive.reader import Archive
from wsistore.errors import InputError
from wsistore.geometry import Box, Region


@dataclass(frozen=True)
class OutputLevel:
    """One level of an output pyramid."""

    #: archive pyramid level it is read from, or None for the super-resolved level 0
    archive_level: int | None
    downsample: int
    #: ``(x0, y0, x1, y1)`` in this level's pixels
    box: Box

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


def check_region(region: Region | None, width: int, height: int) -> Region:
    """The region (the whole slide when None), refused when it leaves the slide."""
    if region is None:
        return 0, 0, width, height
    x, y, w, h = region
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise InputError(f"region {x},{y},{w},{h} is not inside the slide ({width} x {height})")
    return region


def output_levels(archive: Archive, region: Region, factor: int, smallest: int) -> list[OutputLevel]:
    """Level 0 plus the archive levels whose downsample is a power of ``factor``, down to
    the first one that fits in ``smallest`` pixels."""
    x, y, w, h = region
    levels = [OutputLevel(None, 1, (x, y, x + w, y + h))]
    for index, info in enumerate(archive.levels):
        d = info.downsample
        if not _is_power(d, factor) or max(levels[-1].width, levels[-1].height) <= smallest:
            continue
        box = (x // d, y // d, min(math.ceil((x + w) / d), info.width), min(math.ceil((y + h) / d), info.height))
        levels.append(OutputLevel(index, d, box))
    return levels


def _is_power(value: int, base: int) -> bool:
    power = 1
    while power < value:
        power *= base
    return power == value
