"""Bad inputs campaign (:mod:`benchmarks.reliability.bad_inputs`): every input that cannot
be archived faithfully gives one clear line and the documented exit code, and leaves nothing
that looks like a finished archive; the ones that can be archived verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.reliability.bad_inputs import TILE, Case, Outcome, campaign, looks_complete, run_case


def _wrong(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.name}: exit {o.exit_code}, {o.why}: {o.message}" for o in outcomes if o.verdict == "wrong"]


def test_quick_campaign() -> None:
    """A subset (one truncated slide at a few offsets, every other kind of case) in about 40 s."""
    totals, outcomes = campaign(quick=True)
    assert totals["wrong"] == 0, _wrong(outcomes)
    assert totals["inputs"] >= 30 and totals["clear_errors"] >= 28
    assert totals["archived_correctly"] >= 1  # the greyscale TIFF, its channels recorded
    groups = {o.group for o in outcomes}
    assert {"truncated", "not an image", "channels", "corrupt", "huge", "output", "info/verify"} <= groups
    corrupt = [o for o in outcomes if o.group == "corrupt"]
    assert all("cannot decode region" in o.message for o in corrupt)


@pytest.mark.campaign
def test_full_campaign(tmp_path: Path) -> None:
    """Every case: real SVS (JPEG and JPEG 2000), NDPI and OME-TIFF each cut at 10 or more
    offsets, and the fluorescence NDPI files archived with their channel layout recorded."""
    totals, outcomes = campaign()
    (tmp_path / "bad-inputs.json").write_text(json.dumps(totals))
    assert totals["wrong"] == 0, _wrong(outcomes)
    truncated = [o for o in outcomes if o.group == "truncated"]
    for kind in ("svs skin", "svs kidney", "ndpi", "tif source.ome"):
        assert sum(o.name.startswith(kind) for o in truncated) >= 10, kind
    assert totals["inputs"] >= 75


def test_a_success_on_a_bad_input_counts_as_wrong(tmp_path: Path) -> None:
    """The campaign's own check: a real tile that archives, run as if it had to fail, is
    'wrong', and what it left is recognised as a complete archive."""
    out = tmp_path / "tile.zarr"
    case = Case("a good tile expected to fail", "self-check", ["ingest", str(TILE), "{OUT}", "--quiet"])
    outcome = run_case(case, out)
    assert outcome.exit_code == 0 and outcome.verdict == "wrong" and outcome.complete_output
    assert looks_complete(out) and not looks_complete(Path(str(out) + ".partial"))
