"""Per-slide adaptation at ingest (issue 22): for each slide, ingest it twice through the
library as the CLI does, with ``--no-adapt`` and with the adaptation (its settings below),
and record both wall times and what the archive's metadata says of the adaptation: the
held-out PSNR of the base and the adapted generator, the gain, the bytes, the rule's cost
and whether it was kept.

    python -m benchmarks.adapt_probe SLIDE... [--steps 300] [--learning-rate 0.002]
        [--seconds 60] [--json benchmarks/reports/adapt-probe.json]
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

from wsistore.archive.reader import Archive
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.training.adapt import AdaptOptions


def probe(slide: Path, work: Path, options: AdaptOptions) -> dict[str, Any]:
    """Ingest ``slide`` into ``work`` without and with the adaptation; the times and the record."""
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
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=AdaptOptions.steps)
    parser.add_argument("--learning-rate", type=float, default=AdaptOptions.learning_rate)
    parser.add_argument("--seconds", type=float, default=AdaptOptions.seconds)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    options = AdaptOptions(steps=args.steps, learning_rate=args.learning_rate, seconds=args.seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wsistore-adapt-") as work:
        for slide in args.slides:
            row = probe(slide, Path(work), options)
            rows.append(row)
            print(json.dumps(row), flush=True)
    gains = [r["adaptation"]["held_out_gain_db"] for r in rows if "held_out_gain_db" in (r["adaptation"] or {})]
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
