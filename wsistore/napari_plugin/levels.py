"""The pyramid levels as a viewer reads them: level 0 never waits, damage is shown, not hidden.

napari slices a layer on its GUI thread (unless its experimental async slicing is on), so a
level 0 that restored on indexing would freeze the viewer for as long as the generator runs.
:class:`ProgressiveLevel` answers at once instead: a compute tile already restored is given as
restored (the pixels of :meth:`RestoredSlide.read_region`); any other tile is given as the
stored LR it is restored from, upsampled by pixel replication (the coarser level, plainly
blocky), and queued for restoring on background threads, the tiles of the latest request first
(nearest its centre) and those no longer asked for dropped. ``on_ready(level)`` is called from
a background thread whenever a tile lands, for the viewer to ask again.

:class:`StoredLevel` is a level of the stored pyramid: its chunks are decoded (and checked) on
the calling thread, as any Zarr viewer does, and cached.

Nothing is ever shown as a guess: a tile or chunk that cannot be read or restored (a damaged or
missing chunk) is painted :data:`DAMAGED_RGB`, and its error, the archive's message naming the
chunk, goes to ``on_error(message)`` once.

No napari or Qt here: the plugin wires the callbacks to its GUI (:mod:`.reader`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from wsistore.archive.reader import Archive
from wsistore.geometry import Box
from wsistore.restoration.cache import SingleFlightCache
from wsistore.restoration.engine import assemble
from wsistore.restoration.ondemand import RestoredSlide

#: The colour of a tile or chunk that could not be read or restored (its error is reported).
DAMAGED_RGB = (255, 0, 255)
#: Decoded stored chunks kept per level (stand-ins of level 0, or a stored level's pixels).
STORED_CACHE_BYTES = 64 << 20

Block = tuple[int, int]


class _Level:
    """An ``(y, x, 3)`` uint8 array-like over blocks of ``block`` pixels: ``shape``, ``dtype``,
    ``ndim``, dask-style ``chunks`` (a viewer that reads whole blocks asks for whole blocks),
    indexing by ints and slices; errors reported once each."""

    def __init__(self, height: int, width: int, block: int, on_error: Callable[[str], None] | None) -> None:
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.chunks = (
            tuple(min(block, height - y) for y in range(0, height, block)),
            tuple(min(block, width - x) for x in range(0, width, block)),
            (3,),
        )
        self.on_error = on_error
        self._lock = threading.Lock()
        self._failed: dict[Block, str] = {}

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def errors(self) -> dict[Block, str]:
        """The blocks that could not be read or restored, with why."""
        with self._lock:
            return dict(self._failed)

    def _fail(self, block: Block, message: str, report: bool = True) -> None:
        """Record that ``block`` failed; report ``message`` unless this level already did."""
        with self._lock:
            new = message not in self._failed.values()
            self._failed[block] = message
        if report and new and self.on_error is not None:
            self.on_error(message)


class StoredLevel(_Level):
    """Level ``index`` of ``archive``'s stored pyramid (0 = the LR base), for a viewer."""

    def __init__(self, archive: Archive, index: int, on_error: Callable[[str], None] | None = None) -> None:
        self.reader = archive.level(index)
        super().__init__(self.reader.height, self.reader.width, self.reader.chunk, on_error)
        self._chunks: SingleFlightCache[Block] = SingleFlightCache(STORED_CACHE_BYTES)

    def __getitem__(self, key: Any) -> np.ndarray:
        (y0, y1), (x0, x1), rest = _region(key, self.shape)
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        side = self.reader.chunk
        for r, q in self.reader.chunks_in((x0, y0, x1, y1)):
            pixels = self.chunk(r, q)
            ax0, ay0, ax1, ay1 = max(x0, q * side), max(y0, r * side), min(x1, (q + 1) * side), min(y1, (r + 1) * side)
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = pixels[
                ay0 - r * side : ay1 - r * side, ax0 - q * side : ax1 - q * side
            ]
        return out[rest]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole level (napari materializes its coarsest level for the thumbnail)."""
        return np.asarray(self[:, :], dtype=dtype)

    def chunk(self, row: int, col: int) -> np.ndarray:
        """The pixels of chunk ``(row, col)``, decoded and checked once (painted if damaged)."""
        box = _chunk_box(self.reader.chunk, row, col, self.shape)
        if (row, col) in self._failed:
            return _damaged(box)
        try:
            return self._chunks.get((row, col), lambda: self.reader.read(box))
        except Exception as exc:  # reported, and painted: never a silent guess
            self._fail((row, col), _message(exc))
            return _damaged(box)


class ProgressiveLevel(_Level):
    """Level 0 of ``slide`` (the restored full resolution) for a viewer: indexing never waits
    for the generator (see the module's description)."""

    def __init__(
        self,
        slide: RestoredSlide,
        on_ready: Callable[[ProgressiveLevel], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        workers: int = 2,
    ) -> None:
        """``workers`` background threads restore tiles (the generator itself uses every core;
        a second thread decodes and pastes while the first waits on it, or batches on a GPU)."""
        grid = slide.grid
        super().__init__(grid.height, grid.width, grid.hr_tile, on_error)
        self.slide = slide
        self.on_ready = on_ready
        self.stored = StoredLevel(slide.archive, 0, on_error)
        self._cond = threading.Condition(self._lock)
        self._wanted: list[Block] = []
        self._running: set[Block] = set()
        self._closed = False
        #: whether the latest read was restored everywhere (no stand-in, no damaged tile)
        self.last_read_complete = False
        self._threads = [
            threading.Thread(target=self._work, name=f"wsistore-progressive-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Tiles queued or being restored."""
        with self._cond:
            return len(self._wanted) + len(self._running)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no tile is queued or being restored; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._wanted and not self._running, timeout)

    def __getitem__(self, key: Any) -> np.ndarray:
        (y0, y1), (x0, x1), rest = _region(key, self.shape)
        missing: list[Block] = []
        complete = True

        def pixels(rc: Block) -> np.ndarray:
            nonlocal complete
            restored = self.slide.cached_tile(*rc)
            if restored is not None:
                return restored
            complete = False
            return self._stand_in(rc, missing)

        out = assemble(self.slide.grid, (x0, y0, x1, y1), pixels)
        self._request(missing, ((x0 + x1) / 2, (y0 + y1) / 2))
        self.last_read_complete = complete
        return out[rest]

    def close(self) -> None:
        """Stop the background threads (queued tiles are dropped)."""
        with self._cond:
            self._closed = True
            self._wanted.clear()
            self._cond.notify_all()

    def __repr__(self) -> str:
        return f"ProgressiveLevel({self.slide!r}, shape={self.shape})"

    # -- internals ---------------------------------------------------------------------
    def _stand_in(self, rc: Block, missing: list[Block]) -> np.ndarray:
        """What tile ``rc``, not restored, shows: the damage colour, or the stored LR under it
        upsampled by pixel replication (then it is added to ``missing``)."""
        grid = self.slide.grid
        box = grid.hr_box(*rc)
        if rc in self._failed:
            return _damaged(box)
        x0, y0, x1, y1 = core = grid.core(*rc)
        lr = self.stored[y0:y1, x0:x1]
        stored_errors = self.stored.errors
        damaged = [stored_errors[c] for c in self.stored.reader.chunks_in(core) if c in stored_errors]
        if damaged:  # the stored level reported it
            self._fail(rc, damaged[0], report=False)
            return _damaged(box)
        missing.append(rc)
        s = grid.scale
        return np.repeat(np.repeat(lr, s, axis=0), s, axis=1)[: box[3] - box[1], : box[2] - box[0]]

    def _request(self, tiles: list[Block], centre: tuple[float, float]) -> None:
        """Make ``tiles`` the queue (nearest ``centre`` first), replacing the previous request's."""
        hr = self.slide.grid.hr_tile

        def distance(rc: Block) -> float:
            return float(np.hypot((rc[1] + 0.5) * hr - centre[0], (rc[0] + 0.5) * hr - centre[1]))

        with self._cond:
            self._wanted = sorted((rc for rc in tiles if rc not in self._running), key=distance)
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._wanted) or self._closed)
                if self._closed:
                    return
                rc = self._wanted.pop(0)
                self._running.add(rc)
            try:
                self.slide.tile(*rc)
            except Exception as exc:  # reported, and the tile painted as damaged: never a silent guess
                self._fail(rc, _message(exc))
            with self._cond:
                self._running.discard(rc)
                self._cond.notify_all()
            if self.on_ready is not None and not self._closed:
                self.on_ready(self)


def _message(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _chunk_box(side: int, row: int, col: int, shape: tuple[int, ...]) -> Box:
    return col * side, row * side, min((col + 1) * side, shape[1]), min((row + 1) * side, shape[0])


def _damaged(box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.broadcast_to(np.asarray(DAMAGED_RGB, dtype=np.uint8), (y1 - y0, x1 - x0, 3))


def _region(key: Any, shape: tuple[int, int, int]) -> tuple[tuple[int, int], tuple[int, int], tuple[Any, ...]]:
    """The ``(start, stop)`` rows and columns that ``key`` (ints and slices) reads, and the
    index that then takes ``key``'s result from that box."""
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > 3 or any(not isinstance(k, int | np.integer | slice) for k in key):
        raise TypeError(f"index with ints and slices only, not {key!r}")
    key = key + (slice(None),) * (3 - len(key))
    bounds: list[tuple[int, int]] = []
    rest: list[Any] = []
    for k, n in zip(key[:2], shape[:2]):
        if isinstance(k, slice):
            span = range(*k.indices(n))
            lo = min(span[0], span[-1]) if span else 0
            hi = max(span[0], span[-1]) + 1 if span else 0
            stop = span.stop - lo
            rest.append(slice(span.start - lo, stop if stop >= 0 else None, span.step))
        else:
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {k} out of range for an axis of {n}")
            lo, hi = i, i + 1
            rest.append(0)
        bounds.append((lo, hi))
    return bounds[0], bounds[1], (*rest, key[2])
