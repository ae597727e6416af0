"""Per-slide adaptation (issue 22), measured before it is wired into ingest: for each real
slide, ingest it at the default, then tune the default generator's biases and PReLU slopes
on pairs from its own tissue chunks (:mod:`wsistore.training.adapt`) and score the held-out
chunks, base against adapted, with the bytes the adaptation would add.

    python -m benchmarks.adapt_probe SLIDE... [--steps 300] [--learning-rate 0.002]
        [--json benchmarks/reports/adapt-probe.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from wsistore.archive.reader import Archive
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.readers import open_slide
from wsistore.training.adapt import AdaptationSource, AdaptOptions, tune


def probe(slide: Path, work: Path, options: AdaptOptions) -> dict[str, Any]:
    """Ingest ``slide`` at the default into ``work`` and tune its adaptation; the result's info."""
    archive = work / f"{slide.stem}.zarr"
    start = time.perf_counter()
    ingest(slide, archive, IngestOptions(progress=False, overwrite=True))
    ingest_seconds = time.perf_counter() - start
    with open_slide(slide) as source:
        result = tune(AdaptationSource.of_archive(Archive.open(archive), source), options)
    if result is None:
        return {"slide": slide.name, "adapted": False, "reason": "too little tissue for pairs"}
    return {"slide": slide.name, "ingest_seconds": round(ingest_seconds, 1), **result.info}


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
    gains = [r["held_out_gain_db"] for r in rows if "held_out_gain_db" in r]
    summary = {
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "options": vars(args) | {"slides": [str(s) for s in args.slides], "json": str(args.json)},
        "mean_gain_db": round(sum(gains) / len(gains), 4) if gains else None,
        "slides": rows,
    }
    print(f"mean held-out gain over {len(gains)} slides: {summary['mean_gain_db']} dB")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
