"""Ingest speed, memory and archive size per codec setting.

For one slide (default: a 20,480 x 20,480 pyramidal JPEG TIFF built from the real tiles),
runs, each in a fresh process:

* a read-only pass over level 0 with the same reader, the same 1036-pixel windows and the
  same number of threads as ingest: the floor ingest cannot beat;
* the same read-only pass in ingest's own pattern: source blocks of whole tiles, each
  decoded once per shard (:class:`wsistore.archive.writer.SourceBlocks`);
* ``wsistore ingest`` once per codec setting;
* with ``--stages``, one more ingest of the first codec with a timer around each stage
  (tissue mask, source read, downsample, loss map, encode, read-back decode, coding PSNR),
  in the thread that does the work.

Reports source megapixels per second (total and per worker), CPU seconds (user + system),
peak RSS, archive bytes and the load average before and after.

    python -m benchmarks.bench_ingest [--slide S] [--codecs jpegxl avif:level=60 ...]
        [--workers N] [--stages] [--json OUT]
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
    "avif:level=75,speed=8",  # the archive default
    "avif:level=75,speed=6",  # the default before 0.1: the same quality, encoded half as fast
    "avif:level=60,speed=8",
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
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds(), "reader": slide.name, "peak_mb": peak_mb()}))
"""
)

_READ_BLOCKS = (
    PEAK_RSS_SNIPPET
    + """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from wsistore.archive.format import DEFAULT_CHUNK, choose_shard
from wsistore.archive.writer import SourceBlocks, source_block
from wsistore.degradation import Downsample, read_window
from wsistore.readers import open_slide
path, reader, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
slide = open_slide(path, reader)
w, h = slide.dimensions
down, c = Downsample(4), DEFAULT_CHUNK
lw, lh = down.lr_size(w, h)
s = choose_shard(lw, lh, c, workers)
def read(box):
    x0, y0, x1, y1 = box
    return slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0))
def shard(xy):
    x0, y0 = xy
    blocks = SourceBlocks(read, w, h, source_block(slide))
    for y in range(y0, min(y0 + s, lh), c):
        blocks.fetch(down.hr_window(x0, y, min(x0 + s, lw), min(y + c, lh)))
        for x in range(x0, min(x0 + s, lw), c):
            read_window(blocks.region, down.hr_window(x, y, min(x + c, lw), min(y + c, lh)), w, h)
        blocks.release(down.hr_window(0, y + c, 0, 0)[1])
start = time.perf_counter()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(shard, [(x, y) for y in range(0, lh, s) for x in range(0, lw, s)]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds(), "reader": slide.name, "peak_mb": peak_mb()}))
"""
)

_INGEST = (
    PEAK_RSS_SNIPPET
    + """
import json, resource, sys, time
from wsistore.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
print(json.dumps({"code": code, "seconds": seconds, "cpu_seconds": cpu_seconds(), "peak_mb": peak_mb()}))
"""
)

#: The stages ``--stages`` times: (module, owner, function, stage). Each timer runs in the
#: thread that calls the function (a worker, or zarr's codec threads for encode and decode).
STAGES = (
    ("wsistore.archive.writer", "", "detect_tissue", "tissue mask"),
    ("wsistore.archive.writer", "_Ingest", "read_level0", "source read (tile decode)"),
    ("wsistore.archive.writer", "SourceBlocks", "region", "window assembly"),
    ("wsistore.degradation", "Downsample", "reduce_window", "downsample"),
    ("wsistore.degradation", "SourceLoss", "of", "loss map (source side)"),
    ("wsistore.degradation", "SourceLoss", "rms", "loss map (finish)"),
    ("wsistore.codecs", "ImageCodec", "encode_image", "encode"),
    ("wsistore.codecs", "ImageCodec", "decode_image", "decode (read-back, levels)"),
    ("wsistore.archive.writer", "", "coding_psnr", "coding PSNR"),
    ("wsistore.archive.writer", "_Ingest", "_level_shard", "pyramid level shards (all of each)"),
)

_INGEST_STAGES = (
    PEAK_RSS_SNIPPET
    + """
import importlib, json, sys, threading, time
from collections import defaultdict
cpu, wall, calls = defaultdict(float), defaultdict(float), defaultdict(int)
lock = threading.Lock()

def timed(module, owner, name, stage):
    target = importlib.import_module(module)
    target = getattr(target, owner) if owner else target
    raw = vars(target)[name]
    is_class = isinstance(raw, classmethod)
    function = raw.__func__ if is_class else raw

    def wrapper(*args, **kwargs):
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            with lock:
                cpu[stage] += time.thread_time() - c0
                wall[stage] += time.perf_counter() - w0
                calls[stage] += 1

    setattr(target, name, classmethod(wrapper) if is_class else wrapper)

for spec in json.loads(sys.argv[1]):
    timed(*spec)
from wsistore.cli import main
start = time.perf_counter()
code = main(sys.argv[2:])
stages = [{"stage": k, "cpu_seconds": cpu[k], "wall_seconds": wall[k], "calls": calls[k]} for k in cpu]
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds(),
                  "peak_mb": peak_mb(), "stages": stages}))
"""
)


