"""The equal-slope hybrid against AVIF on the full image and pure SR, per input, at equal bytes
(issue 37), from the results of ``benchmarks.ood_report``: at each LR quality the report swept,
the hybrid at the lambda that ingest matches to that quality
(:func:`wsistore.archive.hybrid_choice.matched_lambda`; the report must have swept it), and the
AVIF and pure-SR curves of the same input interpolated (linearly in log bpp) at the hybrid's
bytes. PSNR over the whole image (the decision's own measure), and PSNR and SSIM over tissue
pixels, as in the reports.

    python -m benchmarks.equal_slopes RESULTS.json [RESULTS.json ...] [--avif MORE.json ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from wsistore.archive.hybrid_choice import matched_lambda
from wsistore.codecs import parse_codec
from wsistore.reports.run import DEFAULT_SETTING

#: PSNR over the whole image (what the decision minimises: the claim at equal bytes), PSNR and
#: SSIM over tissue pixels (the reports' metrics).
METRICS = ("psnr_image", "psnr", "ssim")


def interpolate(points: list[tuple[float, dict[str, float]]], bpp: float, metric: str) -> float | None:
    """A curve's ``metric`` at ``bpp``, linear in log(bpp); None outside its span."""
    points = sorted(points)
    if len(points) < 2 or not points[0][0] <= bpp <= points[-1][0]:
        return None
    return float(np.interp(np.log(bpp), np.log([b for b, _ in points]), [m[metric] for _, m in points]))


def compare(
    records: list[dict[str, Any]], model: str, more_avif: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per input and LR setting: the hybrid at the matched lambda (``model``, and
    ``model+adapted`` where the report has it), AVIF and pure SR at its bytes (AVIF's curve with
    the points of ``more_avif``, records of another report on the same inputs, added)."""
    curves: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = defaultdict(list)
    hybrids = []
    inputs = {r["input"] for r in records}
    extra = [r for r in more_avif or [] if r["input"] in inputs and r["family"] == "hr_codec"]
    for r in [*records, *extra]:
        point = (r["bpp"], r["metrics"])
        if r["family"] == "hr_codec" and r["codec"] == "avif":
            curves[r["input"], "avif"].append(point)
        elif r["family"] == "archive" and r["upscaler"] == model:
            curves[r["input"], "sr"].append(point)
        elif r["family"] == "hybrid" and r["upscaler"] in (model, f"{model}+adapted"):
            matched = matched_lambda(parse_codec(r["setting"]))
            if abs(r["hybrid"]["lambda"] - matched) < 1e-6 * matched:
                hybrids.append(r)
    rows = []
    for r in sorted(hybrids, key=lambda r: (r["input"], r["upscaler"], r["bpp"])):
        row: dict[str, Any] = {
            "input": r["input"],
            "setting": r["setting"],
            "upscaler": r["upscaler"],
            "lambda": r["hybrid"]["lambda"],
            "hr_chunks": f"{r['hybrid']['hr_chunks']}/{r['hybrid']['chunks']}",
            "bpp": r["bpp"],
        }
        for metric in METRICS:
            row[metric] = r["metrics"][metric]
            for rival in ("avif", "sr"):
                value = interpolate(curves[r["input"], rival], r["bpp"], metric)
                row[f"{rival}_{metric}"] = value
                row[f"vs_{rival}_{metric}"] = None if value is None else r["metrics"][metric] - value
        rows.append(row)
    return rows


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`compare`'s rows."""
    lines = [
        "| input | LR | SR path | lambda | HR chunks | bpp | PSNR image | vs AVIF | vs SR "
        "| PSNR tissue | vs AVIF | vs SR | SSIM | vs AVIF | vs SR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r[m]:.{d}f} | {_cell(r[f'vs_avif_{m}'], d)} | {_cell(r[f'vs_sr_{m}'], d)}"
            for m, d in (("psnr_image", 2), ("psnr", 2), ("ssim", 4))
        ]
        lines.append(
            f"| {r['input']} | {r['setting']} | {r['upscaler']} | {r['lambda']:g} | {r['hr_chunks']} | {r['bpp']:.3f} "
            f"| {' | '.join(cells)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--model", default="compact-l1-gpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--avif", type=Path, nargs="*", default=[], help="reports with more AVIF points on the inputs")
    args = parser.parse_args()
    more = [r for path in args.avif for r in json.loads(path.read_text())["records"]]
    rows = [row for path in args.results for row in compare(json.loads(path.read_text())["records"], args.model, more)]
    print(table(rows))
    for key in ("vs_avif_psnr_image", "vs_sr_psnr_image", "vs_avif_psnr", "vs_sr_psnr"):
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            print(f"{key}: mean {np.mean(values):+.3f} dB, min {min(values):+.3f} dB over {len(values)} points")
    for setting in sorted({r["setting"] for r in rows}):
        for upscaler in sorted({r["upscaler"] for r in rows}):
            at = [r for r in rows if (r["setting"], r["upscaler"]) == (setting, upscaler)]
            summary = [f"{setting} {upscaler}: mean bpp {np.mean([r['bpp'] for r in at]):.3f}"]
            for metric in METRICS:
                diffs = [r[f"vs_avif_{metric}"] for r in at if r[f"vs_avif_{metric}"] is not None]
                if diffs:
                    summary.append(f"{metric} vs AVIF mean {np.mean(diffs):+.4f} (min {min(diffs):+.4f})")
            print(", ".join(summary))
    # the gain over the better pure design at the default point (LR q75, ingest's adaptation)
    default = [r for r in rows if r["setting"] == DEFAULT_SETTING and r["upscaler"].endswith("+adapted")]
    for metric in ("psnr_image", "psnr"):
        pairs = [
            (r["input"], min(v for v in (r[f"vs_avif_{metric}"], r[f"vs_sr_{metric}"]) if v is not None))
            for r in default
            if r[f"vs_avif_{metric}"] is not None or r[f"vs_sr_{metric}"] is not None
        ]
        if pairs:
            gains = [g for _, g in pairs]
            listed = ", ".join(f"{name} {g:+.3f}" for name, g in pairs)
            print(f"default point, {metric}: mean {np.mean(gains):+.3f} dB over the better pure design ({listed})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
