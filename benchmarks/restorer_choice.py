"""Per-chunk restorer choice (issue 36, format 1.7): for each slide, ingest it as the CLI does
(the adaptation tuned, each chunk's restorer chosen from a sample, :class:`ChoicePolicy`) and,
beside it, as before format 1.7 (no choice), timing both; then measure every tissue chunk's
SSE against the source by the generator (with the archive's adaptation, at restore's default
precision) and by bicubic, exactly as restore computes them, to check the archive's choice:

- how many chunks the generator wins, and the per-chunk gains (dB, generator over bicubic);
- whether the choice from the sample equals the per-chunk optimum on every chunk;
- whether the restore (each chunk by its chosen restorer) is at least bicubic's PSNR on every
  chunk, and the whole-image PSNR of the generator alone, bicubic alone and the restore.

    python -m benchmarks.restorer_choice SLIDE... [--json benchmarks/reports/restorer-choice.json]
        [--no-adapt] [--skip-timing]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from wsistore.archive.format import BICUBIC
from wsistore.archive.hybrid_choice import sse
from wsistore.archive.reader import Archive
from wsistore.archive.restorer_choice import gain_db
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.psnr import psnr_from_mse
from wsistore.readers import open_slide
from wsistore.restoration.hybrid import SrPath
from wsistore.training.adapt import AdaptOptions


def ingest_timed(slide: Path, out: Path, adapt: bool, choose: bool) -> float:
    """Seconds to ingest ``slide`` as the CLI does (``choose``: with the restorer choice)."""
    options = IngestOptions(
        adapt=AdaptOptions() if adapt else None, upscaler=SrPath() if choose else None, progress=False, overwrite=True
    )
    start = time.perf_counter()
    ingest(slide, out, options)
    return time.perf_counter() - start


def every_chunk(slide: Path, archive_path: Path) -> dict[str, Any]:
    """Every tissue chunk's SSE by each restorer, against the archive's choice."""
    archive = Archive.open(archive_path)
    md = archive.metadata
    base = archive.level(0)
    stored = None
    if md.stored_adaptation is not None:
        stored = (archive.adaptation() or b"", md.stored_adaptation)
    sr = SrPath().open(base, (md.width, md.height), archive.codec, stored)
    chosen = archive.bicubic_chunks
    side = md.scale * md.chunk
    rows = []
    totals = {"generator": 0, "bicubic": 0, "restore": 0, "pixels": 0}
    try:
        with open_slide(slide) as source:
            for r in range(-(-base.height // base.chunk)):
                for q in range(-(-base.width // base.chunk)):
                    if base.chunk_state(r, q) == "background":
                        continue
                    box = (q * side, r * side, min((q + 1) * side, md.width), min((r + 1) * side, md.height))
                    truth = source.read_region((box[0], box[1]), 0, (box[2] - box[0], box[3] - box[1]))
                    generator, bicubic = sse(sr.read(box), truth), sse(sr.read(box, BICUBIC), truth)
                    restore = bicubic if (r, q) in chosen else generator
                    rows.append(
                        {
                            "chunk": [r, q],
                            "gain_db": round(gain_db(generator, bicubic), 3),
                            "chosen": BICUBIC if (r, q) in chosen else "generator",
                            "optimal": BICUBIC if bicubic < generator else "generator",
                            "restore_at_least_bicubic": restore <= bicubic,
                        }
                    )
                    for key, value in (("generator", generator), ("bicubic", bicubic), ("restore", restore)):
                        totals[key] += value
                    totals["pixels"] += truth.size
    finally:
        sr.close()
    n = max(totals["pixels"], 1)
    return {
        "chunks": len(rows),
        "generator_wins": sum(row["gain_db"] > 0 for row in rows),
        "chosen_bicubic": sum(row["chosen"] == BICUBIC for row in rows),
        "choice_equals_optimum": sum(row["chosen"] == row["optimal"] for row in rows),
        "restore_at_least_bicubic_everywhere": all(row["restore_at_least_bicubic"] for row in rows),
        "psnr_tissue_chunks": {k: round(psnr_from_mse(totals[k] / n), 3) for k in ("generator", "bicubic", "restore")},
        "gain_db": sorted(row["gain_db"] for row in rows),
        "record": md.restorers,
        "adaptation_kept": bool(md.stored_adaptation),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slides", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/reports/restorer-choice.json"))
    parser.add_argument("--no-adapt", action="store_true", help="ingest without the adaptation")
    parser.add_argument("--skip-timing", action="store_true", help="do not time an ingest without the choice")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for slide in args.slides:
            out = Path(tmp) / f"{slide.stem}.zarr"
            entry: dict[str, Any] = {"slide": slide.name}
            if not args.skip_timing:
                entry["ingest_s_without_choice"] = round(ingest_timed(slide, out, not args.no_adapt, False), 1)
            entry["ingest_s"] = round(ingest_timed(slide, out, not args.no_adapt, True), 1)
            entry |= every_chunk(slide, out)
            results.append(entry)
            gains = entry["gain_db"]
            print(
                f"{slide.name}: {entry['chunks']} chunks, generator wins {entry['generator_wins']}, "
                f"bicubic chosen {entry['chosen_bicubic']}, choice = optimum on {entry['choice_equals_optimum']}, "
                f"gain {gains[0]:+.2f}..{gains[-1]:+.2f} dB, PSNR {entry['psnr_tissue_chunks']}, "
                f"ingest {entry.get('ingest_s_without_choice')} -> {entry['ingest_s']} s",
                flush=True,
            )
    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "slides": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
