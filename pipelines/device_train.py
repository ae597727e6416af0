"""Several training runs side by side on one GPU machine, each filling the same minutes.

Run there from the repository root (numpy, Pillow, torch, safetensors and tqdm are all it
needs; the packed data comes from ``python -m pipelines.device_data pack``)::

    python3 pipelines/device_train.py PACKED WORK OUT --minutes 7 \
        --run ood-q75=g-ood-q75 --run ship-q75=g-ship-q75 [--config pipelines/gpu-long.toml]

1. unpacks every packed set (in parallel);
2. times all runs together for ``--probe`` steps, so the step count of each real run fills
   ``--minutes`` with the others beside it (the cosine schedule needs the count up front);
3. runs them, each in its own process, and writes ``OUT/NAME.tar`` (weights, cards,
   metrics, no optimiser state) and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from multiprocessing import Pool
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _unpack_one(job: tuple[str, str, str]) -> str:
    from device_data import unpack

    packed, out, name = job
    return str(unpack(Path(packed), Path(out), only=name)[0])


def train_one(config: str, data: str, out: str, steps: int, name: str, validate_every: int, extra: list[str]) -> None:
    """One run, in this process (``extra``: more KEY=JSON overrides)."""
    from wsistore.training.config import load_config
    from wsistore.training.trainer import Trainer

    overrides = [
        f"data.shards={json.dumps(data)}",
        f"run.out={json.dumps(out)}",
        f"run.name={json.dumps(name)}",
        f"stages.0.steps={steps}",
        f"validation.every={validate_every}",
        *extra,
    ]
    result = Trainer(load_config(config, overrides), config_file=config, progress=False).run(overwrite=True)
    print(f"{name}: {result.step} steps in {result.seconds:.0f} s ({result.steps_per_second:.1f}/s)", flush=True)
    record = {"steps": result.step, "seconds": result.seconds, "steps_per_second": result.steps_per_second}
    Path(out + ".json").write_text(json.dumps(record))


def _launch(
    args: argparse.Namespace, runs: dict[str, str], work: Path, steps: int, tag: str, limit: float
) -> dict[str, float]:
    """Start every run with ``steps`` steps at once; wait (ending any still running after
    ``limit`` seconds); the steps per second each reported."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // len(runs)))}
    every = steps if tag == "probe" else max(500, steps // 20)
    procs = {}
    start = time.time()
    for name, spec in runs.items():
        data, *extra = spec.split("|")
        cmd = [sys.executable, __file__, "--one", args.config, str(work / "data" / data), str(work / tag / name)]
        cmd += [str(steps), name, str(every), *extra]
        procs[name] = subprocess.Popen(cmd, env=env)
    rates = {}
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, start + limit - time.time()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        if proc.returncode != 0:
            print(f"{name} ({tag}) failed with exit code {proc.returncode}", flush=True)
            continue
        rates[name] = json.loads((work / tag / f"{name}.json").read_text())["steps_per_second"]
    return rates


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        config, data, out, steps, name, every, *extra = sys.argv[2:]
        train_one(config, data, out, int(steps), name, int(every), extra)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packed", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument(
        "--run", action="append", required=True, metavar="NAME=SET[|KEY=JSON...]", help="a run: its data and overrides"
    )
    parser.add_argument("--config", default=str(HERE / "gpu-long.toml"))
    parser.add_argument("--probe", type=int, default=300)
    parser.add_argument("--steps", type=int, help="steps of every run (no probe)")
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.run)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {gpu}", flush=True)
    t0 = time.time()
    sets = sorted({spec.split("|")[0] for spec in runs.values()})
    with Pool(len(sets)) as pool:
        pool.map(_unpack_one, [(str(args.packed), str(args.work / "data"), s) for s in sets])
    print(f"unpacked {len(sets)} sets in {time.time() - t0:.0f} s", flush=True)
    probe: dict[str, float] = {}
    steps = args.steps
    if steps is None:
        probe = _launch(args, runs, args.work, args.probe, "probe", 300)
        rate = 0.9 * min(probe.values())  # validation and checkpoints take the rest
        steps = max(500, int(rate * args.minutes * 60 / 100) * 100)
        print(f"probe: {probe}; {rate:.1f} steps/s each -> {steps} steps", flush=True)
    took = _launch(args, runs, args.work, steps, "runs", args.minutes * 60 * 1.2 + 60)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in runs:
        folder = args.work / "runs" / name
        with tarfile.open(args.out / f"{name}.tar", "w") as tar:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.name.startswith("state"):
                    tar.add(path, arcname=f"{name}/{path.relative_to(folder)}")
    summary = {"steps": steps, "steps_per_second": took, "probe": probe, "torch": torch.__version__}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
