"""Hybrid archives of real slides, end to end through the CLI (issue 26).

For each slide (default: the real slides of ``benchmarks.ood_report.REAL_SLIDES``, one per
scanner format, none seen in training), in a scratch folder:

* ``wsistore ingest --mode sr`` and ``--mode hybrid`` with the defaults (adaptation included),
  each timed, and what ``info --json`` says of the hybrid one (chunks and bytes per mode);
* ``wsistore verify --against SLIDE`` of the hybrid archive (every chunk, both kinds, against
  the source pixels);
* a lossless TIFF restore of the whole slide, then two regions across chunk borders (covering
  HR and SR chunks where the slide has both) restored on their own at another tile size, and
  read on demand through ``wsistore.open``: each must equal the full restore's crop exactly.

Writes one JSON record per slide (``--json``) and exits non-zero when a check fails.

    python -m benchmarks.hybrid_roundtrip [--slides S ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

import wsistore
from benchmarks.ood_report import REAL_SLIDES


def _cli(*args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "wsistore", *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"wsistore {' '.join(map(str, args))}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _timed_ingest(slide: Path, archive: Path, *extra: str) -> float:
    start = time.perf_counter()
    _cli("ingest", slide, archive, "--quiet", *extra)
    return round(time.perf_counter() - start, 2)


def _regions(width: int, height: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """Two regions across the first chunk borders (or the whole slide when it is one chunk)."""
    out = []
    for fx, fy in ((0.4, 0.3), (0.7, 0.6)):
        x, y = int(width * fx) // 8 * 8, int(height * fy) // 8 * 8
        w, h = min(chunk + 300, width - x), min(chunk + 200, height - y)
        out.append((x, y, w, h))
    return out


def roundtrip(slide: Path, folder: Path) -> dict[str, Any]:
    """One slide's record (see the module docstring)."""
    sr, hybrid = folder / "sr.zarr", folder / "hybrid.zarr"
    record: dict[str, Any] = {"slide": slide.name}
    record["ingest_s"] = {"sr": _timed_ingest(slide, sr), "hybrid": _timed_ingest(slide, hybrid, "--mode", "hybrid")}
    info = json.loads(_cli("info", hybrid, "--json"))
    record["chunk_modes"] = info["chunk_modes"]
    record["image_bpp"] = {
        "sr": json.loads(_cli("info", sr, "--json"))["image_bits_per_source_pixel"],
        "hybrid": info["image_bits_per_source_pixel"],
    }
    verified = json.loads(_cli("verify", hybrid, "--against", slide, "--json"))
    record["verify_against"] = {k: verified.get(k) for k in ("ok", "chunks", "against")}
    full_tif = folder / "full.tif"
    start = time.perf_counter()
    _cli("restore", hybrid, full_tif, "--lossless", "--device", "cpu", "--quiet")
    record["restore_s"] = round(time.perf_counter() - start, 2)
    full = tifffile.imread(full_tif)
    height, width = full.shape[:2]
    record["size"] = [width, height]
    chunk = info["hybrid"]["hr_chunk"]
    checks = []
    with wsistore.open(hybrid, device="cpu") as opened:
        for i, (x, y, w, h) in enumerate(_regions(width, height, chunk)):
            crop = full[y : y + h, x : x + w]
            out = folder / f"region{i}.tif"
            _cli("restore", hybrid, out, "--lossless", "--device", "cpu", "--quiet", "--tile", "256",
                 "--region", f"{x},{y},{w},{h}")  # fmt: skip
            on_demand = np.asarray(opened.read_region((x, y), 0, (w, h)).convert("RGB"))
            checks.append(
                {
                    "region": [x, y, w, h],
                    "restore_region_equal": bool(np.array_equal(tifffile.imread(out), crop)),
                    "read_region_equal": bool(np.array_equal(on_demand, crop)),
                }
            )
    record["regions"] = checks
    regions_ok = all(c["restore_region_equal"] and c["read_region_equal"] for c in checks)
    record["ok"] = bool(verified.get("ok")) and regions_ok
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", nargs="+", type=Path, default=REAL_SLIDES)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    records = []
    for slide in args.slides:
        with tempfile.TemporaryDirectory(prefix="wsistore-hybrid-") as folder:
            records.append(roundtrip(slide, Path(folder)))
        print(json.dumps(records[-1]), flush=True)
    result = {"machine": f"{platform.machine()}, {platform.python_version()}", "slides": records}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if not all(r["ok"] for r in records):
        raise SystemExit("a hybrid round trip failed (see the records above)")


if __name__ == "__main__":
    main()
