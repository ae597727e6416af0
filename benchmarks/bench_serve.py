"""``wsistore serve`` latency and throughput at full resolution, against 127.0.0.1.

Ingests the embedded sample slide (or ``--archive``), serves it with a model (default: the
default model) on the CPU, and measures full-resolution DeepZoom tiles (the finest,
super-resolved level), JPEG, without ``If-None-Match`` (no 304s):

* cold: each tile once, one at a time, from a server whose restored-tile cache is off, so
  every request runs the generator on the compute tiles it needs;
* first visit under load: ``--clients`` threads share every full-resolution tile of the
  slide in a random order, each requested once, from a fresh server with its cache on (a
  user panning into new areas): tiles per second and latency;
* cached: the timed tiles again, one at a time, from a server that has restored them all;
* cached under load: ``--clients`` threads request random full-resolution tiles in a closed
  loop for ``--seconds``: tiles per second sustained and latency.

    python -m benchmarks.bench_serve [--model NAME] [--clients 8] [--seconds 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def _server(archive: Path, model: str | None, cache_bytes: int) -> Iterator[tuple[str, list[str]]]:
    """The app on 127.0.0.1; yields its URL and every full-resolution tile path."""
    from wsistore.serve.app import build_app, open_slides
    from wsistore.serve.server import ServerThread

    slides = open_slides([archive], model, "cpu", cache_bytes=cache_bytes)
    served = slides[0]
    zoom = served.zoom()
    level = zoom.level_count - 1
    cols, rows = zoom.level_tiles[level]
    paths = [f"/slides/{served.name}/{served.version}/{level}/{c}_{r}.jpeg" for r in range(rows) for c in range(cols)]
    with ServerThread(build_app(slides)) as server:
        yield server.url, paths


def _get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as reply:
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status}")
    return time.perf_counter() - start


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"n": int(ms.size), "p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean())}  # fmt: skip


def _clients(url: str, clients: int, next_path: Callable[[int], str | None]) -> dict[str, float]:
    """``clients`` threads, each requesting ``next_path(k)`` as soon as its last tile came,
    until it gives None: tiles per second over the whole run and the latencies."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        while (path := next_path(k)) is not None:
            took = _get(url + path)
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "seconds": wall, "tiles_per_s": len(latencies) / wall, **_stats(latencies)}


def _load(url: str, paths: list[str], clients: int, seconds: float, seed: int = 0) -> dict[str, float]:
    """Closed loop for ``seconds``: each client requests a random tile as soon as the last came."""
    rngs = [random.Random(seed + k) for k in range(clients)]
    deadline = time.perf_counter() + seconds
    return _clients(url, clients, lambda k: rngs[k].choice(paths) if time.perf_counter() < deadline else None)


def _first_visit(url: str, paths: list[str], clients: int, seed: int = 0) -> dict[str, float]:
    """The clients take every tile once from a shared, shuffled queue."""
    queue = random.Random(seed).sample(paths, len(paths))
    lock = threading.Lock()

    def take(_: int) -> str | None:
        with lock:
            return queue.pop() if queue else None

    return _clients(url, clients, take)


def measure(archive: Path, model: str | None, clients: int, seconds: float, tiles: int) -> dict[str, Any]:
    """Cold, cached and loaded full-resolution tile figures of ``archive``."""
    result: dict[str, Any] = {}
    with _server(archive, model, cache_bytes=0) as (url, paths):
        sample = random.Random(1).sample(paths, min(tiles, len(paths)))
        _get(url + sample[0])  # the model is loaded and warmed once
        result["tiles_at_full_resolution"] = len(paths)
        result["cold"] = _stats([_get(url + p) for p in sample[1:]])
    with _server(archive, model, cache_bytes=1 << 30) as (url, paths):
        _get(url + sample[0])
        result["first_visit_under_load"] = _first_visit(url, paths, clients)
        result["cached"] = _stats([_get(url + p) for p in sample[1:]])
        result["load_cached"] = _load(url, paths, clients, seconds)
    return result


def main() -> None:
    import torch

    import wsistore
    from wsistore.models.weights import default_model
    from wsistore.sample import sample_slide_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, help="a wsistore archive (default: the sample slide, ingested)")
    parser.add_argument("--model", default=None, help="model name or path (default: the default model)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tiles", type=int, default=25, help="tiles timed one at a time, cold and cached")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = args.archive
        if archive is None:
            archive = Path(tmp) / "sample.zarr"
            wsistore.ingest(sample_slide_path(), archive)
        result = measure(archive, args.model, args.clients, args.seconds, args.tiles)
    result["model"] = args.model or default_model()
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
