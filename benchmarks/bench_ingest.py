"""Ingest speed, memory and archive size per codec setting.

For one slide (default: a 20,480 x 20,480 pyramidal JPEG TIFF built from the real tiles),
runs, each in a fresh process:

* a read-only pass over level 0 with the same reader, the same 1036-pixel windows and the
  same number of threads as ingest: the floor ingest cannot beat;
* ``wsistore ingest`` once per codec setting.

Reports source megapixels per second (total and per worker), peak RSS and archive bytes.

    python -m benchmarks.bench_ingest [--slide S] [--codecs jpegxl avif:level=60 ...]
        [--workers N] [--json OUT]
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

DEFAULT_CODECS = (
    "avif:level=75,speed=6",  # the archive default
    "avif:level=60,speed=6",
    "jpegxl:distance=1.0,effort=7",
    "jpegxl:distance=1.0,effort=5",
    "webp:level=85",
    "png",
)

_READ_ONLY = (
    PEAK_RSS_SNIPPET
    + """
import json, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
from wsistore.readers import open_slide
path, reader, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
slide = open_slide(path, reader)
w, h = slide.dimensions
boxes = [(x, y) for y in range(0, h, 1024) for x in range(0, w, 1024)]
def read(xy):
    x, y = xy
    slide.read_region((max(x - 6, 0), max(y - 6, 0)), 0, (min(1036, w - max(x - 6, 0)), min(1036, h - max(y - 6, 0))))
start = time.perf_counter()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(read, boxes))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "reader": slide.name, "peak_mb": peak_mb()}))
"""
)

_INGEST = (
    PEAK_RSS_SNIPPET
    + """
import json, resource, sys, time
from wsistore.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "peak_mb": peak_mb()}))
"""
)


def _run(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def bench(slide: Path, codecs: list[str], workers: int, reader: str, workdir: Path) -> dict[str, Any]:
    from wsistore.archive.reader import Archive
    from wsistore.readers import open_slide

    with open_slide(slide, reader) as s:
        width, height = s.dimensions
        reader_name = s.name
    megapixels = width * height / 1e6
    floor = _run(_READ_ONLY, str(slide), reader, str(workers))
    rows = []
    for codec in codecs:
        out = workdir / f"bench-{len(rows)}.zarr"
        measured = _run(
            _INGEST,
            "ingest",
            str(slide),
            str(out),
            "--codec",
            codec,
            "--workers",
            str(workers),
            "--reader",
            reader,
            "--quiet",
            "--overwrite",
        )
        info = Archive.open(out).info()
        rows.append(
            {
                "codec": codec,
                "seconds": measured["seconds"],
                "source_mp_per_s": megapixels / measured["seconds"],
                "source_mp_per_s_per_worker": megapixels / measured["seconds"] / workers,
                "peak_rss_mb": measured["peak_mb"],
                "archive_bytes": info["archive_bytes"],
                "pyramid_bits_per_source_pixel": info["pyramid_bits_per_source_pixel"],
                "background_dropped": info["background_dropped"],
            }
        )
    return {
        "slide": str(slide),
        "dimensions": [width, height],
        "source_megapixels": megapixels,
        "reader": reader_name,
        "workers": workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "read_only": {
            "seconds": floor["seconds"],
            "source_mp_per_s": megapixels / floor["seconds"],
            "source_mp_per_s_per_worker": megapixels / floor["seconds"] / workers,
            "peak_rss_mb": floor["peak_mb"],
        },
        "ingest": rows,
    }


def to_markdown(result: dict[str, Any]) -> str:
    ro = result["read_only"]
    lines = [
        f"Slide {Path(result['slide']).name}: {result['dimensions'][0]} x {result['dimensions'][1]} "
        f"({result['source_megapixels']:.0f} MP), reader {result['reader']}, {result['workers']} workers, "
        f"{result['machine']}.",
        "",
        "| pass | source MP/s | MP/s per worker | peak RSS MB | archive MB | pyramid bits/px |",
        "|---|---|---|---|---|---|",
        f"| read only (floor) | {ro['source_mp_per_s']:.1f} | {ro['source_mp_per_s_per_worker']:.1f} | "
        f"{ro['peak_rss_mb']:.0f} | | |",
    ]
    for row in result["ingest"]:
        lines.append(
            f"| ingest `{row['codec']}` | {row['source_mp_per_s']:.1f} | {row['source_mp_per_s_per_worker']:.1f} | "
            f"{row['peak_rss_mb']:.0f} | {row['archive_bytes'] / 1e6:.2f} | "
            f"{row['pyramid_bits_per_source_pixel']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", type=Path, help="slide to ingest (default: build a 20k x 20k mosaic of real tiles)")
    parser.add_argument("--codecs", nargs="+", default=list(DEFAULT_CODECS))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reader", default="auto", choices=("auto", "openslide", "tiffslide"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        slide = args.slide
        if slide is None:
            from benchmarks.make_slide import mosaic_layout
            from tests.slides import write_mosaic_slide

            slide = write_mosaic_slide(workdir / "mosaic-20k.tif", mosaic_layout(20, glass_every=4))
        result = bench(slide, args.codecs, args.workers, args.reader, workdir)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
