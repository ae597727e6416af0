"""Which restorer rebuilds each level-0 chunk (format 1.7): the generator, or plain bicubic
interpolation where the generator restores the chunk worse.

An archive promises that its restored slide is never worse than plain interpolation of what
it stores. Ingest holds the source, so it measures, per tissue chunk, the SSE against the
source of what restore would output there by each restorer (:data:`RESTORER_RULE`), and
stores the choice in ``restorer/`` (:data:`~wsistore.archive.format.RESTORER_ARRAY`).

Measuring every chunk costs about a restore. On chunks with content one restorer usually wins
everywhere by a clear margin (on H&E the generator, on fluorescence far from its training data
bicubic), so the decision starts from a sample spread over them (:class:`ChoicePolicy`): when
every sampled chunk agrees by at least ``margin_db``, all of them take that restorer; otherwise
every chunk is measured and decided on its own. Near-flat chunks (glass kept by the tissue
mask's margin, the faintest tissue: the archive's loss map under ``flat_rms``) are where the two
restorers come close and either may win, so each of those is measured. Hybrid ingest measures
every chunk anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from wsistore.archive.format import BICUBIC, GENERATOR
from wsistore.errors import InputError

#: The per-chunk rule, as recorded in the archive.
RESTORER_RULE = (
    "bicubic iff SSE_bicubic < SSE_generator; SSE over the chunk's pixels inside the slide and its 3 channels, "
    "in grey levels squared, against the source, of what restore outputs there (the generator with the "
    "slide's adaptation, at restore's default precision, and bicubic, on the same compute tiles of level 0 "
    "as stored)"
)

Cell = tuple[int, int]


@dataclass(frozen=True)
class ChoicePolicy:
    """How many chunks decide a slide at once, and by how much they must agree."""

    #: chunks measured first, spread evenly over the tissue chunks in row-major order
    sample: int = 16
    #: every sampled chunk's gain (dB, generator over bicubic) beyond +-this: one restorer for all
    margin_db: float = 0.3
    #: chunks whose loss map (RMS of bicubic of the stored chunk against the source, grey levels)
    #: is under this are near-flat: each is measured
    flat_rms: float = 2.0

    def __post_init__(self) -> None:
        if self.sample < 1:
            raise InputError(f"the restorer choice samples at least one chunk, got {self.sample}")
        if not self.margin_db >= 0:
            raise InputError(f"the restorer choice margin must be at least 0 dB, got {self.margin_db}")
        if not self.flat_rms >= 0:
            raise InputError(f"the restorer choice's flat threshold must be at least 0, got {self.flat_rms}")

    def settings(self) -> dict[str, Any]:
        """These settings as JSON (what an interrupted ingest's journal must match)."""
        return asdict(self)


def gain_db(sse_generator: float, sse_bicubic: float) -> float:
    """How much closer to the source the generator is than bicubic, in dB (positive: the
    generator wins); 0 when both are exact."""
    if sse_generator == sse_bicubic:
        return 0.0
    if sse_generator == 0:
        return math.inf
    if sse_bicubic == 0:
        return -math.inf
    return 10 * math.log10(sse_bicubic / sse_generator)


def spread(cells: list[Cell], count: int) -> list[Cell]:
    """``count`` cells evenly spread over ``cells`` (all of them when there are no more)."""
    if len(cells) <= count:
        return list(cells)
    return [cells[int((i + 0.5) * len(cells) / count)] for i in range(count)]


def choose_restorers(
    cells: list[Cell],
    measure: Callable[[Iterable[Cell]], dict[Cell, tuple[float, float]]],
    policy: ChoicePolicy,
    flat: Collection[Cell] = (),
) -> tuple[set[Cell], dict[str, Any]]:
    """The cells (of the tissue ``cells``) to restore by bicubic, and the record of how they were
    chosen. ``measure(cells)`` returns each cell's ``(SSE_generator, SSE_bicubic)``; the ``flat``
    cells (near-flat: :attr:`ChoicePolicy.flat_rms`) are each measured, the others sampled."""
    ordered = sorted(cells)
    near_flat = [c for c in ordered if c in flat]
    content = [c for c in ordered if c not in flat]
    sample = spread(content, policy.sample)
    measured = measure([*sample, *near_flat])
    gains = [gain_db(*measured[c]) for c in sample]
    if gains and min(gains) >= policy.margin_db:
        how = f"chunks with content: the generator won all {len(sample)} sampled by at least {policy.margin_db} dB"
        bicubic = set()
    elif gains and max(gains) <= -policy.margin_db:
        how = f"chunks with content: bicubic won all {len(sample)} sampled by at least {policy.margin_db} dB"
        bicubic = set(content)
    else:
        measured |= measure([c for c in content if c not in measured])
        how = (
            "chunks with content: each measured (the sampled ones did not agree)"
            if content
            else "no chunk with content"
        )
        bicubic = {c for c in content if measured[c][1] < measured[c][0]}
    bicubic |= {c for c in near_flat if measured[c][1] < measured[c][0]}
    n = len(near_flat)
    how += f"; {n} near-flat chunk{'s' * (n != 1)} (loss under {policy.flat_rms:g} grey levels RMS) each measured"
    return bicubic, choice_record(how, ordered, bicubic, [gain_db(*v) for v in measured.values()], policy)


def choice_record(
    how: str, cells: list[Cell], bicubic: set[Cell], gains: list[float], policy: ChoicePolicy | None
) -> dict[str, Any]:
    """The metadata's ``restorers`` record: the rule, how it was applied, the chunks per
    restorer and the gains measured (dB, generator over bicubic)."""
    finite = sorted(g for g in gains if math.isfinite(g))
    return {
        "rule": RESTORER_RULE,
        "method": how,
        "policy": policy.settings() if policy is not None else None,
        "measured": len(gains),
        "chunks": {GENERATOR: len(cells) - len(bicubic), BICUBIC: len(bicubic)},
        "gain_db": {
            "min": round(finite[0], 3),
            "median": round(finite[len(finite) // 2], 3),
            "max": round(finite[-1], 3),
        }
        if finite
        else None,
    }
