"""Bad output paths campaign (:mod:`benchmarks.reliability.paths`, issue 21): an output that
is an input (by any route), inside one or holding one is refused in one line with everything
kept; ``--overwrite`` replaces only the command's own kind; a killed ``--overwrite`` leaves
the old output or the complete new one; odd names work. The default run is the quick subset
with one kill per operation; the full campaign is marked ``campaign``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.reliability import paths


def _wrong(outcomes: list[paths.Outcome]) -> list[str]:
    return [f"{o.name}: {o.why} [{o.command}] exit {o.exit_code}: {o.stderr}" for o in outcomes if o.verdict == "wrong"]


def test_quick_campaign() -> None:
    """The subset: every group, the fast refusals, a few accepted runs and one kill of each
    operation."""
    totals, outcomes = paths.campaign(quick=True, kills=1, jobs=2)
    assert totals["wrong"] == 0 and totals["tracebacks"] == 0, _wrong(outcomes)
    assert totals["refused"] >= 18 and totals["accepted"] >= 8 and totals["kills"] == 2
    assert {o.group for o in outcomes} >= {
        "output is the input",
        "output inside or holding the input",
        "--overwrite onto something not ours",
        "existing output, no --overwrite",
        "--overwrite onto our own output",
        "OUT.partial in the way",
        "odd names",
        "bench --out",
        "train prepare OUT",
        "info --loss-map",
        "batch outputs",
        "kill -9 during --overwrite",
    }


@pytest.mark.campaign
def test_full_campaign(tmp_path: Path) -> None:
    """Every case, and 10 killed ``--overwrite`` runs of ingest and of restore."""
    totals, outcomes = paths.campaign(kills=10)
    (tmp_path / "paths.json").write_text(json.dumps(totals))
    assert totals["wrong"] == 0 and totals["tracebacks"] == 0, _wrong(outcomes)
    assert totals["cases"] >= 150 and totals["kills"] == 20
    assert totals["kills_ended_old"] + totals["kills_ended_new"] == 20


def test_the_judge_catches_a_wrong_result(tmp_path: Path) -> None:
    """The campaign's own check: a success where a refusal is expected, a refusal that
    changed a file it had to keep or left a new one, and an accepted run whose output is
    unsound are all 'wrong'."""
    slide = paths.put(paths.Fixtures(tmp_path / "fixtures"), "slide", "slide.svs")
    success = paths.Case("help, expected to be refused", "self-check", ["info", "--help"], setup=[slide])
    outcome = paths.run_case(success, tmp_path / "a")
    assert outcome.verdict == "wrong" and outcome.exit_code == 0 and "expected 2" in outcome.why

    refusal = paths.Case("info of a slide", "self-check", ["info", "slide.svs"], codes=(3,), setup=[slide])
    assert paths.run_case(refusal, tmp_path / "b").verdict == "refused"
    before = paths.snapshot(tmp_path / "b")
    (tmp_path / "b" / "slide.svs").write_bytes(b"gone")
    why = paths.judge(refusal, tmp_path / "b", before, paths.snapshot(tmp_path / "b"), 3, "", "wsistore: error: x")
    assert why.startswith("changed slide.svs"), why
    (tmp_path / "b" / "out.zarr").mkdir()
    before["slide.svs"] = paths.snapshot(tmp_path / "b")["slide.svs"]
    why = paths.judge(refusal, tmp_path / "b", before, paths.snapshot(tmp_path / "b"), 3, "", "wsistore: error: x")
    assert why.startswith("left out.zarr"), why

    unsound = paths.Case(
        "exit 0 but no archive", "self-check", ["info", "--help"], codes=(0,), check=paths.archive_ok("none.zarr")
    )
    outcome = paths.run_case(unsound, tmp_path / "c")
    assert outcome.verdict == "wrong" and "not a complete archive" in outcome.why
