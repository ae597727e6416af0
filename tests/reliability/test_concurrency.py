"""Processes racing on real data (benchmarks/reliability/concurrency.py): two restores
of one archive at once both succeed with identical pixels; two ingests (or restores) for
one output never both succeed, the loser says so in one line; a lock left by ``kill -9``
blocks nothing. The default run races each case once; the campaign (10 each) is slow."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.reliability import concurrency, faults
from tests.data import ROOT

SMALL_REGION = "0,0,1024,768"

HOLD = """
import sys, time
from wsistore.archive.partial import PartialOutput
from wsistore.archive.writer import INGEST_OUTPUT
PartialOutput.prepare(sys.argv[1], INGEST_OUTPUT, overwrite=False, resume=False)
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("races")


def test_two_restores_of_one_archive_both_succeed(work: Path) -> None:
    result = concurrency.restore_pairs(work, seed=1, runs=1, region=SMALL_REGION)
    assert result["mismatches"] == [], result


def test_two_ingests_for_one_output_never_both_succeed(work: Path) -> None:
    result = concurrency.same_output_races(faults.ingest_op(), work, seed=1, runs=1)
    assert result["mismatches"] == [], result


def test_a_held_lock_refuses_in_one_line_and_a_killed_holder_blocks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=faults.ENV, cwd=ROOT
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        op = faults.ingest_op()
        busy = faults.run(op.argv(out))
        assert busy.returncode == 4 and faults._one_line(busy), busy.stderr
        assert f"another ingest/restore is writing {out} (lock" in busy.stderr
        resume = faults.run(op.argv(out) + ["--resume"])
        assert resume.returncode == 4 and "another ingest/restore is writing" in resume.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the lock died with its holder: a fresh run goes through (it had recorded nothing to resume)
    fresh = faults.run(op.argv(out))
    assert fresh.returncode == 0, fresh.stderr
    assert faults.run(faults.wsistore("verify", str(out), "--quiet")).returncode == 0


@pytest.mark.campaign
def test_concurrency_campaign(tmp_path: Path) -> None:
    result = concurrency.campaign(seed=0, runs=10, work=tmp_path)
    print("\n" + json.dumps({k: v for k, v in result.items() if k != "cases"}))
    assert result["runs"] == 30 and result["mismatches"] == 0, json.dumps(result, indent=1)
