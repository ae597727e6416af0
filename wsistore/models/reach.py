"""Exact receptive fields by interval arithmetic, for networks that pool, interpolate or
join skip connections (where a sum of kernel radii is not exact).

A receptive field is walked backwards: the span ``(a, b)`` of positions a layer's output
needs becomes the span its input needs. Each rule is exact for one x2 step (and for the
torch interpolation conventions: half-pixel centres, ``align_corners=False``), so the
LR reach of a network is exact when the walk follows its real layer order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Span = tuple[int, int]


def conv(span: Span, radius: int) -> Span:
    """Stride-1 convolutions with this summed kernel radius."""
    return span[0] - radius, span[1] + radius


def pool2(span: Span) -> Span:
    """2x2 pooling with stride 2: coarse ``q`` reads fine ``2q`` and ``2q + 1``."""
    return 2 * span[0], 2 * span[1] + 1


def nearest2(span: Span) -> Span:
    """Nearest x2, pixel shuffle or a 2x2 stride-2 transposed conv: fine ``p`` reads coarse ``p // 2``."""
    return span[0] // 2, span[1] // 2


def bilinear2(span: Span) -> Span:
    """Bilinear x2 (half-pixel centres): fine ``2k`` reads ``k - 1, k``; ``2k + 1`` reads ``k, k + 1``."""
    return (span[0] - 1) // 2, (span[1] + 1) // 2


def bicubic(span: Span, scale: int) -> Span:
    """Bicubic x``scale`` (a = -0.75): fine ``p`` reads ``floor((p + 0.5) / scale - 0.5) - 1 .. + 2``."""
    return math.floor((span[0] + 0.5) / scale - 0.5) - 1, math.floor((span[1] + 0.5) / scale - 0.5) + 2


def hull(*spans: Span) -> Span:
    """Smallest span holding all of these (the inputs of a concatenation or a sum)."""
    return min(s[0] for s in spans), max(s[1] for s in spans)


def lr_receptive_field(walk: Callable[[Span], Span], scale: int, period: int = 1) -> int:
    """LR pixels on each side of an LR pixel that reach any of its ``scale x scale`` outputs.

    ``walk`` maps an HR output span to the LR span it reads. ``period`` (LR pixels) is how
    often the network's pooling grid repeats; every phase is checked and the worst kept.
    """
    reach = 0
    for c in range(period):
        lo, hi = walk((scale * c, scale * c + scale - 1))
        reach = max(reach, c - lo, hi - c)
    return reach
