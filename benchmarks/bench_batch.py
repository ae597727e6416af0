"""Batch ingest: the same 8 slides serially in one process against one task per slide on a
2-worker dask LocalCluster (127.0.0.1), each run in a fresh process.

The slides are pyramidal JPEG TIFFs built from the real tiles (``--cells`` x ``--cells``
cells of 1024 pixels, each slide its own arrangement of tiles and glass). Serially each
slide's shards run on ``--workers`` threads (default: all cores); on the cluster each
worker process ingests one slide at a time with ``--workers`` divided among the workers.
Reports slides per second and source megapixels per second (the batch alone, and with
the cluster's start), and the peak RSS of the serial process and of each cluster worker.
The archives of both runs are compared byte for byte (``created`` times aside).

    python -m benchmarks.bench_batch [--slides 8] [--cells 6] [--cluster-workers 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.measure import PEAK_RSS_SNIPPET
from benchmarks.reliability.faults import compare_archives
from tests.data import tile_names
from tests.slides import write_mosaic_slide

_BATCH = (
    PEAK_RSS_SNIPPET
    + """
import json, sys, time
start = time.perf_counter()
from wsistore.archive.writer import IngestOptions
from wsistore.batch import ClusterOptions, IngestJob, connect, plan, run_batch
slides, out, workers, cluster = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from pathlib import Path
Path(out).mkdir()
tasks = plan(sorted(Path(slides).glob("*.tif")), Path(out), ".zarr")
job = IngestJob(IngestOptions(workers=workers, progress=False))
with connect(ClusterOptions(local_workers=cluster or None)) as client:
    began = time.perf_counter()
    rows = run_batch(tasks, job, client, progress=False)
    batch = time.perf_counter() - began
    peaks = sorted(client.run(peak_mb).values()) if client else []
print(json.dumps({"batch_seconds": batch, "total_seconds": time.perf_counter() - start, "peak_mb": peak_mb(),
                  "worker_peaks_mb": peaks, "failed": [r.error for r in rows if r.status != "ok"]}))
"""
)


def make_slides(folder: Path, count: int, cells: int) -> list[Path]:
    """``count`` slides of ``cells`` x ``cells`` real tiles, each arranged differently, one
    cell in five glass."""
    names = [n for n in tile_names() if "monuseg" in n]
    paths = []
    for s in range(count):
        layout: list[list[str | None]] = [
            [
                None if (i * cells + j + s) % 5 == 0 else names[(i * cells + j + 7 * s) % len(names)]
                for j in range(cells)
            ]
            for i in range(cells)
        ]
        paths.append(write_mosaic_slide(folder / f"slide-{s}.tif", layout))
    return paths


def _run(slides: Path, out: Path, workers: int, cluster: int) -> dict[str, Any]:
    argv = [sys.executable, "-c", _BATCH, str(slides), str(out), str(workers), str(cluster)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result = dict(json.loads(done.strip().splitlines()[-1]))
    if result.pop("failed"):
        raise RuntimeError(f"slides failed in {out}")
    return result


def bench(count: int, cells: int, workers: int, cluster_workers: int, workdir: Path) -> dict[str, Any]:
    slides = workdir / "slides"
    slides.mkdir()
    paths = make_slides(slides, count, cells)
    megapixels = count * (cells * 1024) ** 2 / 1e6
    load_before = os.getloadavg()
    runs = {
        "serial": _run(slides, workdir / "serial", workers, 0),
        "cluster": _run(slides, workdir / "cluster", max(1, workers // cluster_workers), cluster_workers),
    }
    rows = {}
    for name, r in runs.items():
        rows[name] = r | {
            "slides_per_s": count / r["batch_seconds"],
            "source_mp_per_s": megapixels / r["batch_seconds"],
            "slides_per_s_with_start": count / r["total_seconds"],
        }
    diffs = [
        d
        for p in paths
        for d in compare_archives(workdir / "cluster" / f"{p.stem}.zarr", workdir / "serial" / f"{p.stem}.zarr")
    ]
    return {
        "slides": count,
        "slide_size": [cells * 1024, cells * 1024],
        "source_megapixels": megapixels,
        "slide_workers_serial": workers,
        "cluster_workers": cluster_workers,
        "slide_workers_cluster": max(1, workers // cluster_workers),
        "runs": rows,
        "archives_identical": not diffs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--cells", type=int, default=6, help="cells per side (1024 px each)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads in all (default: all cores)")
    parser.add_argument("--cluster-workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = bench(args.slides, args.cells, args.workers, args.cluster_workers, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
