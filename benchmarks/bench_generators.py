"""CPU cost of candidate generators: the measurement behind the choice of the shipped family.

For each generator (registry name + settings, seeded random weights: speed does not depend
on what the weights learned): multiply-adds per HR pixel, receptive field and halo, the
generator alone on one 256-px LR compute tile with its halo (as restore runs it: batch 1,
fp32, channels_last, all threads) in ms and useful HR MP/s, and one training step (batch
16 of 48-px LR crops, L1 + 0.1 (1 - SSIM), Adam) on one thread, as the shipped runs
trained.

    python -m benchmarks.bench_generators [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_restore import machine
from wsistore.models.registry import build_generator, build_loss
from wsistore.restoration.grid import CPU_TILE, halo_for

CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "compact-48x6": ("compact", {"features": 48, "blocks": 6}),
    "compact-32x4": ("compact", {"features": 32, "blocks": 4}),
    "compact-64x6": ("compact", {"features": 64, "blocks": 6}),
    "edsr-8x32": ("edsr", {"blocks": 8, "features": 32}),
    "srresnet-4x32": ("srresnet", {"blocks": 4, "features": 32}),
}


@torch.inference_mode()
def inference(model: torch.nn.Module, side: int, reps: int = 3) -> float:
    """Seconds for one ``side x side`` LR window, channels_last, after a warm-up."""
    x = torch.rand(1, 3, side, side).contiguous(memory_format=torch.channels_last)
    model(x)
    start = time.perf_counter()
    for _ in range(reps):
        model(x)
    return (time.perf_counter() - start) / reps


def train_step(name: str, settings: dict[str, Any], reps: int = 3) -> float:
    """Seconds per training step on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_generator(name, settings).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        ssim = build_loss("ssim")
        lr, hr = torch.rand(16, 3, 48, 48), torch.rand(16, 3, 192, 192)
        for i in range(reps + 1):
            if i == 1:
                start = time.perf_counter()
            sr = model(lr)
            loss = (sr - hr).abs().mean() + 0.1 * ssim(sr, hr)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / reps
    finally:
        torch.set_num_threads(threads)


def bench(label: str, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_generator(name, settings).eval().to(memory_format=torch.channels_last)
    halo = halo_for(model.receptive_field)
    seconds = inference(model, CPU_TILE + 2 * halo)
    useful = (CPU_TILE * model.scale) ** 2 / 1e6
    return {
        "model": label,
        "architecture": name,
        "settings": settings,
        "parameters": model.parameter_count,
        "kmac_per_hr_pixel": model.flops_per_output_pixel() / 2e3,
        "receptive_field": model.receptive_field,
        "halo": halo,
        "tile_ms": 1000 * seconds,
        "useful_hr_mp_per_s": useful / seconds,
        "train_step_s_1_thread": train_step(name, settings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [bench(label, name, settings) for label, (name, settings) in CANDIDATES.items()]
    result = {
        "command": "python -m benchmarks.bench_generators",
        "machine": machine(),
        "threads": os.cpu_count(),
        "models": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"`{result['command']}` on {result['machine']}")
    print("")
    print(
        "| model | k MAC / HR px | RF / halo (LR) | params | 256-px tile + halo, ms | useful HR MP/s | "
        "train step, 1 thread, s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['kmac_per_hr_pixel']:.1f} | {r['receptive_field']} / {r['halo']} | "
            f"{r['parameters']:,} | "
            f"{r['tile_ms']:.0f} | {r['useful_hr_mp_per_s']:.2f} | {r['train_step_s_1_thread']:.2f} |"
        )


if __name__ == "__main__":
    main()
