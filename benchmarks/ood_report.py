"""In- and out-of-distribution validation (issue 22), reported apart.

* **OOD**: the tiles of ``pipelines/ood_tiles.txt`` (every tile of two datasets and two organs,
  which a model trained with ``pipelines/ood.toml`` never saw) and the real skin slide that no
  model trained on.
* **ID**: the validation tiles (``pipelines/validation_tiles.txt``) not in the OOD list: held out
  files of the datasets and organs the models trained on.

Each split is scored by ``wsistore bench`` (LR coded at three AVIF rates, every model given,
bicubic, and AVIF on the full image at seven levels). The summary gives per split, model and
rate the mean PSNR and SSIM, the gain over bicubic, and the difference to AVIF on the full
image at the same bytes (AVIF's PSNR and SSIM interpolated linearly in bpp per input; below
AVIF's lowest rate its lowest point is used, which credits AVIF with fewer bytes than it
spent).

With ``--adapt-base WEIGHTS``, each input is also scored with the per-slide adaptation
tuned on top of that generator as ingest tunes it (``MODEL+adapted``, its bytes counted when
kept); ``--rates`` narrows the archive rates (the levers' table needs only the default).

    python -m benchmarks.ood_report --models runs/ood-base/final.safetensors ... \
        [--adapt-base runs/ood-base/final.safetensors] [--rates avif:level=75,speed=8] \
        [--out benchmarks/reports/ood]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.validation_report import listed, validation_tiles
from tests.data import ROOT, SLIDE, TILES
from wsistore.reports.run import BenchOptions, run_bench
from wsistore.training.adapt import AdaptOptions

OOD_LIST = ROOT / "pipelines" / "ood_tiles.txt"
#: The archive rates scored (the default in the middle).
ARCHIVE_RATES = ["avif:level=60,speed=8", "avif:level=75,speed=8", "avif:level=85,speed=8"]
#: AVIF on the full image, the rival at equal bytes.
HR_RATES = [f"avif:level={q},speed=6" for q in (0, 5, 12, 20, 30, 45, 60)]


def splits() -> dict[str, list[Path]]:
    """Split name -> its inputs."""
    ood = listed(OOD_LIST)
    return {
        "ood": [*(TILES / f"{name}.png" for name in ood), SLIDE],
        "id": [p for p in validation_tiles() if p.stem not in ood],
    }


def summarise(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per upscaler and archive rate: mean PSNR/SSIM/bpp, gain over bicubic, and the difference
    to AVIF on the full image at the same bytes."""
    records = results["records"]
    hr: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in records:
        if r["family"] == "hr_codec" and r["codec"] == "avif":
            hr[r["input"]].append((r["bpp"], r["metrics"]["psnr"], r["metrics"]["ssim"]))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["family"] == "archive":
            groups[(r["upscaler"], r["setting"])].append(r)
    rows = []
    for (upscaler, setting), group in sorted(groups.items()):
        bicubic = {r["input"]: r for r in groups[("bicubic", setting)]}
        psnr = [r["metrics"]["psnr"] for r in group]
        ssim = [r["metrics"]["ssim"] for r in group]
        gain = [r["metrics"]["psnr"] - bicubic[r["input"]]["metrics"]["psnr"] for r in group]
        vs_psnr, vs_ssim = [], []
        for r in group:
            points = sorted(hr[r["input"]])
            bpp = [p[0] for p in points]
            vs_psnr.append(r["metrics"]["psnr"] - float(np.interp(r["bpp"], bpp, [p[1] for p in points])))
            vs_ssim.append(r["metrics"]["ssim"] - float(np.interp(r["bpp"], bpp, [p[2] for p in points])))
        rows.append(
            {
                "upscaler": upscaler,
                "setting": setting,
                "inputs": len(group),
                "bpp": round(float(np.mean([r["bpp"] for r in group])), 4),
                "psnr": round(float(np.mean(psnr)), 3),
                "ssim": round(float(np.mean(ssim)), 4),
                "gain_over_bicubic_db": round(float(np.mean(gain)), 3),
                "vs_avif_hr_psnr_db": round(float(np.mean(vs_psnr)), 3),
                "vs_avif_hr_ssim": round(float(np.mean(vs_ssim)), 4),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reports" / "ood")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--adapt-base", default=None, help="also score the adaptation tuned on this generator")
    parser.add_argument("--rates", nargs="+", default=ARCHIVE_RATES, help="archive LR settings scored")
    args = parser.parse_args()
    adapt = AdaptOptions(model=args.adapt_base) if args.adapt_base else None
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "models": args.models,
        "adapt_base": args.adapt_base,
        "archive_rates": args.rates,
        "hr_rates": HR_RATES,
    }
    for name, inputs in splits().items():
        results = run_bench(
            BenchOptions(
                inputs=inputs,
                out=args.out / name,
                models=args.models,
                archive_codecs=list(args.rates),
                hr_codecs=list(HR_RATES),
                device=args.device,
                overwrite=True,
                adapt=adapt,
            )
        )
        summary[name] = {"inputs": [p.name for p in inputs], "rows": summarise(results)}
        for row in summary[name]["rows"]:
            print(json.dumps({"split": name, **row}), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
