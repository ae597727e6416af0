"""Faults during ingest, restore and ``train run`` on real data: ``kill -9`` at random
moments, then ``--resume``; a full disk (ENOSPC); a read-only destination.

Each kill campaign runs the operation once uninterrupted (the reference), then ``kills``
times: start it, wait until it has begun writing, kill it with SIGKILL after a random
delay drawn (from ``seed``) over the rest of the reference's running time, check that
nothing is at ``OUT`` (the work is in ``OUT.partial``), rerun with ``--resume`` and
compare with the reference: archives byte for byte except the ``created`` timestamps,
restored TIFFs pixel for pixel (and byte for byte), training runs' weights, optimizer
states and logs exactly. Then ``verify`` (archives), a full read (TIFFs) or the weights'
checksum and loading (runs) must pass. A kill landing before anything resumable was
written makes ``--resume`` start afresh (it says "nothing to resume ... starting afresh");
such a run is counted as ``restarted``.

ENOSPC is a real full disk (a small tmpfs) where this process may mount one, otherwise
an injected one (every file write of the child raises ``OSError(ENOSPC)`` after a byte
budget). Read-only is a read-only tmpfs, or a ``chmod 555`` directory when not root.

    python -m benchmarks.reliability.faults --kills 24 [--seed 0] [--ops ingest,restore,train]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.data import ROOT, SLIDE, TILES

PY = sys.executable
OPERATIONS = ("ingest", "restore", "train")
#: Three real tiles, one held out, prepared once for the training runs.
TRAIN_TILES = ("kidney_monuseg_B0-5710.png", "lung_monuseg_18-5592.png", "breast_monuseg_AO-A0J2.png")
RECIPE = ROOT / "pipelines" / "techcyte.toml"
TRAIN_SETS = [
    "stages.0.steps=24",
    "stages.1.steps=12",
    "content.autoencoder_steps=6",
    "run.checkpoint_every=3",
    "validation.every=8",
]
RESTORE_REGION = "0,0,2220,1280"
#: The child's environment: one thread per process (the cores are shared), no debug tracebacks.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WSISTORE_DEBUG": "0"}
ENV["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def wsistore(*args: str) -> list[str]:
    return [PY, "-m", "wsistore", *args]


def run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=timeout, cwd=ROOT)


# -- the operations ---------------------------------------------------------------------------
@dataclass
class Operation:
    """One command under test: how to run it, where it works, how to compare and check outputs."""

    name: str
    argv: Callable[[Path], list[str]]  # output -> the command, without --resume
    started: Callable[[Path], Path]  # output -> the path whose existence says it began writing
    partial: Callable[[Path], Path]  # output -> its work directory (itself when written in place)
    compare: Callable[[Path, Path], list[str]]  # (output, reference) -> differences
    check: Callable[[Path], str]  # output -> "" when verify/read passes, else why not
    in_place: bool = False  # a training run folder: written in place, no OUT.partial
    resume_flags: tuple[str, ...] = ("--resume",)


def partial_of(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def ingest_op(slide: Path = SLIDE) -> Operation:
    return Operation(
        name="ingest",
        argv=lambda out: wsistore(
            "ingest", str(slide), str(out), "--chunk", "128", "--shard", "256", "--workers", "1", "--quiet"
        ),
        started=partial_of,
        partial=partial_of,
        compare=compare_archives,
        check=lambda out: _rc_line(run(wsistore("verify", str(out), "--quiet"))),
    )


def restore_op(archive: Path, region: str = RESTORE_REGION) -> Operation:
    return Operation(
        name="restore",
        argv=lambda out: wsistore(
            "restore",
            str(archive),
            str(out),
            "--model",
            "compact-l1",
            "--device",
            "cpu",
            "--region",
            region,
            "--tile",
            "256",
            "--workers",
            "1",
            "--quiet",
        ),
        started=partial_of,
        partial=partial_of,
        compare=compare_tiffs,
        check=check_tiff,
    )


def train_op(patches: Path) -> Operation:
    def argv(out: Path) -> list[str]:
        sets = [a for s in TRAIN_SETS for a in ("--set", s)]
        data = ["--data", str(patches), "--out", str(out)]
        return wsistore("train", "run", str(RECIPE), "--smoke", *data, *sets, "--quiet")

    return Operation(
        name="train",
        argv=argv,
        started=lambda out: out / "config.json",
        partial=lambda out: out,
        compare=compare_runs,
        check=check_run,
        in_place=True,
    )


def prepare_patches(out: Path) -> Path:
    """The tiny shard set the training runs use (made once)."""
    if not (out / "manifest.json").is_file():
        files = [str(TILES / f) for f in TRAIN_TILES]
        args = ["--patch", "24", "--patches-per-file", "8", "--val-file", TRAIN_TILES[-1], "--quiet"]
        _must(run(wsistore("train", "prepare", *files, str(out), *args)))
    return out


def reference_archive(out: Path) -> Path:
    """An archive of the real slide, for the restore campaign (made once)."""
    if not (out / "zarr.json").is_file():
        _must(run(ingest_op().argv(out)))
    return out


# -- comparisons ------------------------------------------------------------------------------
def _drop_created(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_created(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [_drop_created(v) for v in value]
    return value


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def compare_archives(out: Path, reference: Path) -> list[str]:
    """Every file byte for byte, JSON files without their ``created`` timestamps."""
    if not out.is_dir():
        return [f"{out} missing"]
    a, b = _files(out), _files(reference)
    diffs = [f"extra file {f}" for f in sorted(a - b)] + [f"missing file {f}" for f in sorted(b - a)]
    for name in sorted(a & b):
        x, y = (out / name).read_bytes(), (reference / name).read_bytes()
        if x == y:
            continue
        if name.endswith(".json") and _drop_created(json.loads(x)) == _drop_created(json.loads(y)):
            continue
        diffs.append(f"{name} differs")
    return diffs


def compare_tiffs(out: Path, reference: Path) -> list[str]:
    """Every page's pixels equal (and the file's bytes)."""
    import numpy as np
    import tifffile

    if not out.is_file():
        return [f"{out} missing"]
    diffs = []
    with tifffile.TiffFile(out) as a, tifffile.TiffFile(reference) as b:
        if len(a.pages) != len(b.pages):
            return [f"{len(a.pages)} pages, reference {len(b.pages)}"]
        for i, (pa, pb) in enumerate(zip(a.pages, b.pages, strict=True)):
            if not np.array_equal(pa.asarray(), pb.asarray()):  # type: ignore[union-attr]
                diffs.append(f"page {i} pixels differ")
    if not diffs and out.read_bytes() != reference.read_bytes():
        diffs.append("same pixels, different bytes")
    return diffs


def _equal(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _drop_sha256(state: dict[str, Any]) -> dict[str, Any]:
    """A kept checkpoint's recorded sha256 covers its model card, whose ``created`` time
    differs between runs: compare the checkpoints' weights instead."""
    best = {k: [{f: v for f, v in r.items() if f != "sha256"} for r in ranked] for k, ranked in state["best"].items()}
    return state | {"best": best}