def _run(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _ingest_args(slide: Path, out: Path, codec: str, workers: int, reader: str) -> list[str]:
    return [
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
    ]


def _pass(megapixels: float, workers: int, measured: dict[str, Any]) -> dict[str, Any]:
    return {
        "seconds": measured["seconds"],
        "cpu_seconds": measured["cpu_seconds"],
        "source_mp_per_s": megapixels / measured["seconds"],
        "source_mp_per_s_per_worker": megapixels / measured["seconds"] / workers,
        "peak_rss_mb": measured["peak_mb"],
    }


def bench(
    slide: Path, codecs: list[str], workers: int, reader: str, workdir: Path, stages: bool = False
) -> dict[str, Any]:
    from wsistore.archive.reader import Archive
    from wsistore.readers import open_slide

    with open_slide(slide, reader) as s:
        width, height = s.dimensions
        reader_name = s.name
    megapixels = width * height / 1e6
    load_before = os.getloadavg()
    floor = _run(_READ_ONLY, str(slide), reader, str(workers))
    blocks = _run(_READ_BLOCKS, str(slide), reader, str(workers))
    rows = []
    for codec in codecs:
        out = workdir / f"bench-{len(rows)}.zarr"
        measured = _run(_INGEST, *_ingest_args(slide, out, codec, workers, reader))
        info = Archive.open(out).info()
        rows.append(
            {
                "codec": codec,
                **_pass(megapixels, workers, measured),
                "archive_bytes": info["archive_bytes"],
                "pyramid_bits_per_source_pixel": info["pyramid_bits_per_source_pixel"],
                "background_dropped": info["background_dropped"],
            }
        )
    result = {
        "slide": str(slide),
        "dimensions": [width, height],
        "source_megapixels": megapixels,
        "reader": reader_name,
        "workers": workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "read_only": _pass(megapixels, workers, floor),
        "read_only_blocks": _pass(megapixels, workers, blocks),
        "ingest": rows,
    }
    if stages:
        out = workdir / "bench-stages.zarr"
        measured = _run(_INGEST_STAGES, json.dumps(STAGES), *_ingest_args(slide, out, codecs[0], workers, reader))
        result["stages"] = {"codec": codecs[0], **_pass(megapixels, workers, measured), "stages": measured["stages"]}
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


def to_markdown(result: dict[str, Any]) -> str:
    load = result["load_average"]
    lines = [
        f"Slide {Path(result['slide']).name}: {result['dimensions'][0]} x {result['dimensions'][1]} "
        f"({result['source_megapixels']:.0f} MP), reader {result['reader']}, {result['workers']} workers, "
        f"{result['machine']}; load average (1 min) {load['before'][0]:.1f} before, {load['after'][0]:.1f} after.",
        "",
        "| pass | source MP/s | MP/s per worker | CPU s | peak RSS MB | archive MB | pyramid bits/px |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in (
        ("read only, 1036-px windows (floor)", result["read_only"]),
        ("read only, ingest's tile blocks", result["read_only_blocks"]),
    ):
        lines.append(
            f"| {label} | {row['source_mp_per_s']:.1f} | {row['source_mp_per_s_per_worker']:.1f} | "
            f"{row['cpu_seconds']:.1f} | {row['peak_rss_mb']:.0f} | | |"
        )
    for row in result["ingest"]:
        lines.append(
            f"| ingest `{row['codec']}` | {row['source_mp_per_s']:.1f} | {row['source_mp_per_s_per_worker']:.1f} | "
            f"{row['cpu_seconds']:.1f} | {row['peak_rss_mb']:.0f} | {row['archive_bytes'] / 1e6:.2f} | "
            f"{row['pyramid_bits_per_source_pixel']:.3f} |"
        )
    if "stages" in result:
        timed = result["stages"]
        lines += [
            "",
            f"Time per stage, ingest `{timed['codec']}` with timers ({timed['source_mp_per_s']:.1f} source MP/s, "
            f"{timed['seconds']:.1f} s wall, {timed['cpu_seconds']:.1f} CPU s in all):",
            "",
            "| stage | CPU s (its own thread) | wall s (summed over threads) | calls |",
            "|---|---|---|---|",
        ]
        for stage in timed["stages"]:
            lines.append(
                f"| {stage['stage']} | {stage['cpu_seconds']:.2f} | {stage['wall_seconds']:.2f} | {stage['calls']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", type=Path, help="slide to ingest (default: build a 20k x 20k mosaic of real tiles)")
    parser.add_argument("--codecs", nargs="+", default=list(DEFAULT_CODECS))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reader", default="auto", choices=("auto", "openslide", "tiffslide"))
    parser.add_argument("--stages", action="store_true", help="also time each stage of one ingest (first codec)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        slide = args.slide
        if slide is None:
            from benchmarks.make_slide import mosaic_layout
            from tests.slides import write_mosaic_slide

            slide = write_mosaic_slide(workdir / "mosaic-20k.tif", mosaic_layout(20, glass_every=4))
        result = bench(slide, args.codecs, args.workers, args.reader, workdir, args.stages)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
