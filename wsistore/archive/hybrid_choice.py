"""The hybrid decision: for each level-0 chunk, the option with the least ``SSE + lambda x bits``
among all of its options, with one lambda for the whole slide (equal slopes).

A chunk's options are its SR path (its LR chunk, restored by the better of the generator and
bicubic: the restorer choice; its bits the LR chunk's stored bytes) and its full-resolution
chunk coded at each of a few settings of the HR codec (its bits the HR chunk's stored bytes; the
LR chunk of an HR chunk is not stored, so its bits are saved). With two options this is the rule
of format 1.6 (HR iff ``SSE_sr - SSE_hr > lambda x (bits_hr - bits_lr)``); with several HR settings, mixing
the SR path with full-resolution chunks at one fixed setting no longer sits at two different
slopes of their rate-distortion curves. Storing every chunk at one setting is one of the
combinations, so the choice at its own rate is never worse (in SSE) than that.

``lambda`` is given, or matched to the slope of the LR's own rate-distortion curve at its
quality (:func:`matched_lambda`: a bit spent on full resolution must buy what a bit spent on the
LR would), or found by bisection over the chunks' measured options so that the chosen options'
bytes meet a target (:func:`lambda_for_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from wsistore.codecs import AvifCodec, ImageCodec

#: The SR path's name among a chunk's options.
SR = "sr"
#: Bisection bounds and steps of the lambda search (grey levels squared of SSE per bit).
LAMBDA_RANGE = (1e-3, 1e9)
SEARCH_STEPS = 80

#: The SR path's slope (grey levels squared of SSE per bit) at AVIF LR qualities, for the default
#: generator: -dSSE/dbits of restore's output between neighbouring LR qualities, measured on the
#: out-of-distribution tiles and the real slides of BENCHMARKS.md ("Equal slopes"), rounded to the
#: lambdas measured there. :func:`matched_lambda` interpolates log-linearly between them.
AVIF_LR_SLOPES = ((60, 2700.0), (75, 900.0), (85, 300.0))

Key = TypeVar("Key")


@dataclass(frozen=True)
class Option:
    """One way to store a chunk: ``path`` (:data:`SR`, or the HR codec setting), the SSE of what
    restore outputs for it against the source (grey levels squared, the chunk's pixels inside
    the slide, 3 channels), and the bytes it stores (crc32c included)."""

    path: str
    sse: float
    nbytes: int

    def cost(self, lam: float) -> float:
        """``SSE + lambda x bits`` (no bits cost nothing, whatever lambda, infinite included)."""
        return self.sse + (lam * 8 * self.nbytes if self.nbytes else 0.0)


def best(options: Sequence[Option], lam: float) -> Option:
    """The option of least cost at ``lam`` (of equal cost, the one storing fewer bytes, then the
    first: the SR path when it is listed first)."""
    return min(options, key=lambda o: (o.cost(lam), o.nbytes))


def choose(chunks: Mapping[Key, Sequence[Option]], lam: float) -> dict[Key, Option]:
    """Each chunk's option at ``lam``."""
    return {key: best(options, lam) for key, options in chunks.items()}


def total_bytes(chunks: Mapping[Key, Sequence[Option]], lam: float) -> int:
    """The bytes the chunks store when each takes its option at ``lam``."""
    return sum(option.nbytes for option in choose(chunks, lam).values())


def matched_lambda(codec: ImageCodec) -> float:
    """lambda at the slope of the SR path's curve at ``codec``'s quality: for AVIF, interpolated
    log-linearly in quality between :data:`AVIF_LR_SLOPES` (held at its ends); for other LR codecs,
    whose slopes were not measured, the AVIF default quality's."""
    qualities, slopes = zip(*AVIF_LR_SLOPES, strict=True)
    quality = getattr(codec, "level", 75) if isinstance(codec, AvifCodec) else 75
    return float(round(math.exp(np.interp(quality, qualities, np.log(slopes)))))


def lambda_for_bytes(chunks: Mapping[Key, Sequence[Option]], target: float) -> float:
    """The smallest lambda (of :data:`LAMBDA_RANGE`) whose choice stores at most ``target``
    bytes: the least distortion within the budget. The bytes fall as lambda grows, in steps (one
    chunk changing option), so the budget is met from below; a budget below the cheapest choice
    gives the largest lambda, one above the dearest the smallest."""
    if total_bytes(chunks, LAMBDA_RANGE[0]) <= target:
        return LAMBDA_RANGE[0]
    lo, hi = (math.log(v) for v in LAMBDA_RANGE)
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        if total_bytes(chunks, math.exp(mid)) <= target:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)