def compare_runs(out: Path, reference: Path) -> list[str]:
    """Final weights, the whole run state (weights, optimizers, RNG, validations; not the
    elapsed time), the metrics log and the kept checkpoints' weights."""
    from safetensors.torch import load_file

    from wsistore.training.state import load_state

    if not (out / "final.safetensors").is_file():
        return [f"{out}/final.safetensors missing"]
    diffs = []
    if not _equal(load_file(out / "final.safetensors"), load_file(reference / "final.safetensors")):
        diffs.append("final weights differ")
    a, b = (_drop_sha256(load_state(root)) for root in (out, reference))
    for key in sorted(a.keys() | b.keys()):
        if key != "elapsed" and not _equal(a.get(key), b.get(key)):
            diffs.append(f"run state {key} differs")
    if (out / "metrics.jsonl").read_text() != (reference / "metrics.jsonl").read_text():
        diffs.append("metrics.jsonl differs")
    ca, cb = (sorted((root / "checkpoints").glob("*.safetensors")) for root in (out, reference))
    if [p.name for p in ca] != [p.name for p in cb]:
        diffs.append("kept checkpoints differ")
    elif not all(_equal(load_file(x), load_file(y)) for x, y in zip(ca, cb, strict=True)):
        diffs.append("checkpoint weights differ")
    return diffs


