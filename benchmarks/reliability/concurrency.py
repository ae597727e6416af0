"""Processes racing on real data: two restores of one archive at once (both succeed, to
different outputs, with identical pixels), and two ingests (or two restores) racing for
the same output (exactly one succeeds; the other fails with one line, and the landed
output is the reference one and verifies).

Each race starts the second process after a random delay (from ``seed``) within the
first's running time, so some races meet mid-write (the lock on ``OUT.partial``
answers "another ingest/restore is writing OUT") and some meet after the landing
("already exists").

    python -m benchmarks.reliability.concurrency --runs 10 [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.reliability.faults import (
    ENV,
    RESTORE_REGION,
    ROOT,
    Operation,
    _one_line,
    _remove,
    ingest_op,
    partial_of,
    reference_archive,
    restore_op,
)


def _start(op: Operation, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(op.argv(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def _pair(op: Operation, a: Path, b: Path, delay: float) -> list[tuple[int, str]]:
    """Start ``op`` to ``a``, then after ``delay`` to ``b``; (exit code, stderr) of each."""
    first = _start(op, a)
    time.sleep(delay)
    second = _start(op, b)
    results = []
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        results.append((proc.returncode, err))
    return results


def _reference(op: Operation, work: Path) -> tuple[Path, float]:
    out = work / f"{op.name}-reference" / ("out.tif" if op.name == "restore" else "out")
    _remove(out.parent)
    out.parent.mkdir(parents=True)
    start = time.perf_counter()
    proc = _start(op, out)
    _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{op.name} reference failed: {err.strip()[-2000:]}")
    return out, time.perf_counter() - start


def restore_pairs(work: Path, seed: int, runs: int, region: str = RESTORE_REGION) -> dict[str, Any]:
    """Two restores of one archive at once, to different outputs: both succeed, same pixels."""
    op = restore_op(reference_archive(work / "source.zarr"), region)
    reference, seconds = _reference(op, work)
    rng = random.Random(f"{seed}-restore-pairs")
    mismatches: list[str] = []
    for i in range(runs):
        base = work / f"restore-pair-{i}"
        _remove(base)
        base.mkdir()
        a, b = base / "a.tif", base / "b.tif"
        delay = rng.uniform(0.0, 0.5 * seconds)
        (ra, ea), (rb, eb) = _pair(op, a, b, delay)
        label = f"restore pair {i} (+{delay:.2f} s)"
        if ra or rb:
            mismatches.append(f"{label}: exit {ra}/{rb}: {(ea or eb).strip()[-300:]}")
        else:
            for out in (a, b):
                diffs = op.compare(out, reference)
                if diffs:
                    mismatches.append(f"{label}: {out.name}: {'; '.join(diffs[:3])}")
        _remove(base)
    return {"case": "two restores of one archive", "runs": runs, "mismatches": mismatches}


def same_output_races(op: Operation, work: Path, seed: int, runs: int) -> dict[str, Any]:
    """Two runs of ``op`` racing for one output: exactly one succeeds, the other says why
    in one line, and what landed is the reference output."""
    reference, seconds = _reference(op, work)
    rng = random.Random(f"{seed}-{op.name}-races")
    mismatches: list[str] = []
    outcomes = {"busy": 0, "exists": 0}
    for i in range(runs):
        base = work / f"{op.name}-race-{i}"
        _remove(base)
        base.mkdir()
        out = base / reference.name
        delay = rng.uniform(0.0, seconds)
        results = _pair(op, out, out, delay)
        label = f"{op.name} race {i} (+{delay:.2f} s)"
        ok = [rc == 0 for rc, _ in results]
        if sum(ok) != 1:
            mismatches.append(f"{label}: {sum(ok)} of 2 succeeded: {[r[1].strip()[-200:] for r in results]}")
        else:
            rc, err = results[ok.index(False)]
            message = err.strip()
            fake = subprocess.CompletedProcess([], rc, "", err)
            if "another ingest/restore is writing" in message:
                outcomes["busy"] += 1
            elif "already exists" in message:
                outcomes["exists"] += 1
            else:
                mismatches.append(f"{label}: the loser's error is not about the race: {message[-300:]}")
            if not _one_line(fake):
                mismatches.append(f"{label}: the loser's error is not one line: {message[-300:]}")
            diffs = op.compare(out, reference)
            if diffs:
                mismatches.append(f"{label}: {'; '.join(diffs[:3])}")
            problem = op.check(out)
            if problem:
                mismatches.append(f"{label}: check failed: {problem}")
            if partial_of(out).exists():
                mismatches.append(f"{label}: {partial_of(out).name} left")
        _remove(base)
    return {"case": f"two {op.name}s for one output", "runs": runs, "mismatches": mismatches, **outcomes}


def campaign(seed: int = 0, runs: int = 10, work: Path | None = None) -> dict[str, Any]:
    """Every race ``runs`` times; totals ``runs`` and ``mismatches`` (a count) with the details."""
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wsistore-races-")))
        work.mkdir(parents=True, exist_ok=True)
        archive = reference_archive(work / "source.zarr")
        cases = [
            restore_pairs(work, seed, runs),
            same_output_races(ingest_op(), work, seed, runs),
            same_output_races(restore_op(archive), work, seed, runs),
        ]
    details = [m for c in cases for m in c["mismatches"]]
    return {
        "seed": seed,
        "runs": sum(c["runs"] for c in cases),
        "mismatches": len(details),
        "details": details,
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each race (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    result = campaign(args.seed, args.runs, args.work)
    print(json.dumps(result, indent=1))
    return 0 if not result["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
