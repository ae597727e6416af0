"""napari's responsiveness over an archive at full resolution (issue 40), on Xvfb.

A 1024 x 1024 canvas at 1 screen pixel per source pixel (level 0): the view is panned ``--pans``
times by 1536 source pixels (each view all new, and off the compute grid, so it meets four
compute tiles), over the tissue of a 6 x 6 mosaic of real H&E tiles (or ``--archive``); then
the same views again (cached). Each run is a fresh process (cold caches, model loaded once):

* ``plugin``: the archive opened through the plugin, as ``napari --plugin wsistore`` does;
* ``blocking``: the same layer with level 0 as the exact lazy array, ``to_dask(0)``, sliced by
  napari's default synchronous slicing: what a plain dask pyramid does to napari;
* ``async``: the same, with napari's experimental asynchronous slicing on.

Per pan: the time until napari first shows the new view (``first``; stand-ins from the stored
level in the plugin), the time until the view is filled with restored pixels (``filled``), and
the longest the GUI event loop went without running (``stall``: the largest gap between the
ticks of a 10 ms Qt timer). Per run: CPU (user + system seconds over wall seconds, 2.0 = both
cores busy) and resident memory (peak) while panning.

    python -m benchmarks.bench_napari [--archive A.zarr] [--pans 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("plugin", "blocking", "async")
VIEW = 1024
STEP = 1536


def mosaic_archive(folder: Path) -> Path:
    """A 6 x 6 mosaic of real tiles (6144 px square, no glass cells), ingested by the CLI with
    its defaults (per-slide adaptation and restorer choice included)."""
    from tests.data import tile_names
    from tests.slides import write_mosaic_slide
    from wsistore.cli import main as cli

    names = [n for n in tile_names() if "monuseg" in n]
    layout: list[list[str | None]] = [[names[(6 * i + j) % len(names)] for j in range(6)] for i in range(6)]
    slide = write_mosaic_slide(folder / "mosaic.tif", layout)
    out = folder / "mosaic.zarr"
    if cli(["ingest", str(slide), str(out), "--quiet"]) != 0:
        raise SystemExit("ingest failed")
    return out


def views(width: int, height: int, pans: int) -> list[tuple[int, int]]:
    """Centres of ``pans + 1`` views, ``STEP`` apart, serpentine, inside the slide."""
    xs = list(range(VIEW // 2 + 200, width - VIEW // 2, STEP))
    ys = list(range(VIEW // 2 + 200, height - VIEW // 2, STEP))
    path = [(x, y) for i, y in enumerate(ys) for x in (xs if i % 2 == 0 else xs[::-1])]
    if len(path) < pans + 1:
        raise SystemExit(f"the slide has room for {len(path) - 1} pans, not {pans}")
    return path[: pans + 1]


def run_mode(archive: str, mode: str, pans: int) -> dict[str, Any]:
    """One run, in this process: open, pan cold, pan again cached."""
    import psutil

    from benchmarks.napari_view import look_at, set_canvas, spin, virtual_display

    with virtual_display():
        import napari
        from napari.settings import get_settings
        from qtpy.QtCore import QTimer

        get_settings().experimental.async_ = mode == "async"  # the temporary settings file
        viewer = napari.Viewer(show=True)
        ticks: list[float] = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(time.monotonic()))
        timer.start(10)
        process = psutil.Process()
        start = time.monotonic()
        image = _open(viewer, archive, mode)
        set_canvas(viewer, VIEW, VIEW)
        spin(until=lambda: image.loaded)
        opened = time.monotonic() - start
        height, width = image.level_shapes[0]
        path = views(int(width), int(height), pans)
        look_at(viewer, image, *path[0])
        spin(until=lambda: _filled(image, mode, path[0]))

        cpu0, wall0, rss = sum(process.cpu_times()[:2]), time.monotonic(), [process.memory_info().rss]
        sampler = QTimer()
        sampler.timeout.connect(lambda: rss.append(process.memory_info().rss))
        sampler.start(50)
        cold = [_pan(viewer, image, mode, centre, ticks) for centre in path[1:]]
        cpu = (sum(process.cpu_times()[:2]) - cpu0) / (time.monotonic() - wall0)
        cached = [_pan(viewer, image, mode, centre, ticks) for centre in path[:-1][::-1]]
        sampler.stop()
        timer.stop()
        viewer.close()
    return {
        "mode": mode,
        "opened_s": opened,
        "cold": cold,
        "cached": cached,
        "cpu_cores_busy_cold": cpu,
        "rss_mb_before": rss[0] / 2**20,
        "rss_mb_peak": max(rss) / 2**20,
    }


def _open(viewer: Any, archive: str, mode: str) -> Any:
    if mode == "plugin":
        return viewer.open(archive, plugin="wsistore")[0]
    import wsistore
    from wsistore.napari_plugin.reader import archive_layers

    slide = wsistore.open(archive)
    (pyramid, kwargs, _), *_ = archive_layers(slide)
    pyramid[0].close()
    return viewer.add_image([slide.to_dask(0), *pyramid[1:]], **kwargs)


def _covers(image: Any, centre: tuple[int, int]) -> bool:
    (y0, x0), (y1, x1) = (image.corner_pixels[i][:2] for i in (0, 1))
    x, y = centre
    inside = x0 <= x - VIEW // 2 and y0 <= y - VIEW // 2 and x1 >= x + VIEW // 2 - 1 and y1 >= y + VIEW // 2 - 1
    return bool(image.data_level == 0 and inside)


def _filled(image: Any, mode: str, centre: tuple[int, int]) -> bool:
    if not _covers(image, centre):
        return False
    if mode == "plugin":
        level = image.data[0]
        return bool(level.pending == 0 and level.last_read_complete)
    return bool(image.loaded)


def _pan(viewer: Any, image: Any, mode: str, centre: tuple[int, int], ticks: list[float]) -> dict[str, float]:
    from benchmarks.napari_view import look_at, spin

    t0 = time.monotonic()
    look_at(viewer, image, *centre)
    spin(until=lambda: _covers(image, centre) and image.loaded)
    first = time.monotonic() - t0
    spin(until=lambda: _filled(image, mode, centre), timeout=300)
    end = time.monotonic()
    window = [t0, *(t for t in ticks if t0 < t < end), end]
    return {"first_s": first, "filled_s": end - t0, "stall_s": float(np.max(np.diff(window)))}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    def stats(pans: list[dict[str, float]], key: str) -> tuple[float, float]:
        values = [p[key] for p in pans]
        return float(np.median(values)), float(np.max(values))

    keys = ("first_s", "filled_s", "stall_s")
    return {kind: {key: stats(result[kind], key) for key in keys} for kind in ("cold", "cached")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", help="an archive (default: a 6 x 6 mosaic of real tiles, ingested here)")
    parser.add_argument("--pans", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--run-mode", help=argparse.SUPPRESS)  # one run, in a fresh process
    args = parser.parse_args(argv)
    if args.run_mode:
        print(json.dumps(run_mode(args.archive, args.run_mode, args.pans)))
        return 0
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="wsistore-bench-napari-") as tmp:
        archive = args.archive or str(mosaic_archive(Path(tmp)))
        import wsistore

        with wsistore.open(archive) as slide:  # int8 is built once per weights and adaptation, then cached
            slide.tile(0, 0)
        results = []
        for mode in args.modes:
            cmd = [sys.executable, "-m", "benchmarks.bench_napari", "--archive", archive, "--pans", str(args.pans)]
            out = subprocess.run([*cmd, "--run-mode", mode], check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results.append(result)
            print(f"{mode}: opened {result['opened_s']:.2f} s, {json.dumps(summary(result))}", flush=True)
            print(
                f"  CPU {result['cpu_cores_busy_cold']:.2f} cores busy panning cold; RSS {result['rss_mb_before']:.0f}"
                f" MB before, {result['rss_mb_peak']:.0f} MB peak",
                flush=True,
            )
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": load,
        "view": VIEW,
        "step": STEP,
        "results": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