def check_tiff(out: Path) -> str:
    import tifffile

    try:
        with tifffile.TiffFile(out) as tif:
            for page in tif.pages:
                page.asarray()  # type: ignore[union-attr]
    except Exception as exc:
        return f"{out}: {type(exc).__name__}: {exc}"
    return ""


def check_run(out: Path) -> str:
    from wsistore.checksums import sha256_file
    from wsistore.models.weights import load_generator

    final = out / "final.safetensors"
    recorded = (out / "final.safetensors.sha256").read_text().split()[0]
    if sha256_file(final) != recorded:
        return "final.safetensors does not match its .sha256"
    try:
        load_generator(str(final))
    except Exception as exc:
        return f"final.safetensors does not load: {exc}"
    return ""


def _rc_line(proc: subprocess.CompletedProcess[str]) -> str:
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or [f"rc {proc.returncode}"])[-1]


def _must(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode:
        raise RuntimeError(f"{' '.join(proc.args)} failed: {proc.stderr.strip()[-2000:]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -- kill -9 ------------------------------------------------------------------------------------
def _timed(op: Operation, out: Path) -> tuple[float, float]:
    """Run ``op`` uninterrupted; returns (seconds until it began writing, seconds in all)."""
    start = time.perf_counter()
    proc = subprocess.Popen(op.argv(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    began = None
    while proc.poll() is None:
        if began is None and op.started(out).exists():
            began = time.perf_counter() - start
        time.sleep(0.01)
    total = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{op.name} reference failed: {err.strip()[-2000:]}")
    return (began if began is not None else 0.0), total


def kill_campaign(op: Operation, work: Path, seed: int = 0, kills: int = 24) -> dict[str, Any]:
    """``kills`` SIGKILLs at random moments of ``op``, each followed by ``--resume``."""
    rng = random.Random(f"{seed}-{op.name}")
    reference = work / f"{op.name}-reference"
    _remove(reference)
    began, total = _timed(op, reference)
    window = max(total - began, 0.05)
    result: dict[str, Any] = {
        "operation": op.name,
        "kills": 0,
        "resumed_identical": 0,
        "verify_ok": 0,
        "restarted": 0,
        "finished_before_kill": 0,
        "landed_before_kill": 0,
        "mismatches": [],
        "reference_s": round(total, 2),
        "delays_s": [],
    }
    trial = 0
    while result["kills"] < kills:
        trial += 1
        if result["finished_before_kill"] > 4 * kills:
            raise RuntimeError(f"{op.name}: the runs keep finishing before the kill")
        out = work / f"{op.name}-{trial}" / ("out.tif" if op.name == "restore" else "out")
        _remove(out.parent)
        out.parent.mkdir(parents=True)
        delay = rng.uniform(0.0, 0.97 * window)
        proc = subprocess.Popen(op.argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
        deadline = time.perf_counter() + 120
        while not op.started(out).exists() and proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        if proc.poll() is not None:
            result["finished_before_kill"] += 1
            _remove(out.parent)
            continue
        proc.kill()  # SIGKILL
        proc.wait()
        result["kills"] += 1
        result["delays_s"].append(round(delay, 3))
        label = f"{op.name} kill {result['kills']} (+{delay:.2f} s)"
        if not op.in_place and (out.exists() or out.is_symlink()):
            # the output landed (its atomic rename is the end of the run) before the kill,
            # which hit the process's exit: it must be the complete, reference output
            result["kills"] -= 1
            result["delays_s"].pop()
            result["landed_before_kill"] += 1
            diffs = op.compare(out, reference) + ([f"{partial_of(out).name} left"] if partial_of(out).exists() else [])
            if diffs:
                result["mismatches"].append(f"{label}: landed before the kill, but {'; '.join(diffs[:4])}")
            _remove(out.parent)
            continue
        resumed = run(op.argv(out) + list(op.resume_flags))
        if "starting afresh" in resumed.stderr:
            result["restarted"] += 1
        if resumed.returncode:
            result["mismatches"].append(f"{label}: resume failed: {_rc_line(resumed)}")
            continue
        diffs = op.compare(out, reference)
        if diffs:
            result["mismatches"].append(f"{label}: {'; '.join(diffs[:4])}")
        else:
            result["resumed_identical"] += 1
        if not op.in_place and partial_of(out).exists():
            result["mismatches"].append(f"{label}: {partial_of(out).name} left after the resume")
        problem = op.check(out)
        if problem:
            result["mismatches"].append(f"{label}: check failed: {problem}")
        else:
            result["verify_ok"] += 1
        _remove(out.parent)
    return result


# -- a full disk, a read-only destination -------------------------------------------------------
def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    with tempfile.TemporaryDirectory() as d:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True).returncode:
            return False
        subprocess.run(["umount", d], capture_output=True)
        return True


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


#: Run ``python -m wsistore`` with every file write failing with ENOSPC after ``budget`` bytes.
_INJECT = """
import builtins, errno, io, os, runpy, sys
budget = [int(sys.argv.pop(1))]
def spend(n):
    budget[0] -= n
    if budget[0] < 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
class Full:
    def __init__(self, f):
        self._f = f
    def write(self, data):
        spend(len(data) if not isinstance(data, memoryview) else data.nbytes)
        return self._f.write(data)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._f.__exit__(*exc)
    def __iter__(self):
        return iter(self._f)
    def __getattr__(self, name):
        return getattr(self._f, name)
real_open, real_write = io.open, os.write
def full_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    return Full(f) if any(c in mode for c in "wax+") else f
def full_write(fd, data):
    if fd > 2:
        spend(len(data))
    return real_write(fd, data)
builtins.open = io.open = full_open
os.write = full_write
sys.argv[0] = "wsistore"
runpy.run_module("wsistore", run_name="__main__", alter_sys=True)
"""


def _one_line(proc: subprocess.CompletedProcess[str]) -> bool:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("wsistore: error:")


def _partial_state(op: Operation, out: Path) -> str:
    """How the output looks after a failure: ``partial`` when recognisably unfinished."""
    if op.in_place:
        finished = (out / "final.safetensors").exists() or (out / "run.json").exists()
        return "complete?" if finished else ("partial" if out.exists() else "absent")
    if out.exists() or out.is_symlink():
        return f"{out.name} exists"
    return "partial" if partial_of(out).is_dir() else "absent"


def enospc_case(op: Operation, work: Path, budget: int, mount: bool) -> dict[str, Any]:
    """``op`` writing onto a full disk: one-line error, partial output; with a real full
    disk, freeing space and resuming then gives the reference result."""
    base = work / f"enospc-{op.name}"
    _remove(base)
    name = "out.tif" if op.name == "restore" else "out"
    result: dict[str, Any] = {"operation": op.name, "method": "tmpfs" if mount else "injected", "budget": budget}
    with contextlib.ExitStack() as stack:
        if mount:
            stack.enter_context(_tmpfs(base, f"size={budget}"))
        else:
            base.mkdir(parents=True)
        out = base / name
        argv = op.argv(out)
        if not mount:
            argv = [PY, "-c", _INJECT, str(budget), *argv[3:]]
        proc = run(argv)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        result |= {
            "rc": proc.returncode,
            "error": lines[-1] if lines else "",
            "one_line": _one_line(proc),
            "mentions_space": "space" in proc.stderr.lower(),
            "output": _partial_state(op, out),
        }
        if mount and proc.returncode:
            subprocess.run(["mount", "-o", "remount,size=256m", str(base)], check=True, capture_output=True)
            resumed = run(op.argv(out) + list(op.resume_flags))
            reference = work / f"{op.name}-reference"
            if resumed.returncode:
                result["resumed"] = f"failed: {_rc_line(resumed)}"
            elif reference.exists():
                diffs = op.compare(out, reference)
                result["resumed"] = "identical" if not diffs else "; ".join(diffs[:3])
    result["ok"] = bool(result["one_line"] and result["output"] in ("partial", "absent"))
    return result


def readonly_case(op: Operation, work: Path, mount: bool) -> dict[str, Any]:
    """``op`` aimed into a read-only directory: one-line error, nothing written."""
    base = work / f"readonly-{op.name}"
    _remove(base)
    name = "out.tif" if op.name == "restore" else "out"
    with contextlib.ExitStack() as stack:
        if mount:
            stack.enter_context(_tmpfs(base, "size=64k,ro"))
        else:
            base.mkdir(parents=True)
            base.chmod(0o555)
            stack.callback(base.chmod, 0o755)
        out = base / name
        proc = run(op.argv(out))
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        left = sorted(p.name for p in base.iterdir())
    return {
        "operation": op.name,
        "method": "read-only tmpfs" if mount else "chmod 555",
        "rc": proc.returncode,
        "error": lines[-1] if lines else "",
        "one_line": _one_line(proc),
        "left": left,
        "ok": _one_line(proc) and not left,
    }


#: Bytes each operation may write before the disk is full: a tmpfs's size, or the injected budget
#: (smaller for training, whose torch and safetensors writes bypass Python's files).
ENOSPC_BUDGET = {"ingest": 300_000, "restore": 600_000, "train": 300_000}
ENOSPC_INJECTED = {"ingest": 300_000, "restore": 600_000, "train": 2_000}


# -- the campaign ---------------------------------------------------------------------------------
def operations(work: Path, names: tuple[str, ...] = OPERATIONS) -> list[Operation]:
    ops = []
    for name in names:
        if name == "ingest":
            ops.append(ingest_op())
        elif name == "restore":
            ops.append(restore_op(reference_archive(work / "source.zarr")))
        elif name == "train":
            ops.append(train_op(prepare_patches(work / "patches")))
        else:
            raise ValueError(f"unknown operation {name!r}")
    return ops


def campaign(
    seed: int = 0, kills: int = 24, work: Path | None = None, names: tuple[str, ...] = OPERATIONS, disk: bool = True
) -> dict[str, Any]:
    """Kill campaigns for ``names`` plus (``disk``) the ENOSPC and read-only cases; totals
    ``kills``, ``resumed_identical``, ``verify_ok`` and every mismatch."""
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wsistore-faults-")))
        work.mkdir(parents=True, exist_ok=True)
        ops = operations(work, names)
        per = [kill_campaign(op, work, seed, kills) for op in ops]
        mount = _can_mount() if disk else False
        budgets = ENOSPC_BUDGET if mount else ENOSPC_INJECTED
        enospc = [enospc_case(op, work, budgets[op.name], mount) for op in ops] if disk else []
        readonly = [readonly_case(op, work, mount) for op in ops] if disk else []
    mismatches = [m for r in per for m in r["mismatches"]]
    mismatches += [f"ENOSPC {r['operation']}: {r}" for r in enospc if not r["ok"]]
    mismatches += [f"read-only {r['operation']}: {r}" for r in readonly if not r["ok"]]
    return {
        "seed": seed,
        "kills": sum(r["kills"] for r in per),
        "resumed_identical": sum(r["resumed_identical"] for r in per),
        "verify_ok": sum(r["verify_ok"] for r in per),
        "mismatches": mismatches,
        "operations": per,
        "enospc": enospc,
        "readonly": readonly,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="kills per operation (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", default=",".join(OPERATIONS), help="comma-separated: ingest,restore,train")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--no-disk", action="store_true", help="skip the ENOSPC and read-only cases")
    args = parser.parse_args(argv)
    names = tuple(n for n in args.ops.split(",") if n)
    result = campaign(args.seed, args.kills, args.work, names, disk=not args.no_disk)
    print(json.dumps(result, indent=1))
    return 0 if not result["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["campaign", "enospc_case", "kill_campaign", "main", "operations", "readonly_case"]
