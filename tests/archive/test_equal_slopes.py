"""The hybrid decision at equal slopes (format 1.8): each chunk takes its least-cost option among
the SR path and its HR chunk at several settings, one lambda for the slide, given or found for a
target rate."""

from __future__ import annotations

import collections
import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest

from tests.archive.test_hybrid import SR_OPTIONS
from tests.data import SLIDE
from wsistore.archive.format import HR_ARRAY
from wsistore.archive.hybrid_choice import (
    AVIF_LR_SLOPES,
    PROBE_SPEED,
    SR,
    Option,
    best,
    budget_lambdas,
    choose,
    corrected,
    first_option,
    lambda_for_bytes,
    matched_lambda,
    probe_codec,
    rungs_of,
    settle,
    total_bytes,
    walk,
)
from wsistore.archive.reader import Archive
from wsistore.archive.writer import DEFAULT_HR_LAMBDA, ingest
from wsistore.codecs import parse_codec
from wsistore.errors import InputError
from wsistore.readers.registry import open_slide

#: Three chunks, each with its SR path and two HR settings: (SSE, bytes).
CHUNKS = {
    "a": [Option(SR, 9000, 100), Option("q20", 4000, 400), Option("q45", 1000, 900)],
    "b": [Option(SR, 2000, 100), Option("q20", 1900, 300), Option("q45", 500, 800)],
    "c": [Option(SR, 50000, 120), Option("q20", 6000, 500), Option("q45", 2500, 1100)],
}


def test_each_chunk_takes_its_least_cost_option() -> None:
    """Against the Lagrangian computed by hand: cost = SSE + lambda x 8 x bytes."""
    assert {k: o.path for k, o in choose(CHUNKS, 0.0).items()} == {"a": "q45", "b": "q45", "c": "q45"}
    # lambda 1: a: 9800 / 7200 / 8200 -> q20; b: 2800 / 4300 / 6900 -> sr; c: 50960 / 10000 / 11300 -> q20
    assert {k: o.path for k, o in choose(CHUNKS, 1.0).items()} == {"a": "q20", "b": SR, "c": "q20"}
    # lambda 10: a: 17000 / 36000 / 73000 -> sr; c: 59600 / 46000 / 90500 -> q20
    assert {k: o.path for k, o in choose(CHUNKS, 10.0).items()} == {"a": SR, "b": SR, "c": "q20"}
    assert best([Option(SR, 10, 0), Option("x", 10, 5)], 0.0).path == SR  # of equal cost, fewer bytes


def test_no_single_setting_costs_less_than_the_choice() -> None:
    """Every chunk at one setting (AVIF on the whole image, in the archive's chunks) is one of the
    combinations the choice weighs: at any lambda its cost is at least the choice's, so at the
    choice's rate it cannot have less SSE than it, nor fewer bytes at its SSE."""
    for lam in (0.0, 0.5, 1.0, 3.0, 10.0, 100.0):
        chosen = sum(o.cost(lam) for o in choose(CHUNKS, lam).values())
        for k in range(3):
            assert chosen <= sum(options[k].cost(lam) for options in CHUNKS.values())
        combos = itertools.product(*CHUNKS.values())
        assert chosen == min(sum(o.cost(lam) for o in combo) for combo in combos)


def test_lambda_for_a_byte_budget() -> None:
    for budget in (320, 1000, 1500, 2500, 2800):
        lam = lambda_for_bytes(CHUNKS, budget)
        assert total_bytes(CHUNKS, lam) <= budget
        assert total_bytes(CHUNKS, lam * 0.99) > budget or lam == 1e-3  # the least lambda within it
    assert total_bytes(CHUNKS, lambda_for_bytes(CHUNKS, 10)) == 320  # below the cheapest: the cheapest


def _predicted(factor: float) -> dict[str, list[Option]]:
    """:data:`CHUNKS` with each HR option a prediction ``factor`` times its SSE and bytes."""
    return {
        key: [o if o.path == SR else Option(o.path, o.sse * factor, round(o.nbytes * factor), False) for o in options]
        for key, options in CHUNKS.items()
    }


class Measured:
    """The real options of :data:`CHUNKS` for :func:`settle`, and every call's chunks."""

    def __init__(self) -> None:
        self.calls: list[set[str]] = []
        self.coded: list[tuple[str, str]] = []  # (chunk, setting) of every coding

    def __call__(self, pending: dict[str, Option]) -> dict[str, Option]:
        assert all(not o.measured for o in pending.values())
        self.calls.append(set(pending))
        self.coded += [(key, option.path) for key, option in pending.items()]
        return {key: next(o for o in CHUNKS[key] if o.path == option.path) for key, option in pending.items()}


