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

Coding a chunk at every HR setting at the codec's own speed would cost several codings per
chunk. Instead each setting is first *probed*: the chunk coded at the same setting at a fast
speed (:func:`probe_codec`), its SSE and bytes scaled to a prediction of the setting's own
(:func:`predicted`). Only the rungs of the ladder around the cheapest probe are probed, and the
settings between two probed rungs are predicted from them (:func:`walk`). :func:`settle` then
chooses with the predictions and codes, at the real setting, only the options it chooses, each
chunk once: a chunk whose HR option has been coded chooses between that coding and its SR path.
Every option a choice ends on is measured, so the archive's bytes and SSE are exact; only which
HR setting a chunk is weighed at rests on the prediction (BENCHMARKS.md, "Equal slopes": within
0.02 dB of coding every setting).

``lambda`` is given, or matched to the slope of the LR's own rate-distortion curve at its
quality (:func:`matched_lambda`: a bit spent on full resolution must buy what a bit spent on the
LR would), or found by bisection over the chunks' measured options so that the chosen options'
bytes meet a target (:func:`lambda_for_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import google_crc32c
import numba
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

#: The probe: an AVIF setting is predicted from the chunk coded at this speed (about a sixth of
#: speed 6's time on a 1024-px tissue chunk) ...
PROBE_SPEED = 9
#: ... with its bytes and SSE scaled by these: speed 6 over speed 9 on the same chunk, medians over
#: the tissue chunks of five real slides at levels 5-45 (0.84-1.07 and 0.67-0.98 per slide and
#: level; BENCHMARKS.md, "Equal slopes").
PROBE_BYTES_RATIO = 0.92
PROBE_SSE_RATIO = 0.88

#: The walk's rungs are settings at least this far apart in quality (AVIF levels; the default
#: ladder's every other quantizer step is 2 levels, so a rung every 4th setting): the settings
#: between two are predicted from them (BENCHMARKS.md, "Equal slopes").
RUNG_SPACING = 8.0

Key = TypeVar("Key")


@dataclass(frozen=True)
class Option:
    """One way to store a chunk: ``path`` (:data:`SR`, or the HR codec setting), the SSE of what
    restore outputs for it against the source (grey levels squared, the chunk's pixels inside
    the slide, 3 channels), and the bytes it stores (crc32c included)."""

    path: str
    sse: float
    nbytes: int
    #: False for a prediction from the probe (:func:`predicted`), which a choice never ends on
    measured: bool = True

    def cost(self, lam: float) -> float:
        """``SSE + lambda x bits`` (no bits cost nothing, whatever lambda, infinite included)."""
        return self.sse + (lam * 8 * self.nbytes if self.nbytes else 0.0)


def code_hr_chunk(source: np.ndarray, codec: ImageCodec) -> tuple[np.ndarray, bytes]:
    """A hybrid archive's HR chunk as stored: ``source`` (the chunk's pixels inside the image)
    encoded at its own size (format 1.8: an edge chunk is coded at its extent inside the image,
    as a codec on the whole image codes its last tiles; the codec's zarr decoder pads it);
    returns the decoded pixels and the chunk's bytes as stored (its crc32c appended, as the
    array's :class:`Crc32cCodec` appends it)."""
    encoded = codec.encode_image(np.ascontiguousarray(source))
    stored = encoded + google_crc32c.value(encoded).to_bytes(4, "little")
    return codec.decode_image(encoded), stored


def sse(a: np.ndarray, b: np.ndarray) -> int:
    """Sum of squared differences of two images of one shape, over every pixel and channel,
    exactly (in 64-bit integers, one pass: a dozen times faster than numpy's temporaries)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return int(_sse(np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()))


@numba.njit(nogil=True, cache=True)
def _sse(a: np.ndarray, b: np.ndarray) -> np.int64:
    total = np.int64(0)
    for i in range(a.size):
        d = np.int64(a[i]) - np.int64(b[i])
        total += d * d
    return total


def probe_codec(codec: ImageCodec) -> ImageCodec | None:
    """The fast setting that predicts ``codec``'s option: AVIF at :data:`PROBE_SPEED`; None
    where ``codec`` is measured directly (another codec, or AVIF at that speed or faster)."""
    if isinstance(codec, AvifCodec) and codec.speed < PROBE_SPEED:
        return replace(codec, speed=PROBE_SPEED)
    return None


def predicted(path: str, probe_sse: float, probe_nbytes: int) -> Option:
    """Setting ``path``'s option predicted from its probe's SSE and bytes."""
    return Option(path, probe_sse * PROBE_SSE_RATIO, round(probe_nbytes * PROBE_BYTES_RATIO), measured=False)


def first_option(source: np.ndarray, path: str, codec: ImageCodec) -> Option:
    """The option of ``source`` (a chunk's pixels) at HR setting ``path`` (``codec``) that a choice
    first weighs: predicted from its probe (:func:`probe_codec`) or, for a codec without one,
    measured."""
    probe = probe_codec(codec)
    decoded, coded = code_hr_chunk(source, probe or codec)
    error = sse(decoded, source)
    return predicted(path, error, len(coded)) if probe else Option(path, error, len(coded))


def quality(codec: ImageCodec) -> float:
    """An HR setting's place on the ladder :func:`walk` takes (one codec at several qualities):
    its quality value."""
    return float(codec.config().get(codec.quality_key or "", 0))


def walk(ladder: Sequence[tuple[str, float]], first: Callable[[str], Option], lam: float | None) -> list[Option]:
    """The HR options a chunk's choice at ``lam`` weighs, of the settings ``ladder`` (``(path,
    quality)`` in quality order; ``first(path)``: :func:`first_option`). The rungs that may be
    probed are :func:`rungs_of`. A setting's cost is convex along the ladder, so from the middle rung
    the walk goes to the lower rung while the cost falls, else to the higher one: two to four
    rungs probed. A setting between two probed rungs is predicted from them (:func:`between`),
    without a probe of its own. Without a lambda (a target rate, lambda still unknown) every
    rung is probed."""
    rungs = rungs_of(ladder)
    seen: dict[int, Option] = {}
    if lam is None:
        seen = {i: first(ladder[i][0]) for i in rungs}
    else:
        middle = len(rungs) // 2
        seen[rungs[middle]] = first(ladder[rungs[middle]][0])
        for step in (-1, 1):
            at = middle
            while 0 <= at + step < len(rungs):
                nxt, here = rungs[at + step], rungs[at]
                seen[nxt] = first(ladder[nxt][0])
                if seen[nxt].cost(lam) >= seen[here].cost(lam):
                    break
                at += step
            if at != middle:  # the cost fell this way: not the other
                break
    probed = sorted(seen)
    for low, high in zip(probed, probed[1:]):
        for i in range(low + 1, high):
            seen[i] = between(ladder[i], (ladder[low][1], seen[low]), (ladder[high][1], seen[high]))
    return [seen[i] for i in sorted(seen)]


def rungs_of(ladder: Sequence[tuple[str, float]]) -> list[int]:
    """The settings of ``ladder`` (``(path, quality)`` in quality order) that :func:`walk` may
    probe, by index: the first, each at least :data:`RUNG_SPACING` in quality above the rung
    before it, and the last."""
    rungs = [0]
    for i, (_, q) in enumerate(ladder[1:-1], start=1):
        if q - ladder[rungs[-1]][1] >= RUNG_SPACING:
            rungs.append(i)
    return [*rungs, len(ladder) - 1] if len(ladder) > 1 else rungs


def between(setting: tuple[str, float], low: tuple[float, Option], high: tuple[float, Option]) -> Option:
    """Setting ``(path, quality)``'s option predicted from its neighbours' ``(quality, option)``
    on the ladder: SSE and bytes log-linear in the quality between theirs."""
    (path, q), (q0, a), (q1, b) = setting, low, high
    t = (q - q0) / (q1 - q0)

    def geometric(x: float, y: float) -> float:
        return math.exp((1 - t) * math.log(max(x, 1.0)) + t * math.log(max(y, 1.0)))

    return Option(path, geometric(a.sse, b.sse), round(geometric(a.nbytes, b.nbytes)), measured=False)


def measure_options(
    source: np.ndarray, sse_sr: int, lr_bytes: int, codecs: Mapping[str, ImageCodec], lam: float | None
) -> list[Option]:
    """A chunk's options as a choice at ``lam`` first weighs them: its SR path (``sse_sr``,
    restore's SSE; ``lr_bytes``, its LR chunk's stored bytes) and the HR settings of ``codecs``
    (name -> codec, in quality order) that :func:`walk` weighs, each probed (:func:`first_option`)
    or predicted between two probed."""
    ladder = [(path, quality(codec)) for path, codec in codecs.items()]
    hr = walk(ladder, lambda path: first_option(source, path, codecs[path]), lam)
    return [Option(SR, sse_sr, lr_bytes), *hr]


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


def settle(
    chunks: Mapping[Key, Sequence[Option]],
    lambdas_for: Callable[[Mapping[Key, Sequence[Option]]], Sequence[float]],
    measure: Callable[[dict[Key, Option]], dict[Key, Option]],
    once_per_chunk: bool = True,
) -> tuple[float, dict[Key, Option]]:
    """Each chunk's option at one lambda, every chosen option measured. ``lambdas_for(options)``
    gives that lambda (a constant, or :func:`budget_lambdas`' first), then any other whose choice
    must rest on measured options too; ``measure`` codes the predictions these choose (chunk ->
    prediction, returns chunk -> measured option), which replace them; again, until no choice
    rests on a prediction. With ``once_per_chunk`` a measured option replaces every prediction of
    its chunk, which then weighs it against its SR path only: one coding per chunk at most, for a
    lambda known beforehand. Without, only its own prediction, and the chunk's other predictions
    are corrected by that coding's error (:func:`corrected`): as lambda moves with the measured
    bytes (a target rate), a chunk may be coded at another setting too, each at most once."""
    options = {key: list(listed) for key, listed in chunks.items()}
    while True:
        lambdas = lambdas_for(options)
        measured_any = False
        for lam in lambdas:
            pending = {key: option for key, option in choose(options, lam).items() if not option.measured}
            if not pending:
                continue
            measured_any = True
            for key, option in measure(pending).items():
                options[key] = corrected(options[key], pending[key], option, once_per_chunk)
        if not measured_any:
            return lambdas[0], choose(options, lambdas[0])


def corrected(options: Sequence[Option], prediction: Option, coding: Option, once_per_chunk: bool) -> list[Option]:
    """A chunk's ``options`` once its ``prediction`` is coded (``coding``): that coding in its
    place; with ``once_per_chunk`` its other predictions dropped, else each scaled by the coding's
    error (its SSE and bytes over the prediction's: the chunk's own probe ratio), so that the
    next choice weighs them as this chunk codes, not as the median slide does."""
    sse_ratio = coding.sse / prediction.sse if prediction.sse else 1.0
    bytes_ratio = coding.nbytes / prediction.nbytes if prediction.nbytes else 1.0
    kept = []
    for option in options:
        if option.measured:
            kept.append(option)
        elif not once_per_chunk and option.path != coding.path:
            kept.append(replace(option, sse=option.sse * sse_ratio, nbytes=round(option.nbytes * bytes_ratio)))
    return [*kept, coding]


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
    return budget_lambdas(chunks, target)[0]


def budget_lambdas(chunks: Mapping[Key, Sequence[Option]], target: float) -> tuple[float, ...]:
    """:func:`lambda_for_bytes`, then (where there is one) the lambda just below it, whose
    choice stores more than ``target`` bytes: the step that the budget stops. :func:`settle`
    measures both choices, so that neither a prediction too dear blocks the step nor one too
    cheap takes it."""
    if total_bytes(chunks, LAMBDA_RANGE[0]) <= target:
        return (LAMBDA_RANGE[0],)
    lo, hi = (math.log(v) for v in LAMBDA_RANGE)
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        if total_bytes(chunks, math.exp(mid)) <= target:
            hi = mid
        else:
            lo = mid
    return math.exp(hi), math.exp(lo)
