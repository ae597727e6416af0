"""Per-slide adaptation at ingest (issue 22): for each slide, ingest it twice through the
library as the CLI does, with ``--no-adapt`` and with the adaptation (its settings below),
and record both wall times and what the archive's metadata says of the adaptation: the
held-out PSNR of the base and the adapted generator, the gain, the bytes, the rule's cost
and whether it was kept. With ``--whole``, the adapted archive is also restored through the
library twice, as ``wsistore restore`` does (with its adaptation, and with ``--model`` of the
base), and both are scored against the source over the whole slide.

    python -m benchmarks.adapt_probe SLIDE... [--steps 300] [--learning-rate 0.002]
        [--seconds S] [--whole] [--json benchmarks/reports/adapt-probe.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from wsistore.archive.reader import Archive
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.errors import WsistoreError
from wsistore.models.weights import default_model
from wsistore.psnr import psnr_from_mse
from wsistore.readers import open_slide
from wsistore.restoration.pipeline import RestoreOptions, restore
from wsistore.training.adapt import AdaptOptions


def whole_slide_psnr(slide: Path, restored: Path) -> float:
    """PSNR (dB) of a restored TIFF against the source's level 0, over the whole slide."""
    sse, n = 0.0, 0
    with open_slide(slide) as source, tifffile.TiffFile(restored) as tif:
        image = tif.pages[0].asarray()
        width, height = source.dimensions
        for y in range(0, height, 1024):
            h = min(1024, height - y)
            band = source.read_region((0, y), 0, (width, h)).astype(np.float64)
            sse += float(((band - image[y : y + h]) ** 2).sum())
            n += band.size
    return psnr_from_mse(sse / n)


def probe(slide: Path, work: Path, options: AdaptOptions, whole: bool = False) -> dict[str, Any]:
    """Ingest ``slide`` into ``work`` without and with the adaptation; the times and the record
    (and, with ``whole``, the whole-slide PSNR restored with and without it)."""
    row: dict[str, Any] = {"slide": slide.name}
    for name, adapt in (("without", None), ("with", options)):
        archive = work / f"{slide.stem}-{name}.zarr"
        start = time.perf_counter()
        result = ingest(slide, archive, IngestOptions(progress=False, overwrite=True, adapt=adapt))
        row[f"ingest_seconds_{name}"] = round(time.perf_counter() - start, 1)
        row["source_megapixels"] = round(result.source_pixels / 1e6, 2)
        if adapt is not None:
            row["archive_bytes"] = Archive.open(archive).stored_bytes()
            row["adaptation"] = result.adaptation
            if whole:
                for label, model in (("adapted", None), ("base", default_model())):
                    out = work / f"{slide.stem}-{label}.tif"
                    restore(archive, out, RestoreOptions(model=model, lossless=True, progress=False, overwrite=True))
                    row[f"whole_slide_psnr_{label}"] = round(whole_slide_psnr(slide, out), 4)
                    out.unlink()
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=AdaptOptions.steps)
    parser.add_argument("--learning-rate", type=float, default=AdaptOptions.learning_rate)
    parser.add_argument("--seconds", type=float, default=AdaptOptions.seconds)
    parser.add_argument("--whole", action="store_true", help="also restore and score the whole slide")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    options = AdaptOptions(steps=args.steps, learning_rate=args.learning_rate, seconds=args.seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wsistore-adapt-") as work:
        for slide in args.slides:
            try:
                row = probe(slide, Path(work), options, args.whole)
            except WsistoreError as exc:  # a slide wsistore cannot read: say so, go on
                row = {"slide": slide.name, "refused": str(exc)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    gains = [r["adaptation"]["held_out_gain_db"] for r in rows if "held_out_gain_db" in (r.get("adaptation") or {})]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "options": asdict(options),
        "slides": [str(s) for s in args.slides],
        "mean_gain_db": round(sum(gains) / len(gains), 4) if gains else None,
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
