"""What the shipped generators lose when the archive's LR is coded at a faster aom speed.

The generators were trained and validated on LR coded at ``avif:level=75,speed=6`` (the
archive default). For each validation tile (``pipelines/validation_tiles.txt``) and each
AVIF speed in 6, 7, 8 (level 75, the codec's other defaults) this degrades the tile exactly
as an archive stores it (:func:`wsistore.degradation.degrade`), counts the stored bytes
(:func:`~wsistore.degradation.encode_on_grid`, the 256-px chunk grid), times the encode,
scores the coded LR against the exact (uncoded) LR (PSNR over all LR pixels), then rebuilds
the HR with bicubic and each shipped model exactly as restore does and scores it against the
original with the committed report's metrics (:mod:`wsistore.reports.metrics`: PSNR and
SSIM over the tissue mask of :mod:`wsistore.reports.inputs`). Means over the tiles, and the
difference against speed 6, go to stdout and ``report.md`` beside the JSON.

    python -m benchmarks.codec_speed_check --json benchmarks/reports/codec-speed/results.json

(set ``WSISTORE_SHARED_DATA`` when the checkout is not beside ``shared/data``.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_restore import machine
from benchmarks.validation_report import validation_tiles
from wsistore.codecs import parse_codec
from wsistore.degradation import Downsample, degrade, encode_on_grid
from wsistore.models.weights import shipped_weights
from wsistore.reports.inputs import load_inputs
from wsistore.reports.metrics import psnr, ssim
from wsistore.restoration.engine import runner_for, upscale_image

SPEEDS = (6, 7, 8)
UPSCALERS = ("bicubic", "compact-l1", "edsr-cpu", "compact-gan")
CHUNK, SCALE = 256, 4
COMMAND = "python -m benchmarks.codec_speed_check --json benchmarks/reports/codec-speed/results.json"


def setting(speed: int) -> str:
    return f"avif:level=75,speed={speed}"


def measure(device: str = "cpu") -> list[dict[str, Any]]:
    """One record per (tile, speed)."""
    missing = set(UPSCALERS[1:]) - set(shipped_weights())
    if missing:
        raise SystemExit(f"not shipped: {sorted(missing)}")
    runners = {name: runner_for(name, device) for name in UPSCALERS}
    records = []
    for item in load_inputs(validation_tiles(), crop=2048):
        exact = Downsample(SCALE).reduce_region(item.hr)
        for speed in SPEEDS:
            codec = parse_codec(setting(speed))
            lr = degrade(item.hr, codec, chunk=CHUNK, scale=SCALE, fill=item.fill)
            start = time.perf_counter()
            coded, sizes = encode_on_grid(exact, codec, CHUNK, item.fill)
            nbytes = sum(sizes.values())
            encode_s = time.perf_counter() - start  # encode + decode of the chunks
            assert np.array_equal(coded, lr), "degrade and encode_on_grid disagree"
            rec: dict[str, Any] = {
                "tile": item.name,
                "speed": speed,
                "setting": setting(speed),
                "bytes": nbytes,
                "bpp": 8 * nbytes / item.pixels,
                "code_seconds": encode_s,
                "lr_psnr": psnr(exact, lr),
                "tissue_fraction": float(item.mask.mean()),
            }
            for name, runner in runners.items():
                hr = upscale_image(lr, runner, item.hr.shape[:2])
                rec[f"{name}_psnr"] = psnr(item.hr, hr, item.mask)
                rec[f"{name}_ssim"] = ssim(item.hr, hr, item.mask)
            records.append(rec)
            print(f"# {item.name} speed {speed}: {rec['bpp']:.4f} bpp, compact-l1 {rec['compact-l1_psnr']:.3f} dB")
    return records


def summarise(records: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per speed, the mean over tiles of every numeric field."""
    keys = [k for k, v in records[0].items() if isinstance(v, float)]
    return {s: {k: statistics.fmean(r[k] for r in records if r["speed"] == s) for k in keys} for s in SPEEDS}


def markdown(means: dict[int, dict[str, float]], n_tiles: int) -> str:
    cols = ["bpp", "lr_psnr", *(f"{u}_{m}" for u in UPSCALERS for m in ("psnr", "ssim")), "code_seconds"]
    head = ["bits/px", "LR PSNR", *(f"{u} {m.upper()}" for u in UPSCALERS for m in ("psnr", "ssim")), "code s/tile"]

    def table(rows: list[tuple[str, list[float]]], fmt: str = ".4f") -> list[str]:
        out = ["| speed | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        return out + [f"| {label} | " + " | ".join(f"{v:{fmt}}" for v in values) + " |" for label, values in rows]

    base = means[SPEEDS[0]]
    lines = [
        f"# AVIF speed vs shipped generators ({n_tiles} validation tiles, level 75, tissue-only PSNR dB / SSIM)",
        "",
        "Means over tiles:",
        "",
        *table([(str(s), [means[s][c] for c in cols]) for s in SPEEDS]),
        "",
        f"Difference against speed {SPEEDS[0]}:",
        "",
        *table([(f"{s} - {SPEEDS[0]}", [means[s][c] - base[c] for c in cols]) for s in SPEEDS[1:]], "+.4f"),
        "",
        "LR PSNR: coded LR vs the exact (uncoded) downsample, all LR pixels. "
        "code s/tile: encode + decode of the tile's LR chunks, single-threaded aom.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/reports/codec-speed/results.json"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    records = measure(args.device)
    means = summarise(records)
    text = markdown(means, len({r["tile"] for r in records}))
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    (args.json.parent / "report.md").write_text(text)
    result = {
        "command": COMMAND,
        "machine": machine(),
        "seconds": time.perf_counter() - start,
        "models": {n: runner_for(n, args.device).generator.describe() for n in UPSCALERS},
        "means": {str(s): v for s, v in means.items()},
        "delta_vs_speed6": {str(s): {k: v - means[6][k] for k, v in means[s].items()} for s in SPEEDS[1:]},
        "records": records,
    }
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
