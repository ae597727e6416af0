"""Turn bench results into ``report.md`` (with PNG plots) and a self-contained
``report.html``: rate-distortion curves, a matched-bytes table with plain sentences,
the seeds' SR-vs-i-HR table, per-input and aggregate tables, crop panels and costs."""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsistore.reports.metrics import METRICS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Bits per pixel at which every curve is compared.
MATCH_BPP = (0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
PLOT_METRICS = ("psnr", "ssim", "ms_ssim", "haarpsi", "gmsd", "lpips", "nuclei_f1")
#: The upscalers that are not SR models (left out where SR is compared).
NOT_SR = ("nearest", "bicubic")


def curve_name(record: dict[str, Any]) -> str:
    """The curve a record belongs to (one line on the plots)."""
    if record["family"] == "archive":
        return f"archive {record['codec']} LR + {record['upscaler']}"
    if record["family"] == "hybrid":
        hybrid = record["hybrid"]
        return (
            f"hybrid {record['codec']} LR + {record['upscaler']}, HR {hybrid['hr_codec']} lambda {hybrid['lambda']:g}"
        )
    if record["family"] == "hr_codec":
        return f"{record['codec']} full resolution"
    return "source as stored"


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of each metric over inputs per (curve, setting); bpp = total bits / total pixels."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(curve_name(r), r["setting"])].append(r)
    rows = []
    for (curve, setting), group in groups.items():
        pixels = sum(r["pixels"] for r in group)
        row = {
            "curve": curve,
            "family": group[0]["family"],
            "setting": setting,
            "upscaler": group[0].get("upscaler"),
            "inputs": len(group),
            "bpp": 8 * sum(r["bytes"] for r in group) / pixels,
            "encode_seconds": sum(r["encode_seconds"] or 0 for r in group),
            "restore_seconds": sum(r["restore_seconds"] or 0 for r in group),
            "metrics": {},
        }
        for name in METRICS:
            values = [r["metrics"].get(name) for r in group]
            values = [v for v in values if v is not None and not math.isnan(v)]
            row["metrics"][name] = float(np.mean(values)) if values else None
        rows.append(row)
    return sorted(rows, key=lambda r: (r["curve"], r["bpp"]))


def at_bpp(rows: list[dict[str, Any]], curve: str, metric: str, bpp: float) -> float | None:
    """A curve's metric at ``bpp``, interpolated linearly in log(bpp); None outside its span."""
    points = sorted(
        (r["bpp"], r["metrics"][metric]) for r in rows if r["curve"] == curve and r["metrics"].get(metric) is not None
    )
    if len(points) < 2 or not points[0][0] <= bpp <= points[-1][0]:
        exact = [v for b, v in points if abs(b - bpp) / bpp < 0.02]
        return exact[0] if exact else None
    xs = np.log([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    return float(np.interp(np.log(bpp), xs, ys))


def matched_bytes(
    rows: list[dict[str, Any]], metric: str = "psnr"
) -> tuple[list[str], dict[str, dict[float, float | None]]]:
    curves = sorted({r["curve"] for r in rows if r["family"] != "source"})
    return curves, {c: {b: at_bpp(rows, c, metric, b) for b in MATCH_BPP} for c in curves}


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Plain sentences: at each matched bpp and at every archive setting's own bytes, the
    best archive path and the best hybrid archive against the best full-resolution codec (PSNR
    and SSIM), the best hybrid against the best SR archive path, and SR against bicubic at the
    same bytes. Where no codec setting reaches that few bytes, it says so instead of comparing."""
    sentences = []
    hr_points = [r["bpp"] for r in rows if r["family"] == "hr_codec"]
    archive_bpps = sorted({round(r["bpp"], 4) for r in rows if r["family"] == "archive"})
    targets = list(archive_bpps) + [b for b in MATCH_BPP if all(abs(b - a) / a > 0.05 for a in archive_bpps)]
    for bpp in sorted(targets):
        if hr_points and bpp < min(hr_points):
            sentences.append(
                f"At {bpp:.3g} bits per pixel no full-resolution codec setting in this sweep is that small "
                f"(the smallest is {min(hr_points):.3g}); the archive is the only option measured there."
            )
        for metric in ("psnr", "ssim"):
            hybrid, codec = _best(rows, bpp, metric, "hybrid"), _best(rows, bpp, metric, "hr_codec")
            for name, ours, rival_name, rival in (
                ("the archive", _best(rows, bpp, metric, "archive"), "the best full-resolution codec", codec),
                ("the hybrid archive", hybrid, "the best full-resolution codec", codec),
                (
                    "the hybrid archive",
                    hybrid,
                    "the best SR archive path",
                    _best(rows, bpp, metric, "archive", NOT_SR),
                ),
            ):
                if ours is not None and rival is not None:
                    sentences.append(_compare(bpp, metric, name, ours, rival_name, rival))
        sr = _best(rows, bpp, "psnr", "archive", NOT_SR)
        bicubic = _best(rows, bpp, "psnr", "archive", only="bicubic")
        if sr and bicubic:
            gain = sr[1] - bicubic[1]
            sentences.append(
                f"At {bpp:.3g} bits per pixel, SR ({sr[0]}) {'beats' if gain > 0 else 'loses to'} bicubic upscaling of "
                f"archived LR ({bicubic[0]}) by {abs(gain):.2f} dB PSNR."
            )
    return sentences


def _compare(
    bpp: float, metric: str, name: str, ours: tuple[str, float], rival_name: str, rival: tuple[str, float]
) -> str:
    """One sentence: ``ours`` against ``rival`` at ``bpp``."""
    unit = " dB" if metric == "psnr" else ""
    (a_curve, a_val), (r_curve, r_val) = ours, rival
    diff = a_val - r_val
    if abs(diff) < (0.05 if metric == "psnr" else 0.002):
        verdict = "ties with"
    else:
        verdict = "beats" if diff > 0 else "loses to"
    return (
        f"At {bpp:.3g} bits per pixel ({metric.upper()}), {name} ({a_curve}, {a_val:.3f}{unit}) {verdict} "
        f"{rival_name} ({r_curve}, {r_val:.3f}{unit}) by {abs(diff):.3f}{unit}."
    )


def _best(
    rows: list[dict[str, Any]],
    bpp: float,
    metric: str,
    family: str,
    exclude: tuple[str, ...] = (),
    only: str | None = None,
) -> tuple[str, float] | None:
    higher = METRICS[metric].higher_is_better
    best = None
    for curve in sorted({r["curve"] for r in rows if r["family"] == family}):
        upscaler = next(r["upscaler"] for r in rows if r["curve"] == curve)
        if upscaler in exclude or (only is not None and upscaler != only):
            continue
        value = at_bpp(rows, curve, metric, bpp)
        if value is not None and (best is None or (value > best[1]) == higher):
            best = (curve, value)
    return best


# -- plots ------------------------------------------------------------------------------------
def plot_curves(rows: list[dict[str, Any]], source_bpp: float | None, out_dir: Path) -> dict[str, Path]:
    """One rate-distortion plot per metric any row has (:func:`rd_figure`), as PNGs in ``out_dir``."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for metric in PLOT_METRICS:
        if all(r["metrics"].get(metric) is None for r in rows):
            continue
        fig = rd_figure(rows, metric, source_bpp)
        path = out_dir / f"rd_{metric}.png"
        fig.savefig(path)
        plt.close(fig)
        files[metric] = path
    return files


def rd_figure(rows: list[dict[str, Any]], metric: str, source_bpp: float | None) -> Figure:
    """``metric`` against bits per pixel, a line per curve; the legend right of the axes, the
    figure as tall as the legend needs (so it never covers a curve nor leaves the figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = sorted({r["curve"] for r in rows if r["family"] != "source"})
    height = max(4.8, 1.0 + 0.13 * (len(curves) + 1))  # 6.5-point legend rows
    fig, ax = plt.subplots(figsize=(11.5, height), dpi=110, layout="constrained")
    for curve in curves:
        pts = sorted(
            (r["bpp"], r["metrics"][metric])
            for r in rows
            if r["curve"] == curve and r["metrics"].get(metric) is not None
        )
        if not pts:
            continue
        style = {"archive": "-o", "hybrid": "-.^"}.get(curve.partition(" ")[0], "--s")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3.5, lw=1.4, label=curve)
    if source_bpp:
        ax.axvline(source_bpp, color="grey", lw=1, ls=":", label=f"source file ({source_bpp:.2f} bpp)")
    ax.set_xscale("log")
    ax.set_xlabel("bits per source pixel (log)")
    ax.set_ylabel(f"{metric} ({'higher' if METRICS[metric].higher_is_better else 'lower'} is better)")
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=6.5)
    return fig


# -- documents -----------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], body: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in body]
    return lines


def write_markdown(results: dict[str, Any], out_dir: Path, plots: dict[str, Path], panels: dict[str, Path]) -> Path:
    rows = aggregate(results["records"])
    md: list[str] = ["# wsistore storage-vs-quality report", ""]
    md += [
        f"Created {results['created']} on {results['machine']}; device {results['device']}; "
        f"{len(results['inputs'])} inputs; wsistore {results['software'].get('wsistore', '?')}.",
        "",
    ]
    md += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in results["definitions"].items()] + [""]
    md += ["## Inputs", ""]
    md += _table(
        ["input", "kind", "size", "mpp", "tissue", "source bpp"],
        [
            [i["name"], i["kind"], f"{i['width']}x{i['height']}", i["mpp"], i["tissue_fraction"], i["source_bpp"]]
            for i in results["inputs"]
        ],
    )
    md += ["", "## Who wins at equal bytes", ""] + [f"- {s}" for s in verdicts(rows)] + [""]
    for metric in ("psnr", "ssim"):
        curves, table = matched_bytes(rows, metric)
        md += [f"### {metric.upper()} at matched bits per pixel (interpolated; n/a outside a curve's range)", ""]
        md += _table(
            ["method"] + [f"{b:g} bpp" for b in MATCH_BPP], [[c] + [table[c][b] for b in MATCH_BPP] for c in curves]
        ) + [""]
    md += ["## Rate-distortion curves", ""]
    for metric, path in plots.items():
        md += [f"![{metric}]({path.relative_to(out_dir).as_posix()})", ""]
    md += ["## SR next to i-HR (the seeds' table), at the default archive setting", ""]
    seeds = _seed_rows(rows, results["default_setting"])
    md += _table(["method", "bits/px", "PSNR", "SSIM", "MS-SSIM", "HaarPSI", "GMSD", "LPIPS", "nuclei F1"], seeds) + [
        ""
    ]
    md += ["## Aggregate over inputs", ""]
    md += _table(
        [
            "method",
            "setting",
            "bits/px",
            "PSNR",
            "PSNR image",
            "SSIM",
            "MS-SSIM",
            "HaarPSI",
            "GMSD",
            "LPIPS",
            "nuclei F1",
            "count ratio",
            "encode s",
            "restore s",
        ],
        [
            [
                r["curve"],
                r["setting"],
                r["bpp"],
                *[r["metrics"][m] for m in METRICS],
                r["encode_seconds"],
                r["restore_seconds"],
            ]
            for r in rows
        ],
    ) + [""]
    md += ["## Per input", ""]
    for item in results["inputs"]:
        recs = [r for r in results["records"] if r["input"] == item["name"]]
        md += [f"### {item['name']}", ""]
        md += _table(
            ["method", "setting", "bits/px", "PSNR", "SSIM", "HaarPSI", "nuclei F1"],
            [
                [
                    curve_name(r),
                    r["setting"],
                    r["bpp"],
                    r["metrics"]["psnr"],
                    r["metrics"]["ssim"],
                    r["metrics"]["haarpsi"],
                    r["metrics"]["nuclei_f1"],
                ]
                for r in sorted(recs, key=lambda r: (curve_name(r), r["bpp"]))
            ],
        )
        if item["name"] in panels:
            md += ["", f"![crops]({panels[item['name']].relative_to(out_dir).as_posix()})"]
        md += [""]
    md += ["## Cost", ""]
    md += [f"- {c}" for c in results["costs"]] + [""]
    if not results["lpips"]["available"]:
        md += [f"LPIPS: unavailable ({results['lpips']['reason']})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path


def _seed_rows(rows: list[dict[str, Any]], setting: str) -> list[list[Any]]:
    picked = [r for r in rows if r["family"] == "archive" and r["setting"] == setting]
    picked.sort(key=lambda r: (r["upscaler"] != "nearest", r["upscaler"] != "bicubic", r["upscaler"]))
    return [
        [
            ("i-HR (nearest)" if r["upscaler"] == "nearest" else r["upscaler"]),
            r["bpp"],
            r["metrics"]["psnr"],
            r["metrics"]["ssim"],
            r["metrics"]["ms_ssim"],
            r["metrics"]["haarpsi"],
            r["metrics"]["gmsd"],
            r["metrics"]["lpips"],
            r["metrics"]["nuclei_f1"],
        ]
        for r in picked
    ]


def write_html(markdown_path: Path, out_dir: Path) -> Path:
    """A self-contained HTML rendering of the markdown report (images inlined)."""
    lines = markdown_path.read_text().splitlines()
    body: list[str] = []
    in_table = False
    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set(line) <= set("|-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            data = base64.b64encode((out_dir / src).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(src)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%}"
    )
    head = f"<meta charset='utf-8'><title>wsistore report</title><style>{style}</style>"
    doc = f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>"
    path = out_dir / "report.html"
    path.write_text(doc)
    return path


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
