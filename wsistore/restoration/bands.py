"""Streaming the restored level 0 as full-width rows, a band of compute tiles at a time.

Output formats store rows of tiles, while the generator works in bands of compute
tiles. This computes each band once with Dask (threads decode and restore while the GPU
works), computes the next band while the caller encodes the current one, and keeps only
the bands the current row needs: host memory stays about three bands whatever the slide's
height.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import dask.array as da
import numpy as np


def iter_rows(
    level0: da.Array,
    row_height: int,
    skip: set[int],
    threads: int,
    on_band: Callable[[int], None] = lambda n: None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, rows)`` for each row of ``row_height`` pixels of ``level0`` not in ``skip``.

    ``level0`` is the restored level (possibly a region of it), one Dask block per
    compute tile; ``on_band`` receives the number of blocks of each band computed.
    """
    height = int(level0.shape[0])
    edges = [0, *itertools.accumulate(level0.chunks[0])]
    count = -(-height // row_height)
    todo = [k for k in range(count) if k not in skip]

    def bands_of(k: int) -> range:
        y0, y1 = k * row_height, min((k + 1) * row_height, height)
        return range(bisect.bisect_right(edges, y0) - 1, bisect.bisect_left(edges, y1))

    order = list(dict.fromkeys(b for k in todo for b in bands_of(k)))
    blocks_per_band = len(level0.chunks[1])
    pool = ThreadPoolExecutor(threads, thread_name_prefix="wsistore-restore")
    driver = ThreadPoolExecutor(1, thread_name_prefix="wsistore-bands")
    futures: dict[int, Future[np.ndarray]] = {}  # submitted bands still needed
    submitted: set[int] = set()

    def compute(b: int) -> np.ndarray:
        band = np.asarray(level0[edges[b] : edges[b + 1]].compute(scheduler="threads", pool=pool))
        on_band(blocks_per_band)
        return band

    def submit_through(position: int) -> None:
        for b in order[: position + 1]:
            if b not in submitted:
                submitted.add(b)
                futures[b] = driver.submit(compute, b)

    try:
        for k in todo:
            needed = bands_of(k)
            submit_through(order.index(needed[-1]) + 1)  # this row's bands and the next one
            for b in [b for b in futures if b < needed[0]]:
                del futures[b]
            y0, y1 = k * row_height, min((k + 1) * row_height, height)
            parts = [
                futures[b].result()[max(y0, edges[b]) - edges[b] : min(y1, edges[b + 1]) - edges[b]] for b in needed
            ]
            yield k, parts[0] if len(parts) == 1 else np.concatenate(parts)
    finally:
        for future in futures.values():
            future.cancel()
        driver.shutdown(wait=False, cancel_futures=True)
        pool.shutdown(wait=False, cancel_futures=True)