def test_settle_codes_only_the_chosen_predictions_each_chunk_once() -> None:
    """Predictions 10 % above the real options choose at lambda 1 (by hand: a q20 7920 against SR
    9800, b SR 2800 against q20 4730, c q20 11000 against q45 12430); only a and c are coded, once,
    and the choice, on measured options only, is the one the real options make."""
    measured = Measured()
    lam, chosen = settle(_predicted(1.1), lambda _: (1.0,), measured)
    assert lam == 1.0 and measured.calls == [{"a", "c"}]
    assert chosen == choose(CHUNKS, 1.0) and all(o.measured for o in chosen.values())


def test_a_chunk_whose_coding_disappoints_keeps_its_sr_path() -> None:
    """A prediction far too good: the chunk is coded at that setting, which then costs more than
    its SR path: the SR path it is, and the chunk is not coded again at another setting."""
    chunks = {"d": [Option(SR, 5000, 100), Option("q20", 100, 200, False), Option("q45", 90, 250, False)]}
    real = {"q20": Option("q20", 6000, 300), "q45": Option("q45", 1000, 700)}
    calls = []

    def measure(pending: dict[str, Option]) -> dict[str, Option]:
        calls.append(pending)
        return {key: real[option.path] for key, option in pending.items()}

    _, chosen = settle(chunks, lambda _: (1.0,), measure)
    assert chosen == {"d": Option(SR, 5000, 100)} and len(calls) == 1 and calls[0]["d"].path == "q20"


def test_a_coding_corrects_its_chunks_other_predictions() -> None:
    """A chunk coded at q20 to 1.5x the predicted SSE and 0.8x the bytes: for a target rate its
    prediction at q45 is scaled by the same (by hand: 1500, 480); once per chunk it is dropped;
    measured options are kept as they are. A budget settles in two codings per chunk when the
    predictions are off by one factor per chunk, as the probe's ratio is off per slide."""
    options = [Option(SR, 5000, 100), Option("q20", 2000, 500, False), Option("q45", 1000, 600, False)]
    coding = Option("q20", 3000, 400)
    assert corrected(options, options[1], coding, once_per_chunk=False) == [
        options[0],
        Option("q45", 1500.0, 480, False),
        coding,
    ]
    assert corrected(options, options[1], coding, once_per_chunk=True) == [options[0], coding]
    # eight settings per chunk on smooth curves; each chunk's predictions off by its own factor
    real = {
        key: [Option(SR, 60000, 100)]
        + [
            Option(f"q{q}", scale * 40000 * math.exp(-q / 12), round(scale * 200 * math.exp(q / 15)))
            for q in range(5, 45, 5)
        ]
        for key, scale in (("a", 1.0), ("b", 1.5), ("c", 0.6))
    }
    factor = {"a": 0.7, "b": 1.25, "c": 1.4}
    coded: list[str] = []

    def measure(pending: dict[str, Option]) -> dict[str, Option]:
        coded.extend(pending)
        return {k: next(o for o in real[k] if o.path == p.path) for k, p in pending.items()}

    for budget in (900, 1500, 2500):
        coded.clear()
        predicted = {
            k: [
                o
                if o.path == SR
                else replace(o, sse=o.sse * factor[k], nbytes=round(o.nbytes * factor[k]), measured=False)
                for o in v
            ]
            for k, v in real.items()
        }
        _, chosen = settle(predicted, lambda o, b=budget: budget_lambdas(o, b), measure, once_per_chunk=False)
        assert sum(o.nbytes for o in chosen.values()) <= budget
        assert max(collections.Counter(coded).values()) <= 2, (budget, collections.Counter(coded))


def test_settle_for_a_byte_budget_meets_it_with_measured_bytes() -> None:
    """lambda found again after each round: the measured choice stays within the budget, whatever
    the predictions' error (here 30 % under and over). As lambda moves, a chunk may be coded at
    another setting too (not once per chunk), each at most once; the choice is then the one the
    real options make wherever every option it needs got measured."""
    for factor in (0.7, 1.3):
        for budget in (500, 1000, 1500, 2500):
            measured = Measured()
            lam, chosen = settle(
                _predicted(factor), lambda o, b=budget: budget_lambdas(o, b), measured, once_per_chunk=False
            )
            assert all(o.measured for o in chosen.values())
            # as a choice over the real options meets the budget: the same bytes
            assert sum(o.nbytes for o in chosen.values()) == total_bytes(CHUNKS, lambda_for_bytes(CHUNKS, budget))
            assert len(measured.coded) == len(set(measured.coded))


