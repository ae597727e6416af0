"""The hybrid decision at equal slopes (format 1.8): each chunk takes its least-cost option among
the SR path and its HR chunk at several settings, one lambda for the slide, given or found for a
target rate."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from tests.archive.test_hybrid import SR_OPTIONS
from tests.data import SLIDE
from wsistore.archive.format import HR_ARRAY
from wsistore.archive.hybrid_choice import (
    AVIF_LR_SLOPES,
    SR,
    Option,
    best,
    choose,
    lambda_for_bytes,
    matched_lambda,
    total_bytes,
)
from wsistore.archive.reader import Archive
from wsistore.archive.writer import DEFAULT_HR_LAMBDA, ingest
from wsistore.codecs import parse_codec
from wsistore.errors import InputError

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