def test_the_walk_probes_the_rungs_around_the_cheapest() -> None:
    """Five settings, rungs q5, q20, q45 (the ends, and each setting at least 8 levels above the
    rung before it); their probes cost, at lambda 1 by hand, 11000, 8000, 12000. From the middle
    rung (q20) the lower rung costs more, so the walk tries the higher one, which costs more too:
    the three rungs probed, q10 and q25 predicted between them (log-linear in the level). At
    lambda 100 the lower rung is cheaper (110000 against 404000): down to it, not up; q25 has no
    probed neighbour above. Without a lambda (a target rate), every rung."""
    probes = {"q5": Option("q5", 10000, 125, False), "q20": Option("q20", 4000, 500, False)}
    probes["q45"] = Option("q45", 1000, 1375, False)
    ladder = [("q5", 5.0), ("q10", 10.0), ("q20", 20.0), ("q25", 25.0), ("q45", 45.0)]
    assert rungs_of(ladder) == [0, 2, 4] and rungs_of(ladder[:2]) == [0, 1] and rungs_of(ladder[:1]) == [0]
    assert rungs_of([(f"q{q}", float(q)) for q in range(4, 45, 2)]) == [0, 4, 8, 12, 16, 20]
    probed: list[str] = []

    def first(path: str) -> Option:
        probed.append(path)
        return probes[path]

    def log_linear(a: float, b: float, t: float) -> float:
        return math.exp((1 - t) * math.log(a) + t * math.log(b))

    q10 = Option("q10", log_linear(10000, 4000, 5 / 15), round(log_linear(125, 500, 5 / 15)), False)
    q25 = Option("q25", log_linear(4000, 1000, 5 / 25), round(log_linear(500, 1375, 5 / 25)), False)
    assert walk(ladder, first, 1.0) == [probes["q5"], q10, probes["q20"], q25, probes["q45"]]
    assert probed == ["q20", "q5", "q45"]
    probed.clear()
    assert walk(ladder, first, 100.0) == [probes["q5"], q10, probes["q20"]] and probed == ["q20", "q5"]
    assert [o.path for o in walk(ladder, probes.__getitem__, None)] == [path for path, _ in ladder]


def test_the_probe_predicts_avif_slower_than_its_speed() -> None:
    """AVIF at speed 6 is probed at the probe's speed, and the option is a prediction; AVIF at that
    speed, and other codecs, are coded as they are (measured)."""
    with open_slide(SLIDE) as slide:
        source = slide.read_region((1000, 1500), 0, (256, 256))
    slow = parse_codec("avif:level=30,speed=6")
    assert probe_codec(slow) == replace(slow, speed=PROBE_SPEED)
    option = first_option(source, "q30", slow)
    assert not option.measured and option.nbytes > 0 and option.sse > 0
    for codec in (parse_codec(f"avif:level=30,speed={PROBE_SPEED}"), parse_codec("jpegxl:distance=2")):
        assert probe_codec(codec) is None and first_option(source, "x", codec).measured


def test_lambda_matched_to_the_lr_quality() -> None:
    """The measured slopes at their AVIF qualities, log-linear between them, held beyond; a lower
    LR quality has a steeper slope; other LR codecs take the default quality's."""
    for quality, slope in AVIF_LR_SLOPES:
        assert matched_lambda(parse_codec("avif", quality)) == slope
    assert DEFAULT_HR_LAMBDA == matched_lambda(parse_codec("avif")) == 900
    assert matched_lambda(parse_codec("avif", 30)) == 2700 and matched_lambda(parse_codec("avif", 99)) == 300
    assert 900 < matched_lambda(parse_codec("avif", 70)) < 2700
    assert matched_lambda(parse_codec("jpegxl")) == DEFAULT_HR_LAMBDA


@pytest.mark.slow
def test_an_ingest_meets_its_target_rate_within_3_percent(tmp_path: Path) -> None:
    """The sample slide in 256 px HR chunks (108 of them), at two targets: level 0's stored bytes
    (LR of the SR chunks, HR chunks) come within 3 % below each; the HR chunks use several settings."""
    codecs = tuple(parse_codec(f"avif:level={q},speed=8") for q in (12, 30, 50))
    for target in (0.2, 0.4):
        options = replace(SR_OPTIONS, chunk=64, shard=512, mode="hybrid", hr_codecs=codecs, hr_target_bpp=target)
        out = tmp_path / f"t{target}.zarr"
        ingest(SLIDE, out, options)
        archive = Archive.open(out)
        md = archive.metadata
        stored = sum(n for n, _ in archive.manifest.arrays["0"].chunks.values())
        stored += sum(n for n, _ in archive.manifest.arrays[HR_ARRAY].chunks.values())
        bpp = 8 * stored / (md.width * md.height)
        assert 0.97 * target <= bpp <= target, (target, bpp)
        assert md.hybrid is not None and md.hybrid["target_bpp"] == target
        used = md.hybrid["options"]
        assert sum(used.values()) == md.tissue.chunks_written and sum(n > 0 for p, n in used.items() if p != SR) >= 2


def test_hr_settings_must_be_one_codec() -> None:
    with pytest.raises(InputError, match="one codec at several level values"):
        replace(
            SR_OPTIONS, mode="hybrid", hr_codecs=(parse_codec("avif:level=20"), parse_codec("avif:level=20,speed=2"))
        )
    with pytest.raises(InputError, match="one codec"):
        replace(SR_OPTIONS, mode="hybrid", hr_codecs=(parse_codec("avif:level=20"), parse_codec("jpegxl")))
