"""A thread-safe LRU cache of arrays, bounded in bytes, that computes each missing value once.

Concurrent requests for a key being computed wait for that computation instead of
starting their own; a failed computation is not cached and its error reaches every
waiter.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


class SingleFlightCache(Generic[K]):
    """LRU by bytes; ``get(key, compute)`` runs ``compute`` at most once per missing key."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._lock = threading.Lock()
        self._values: OrderedDict[K, np.ndarray] = OrderedDict()
        self._pending: dict[K, Future[np.ndarray]] = {}
        self._bytes = 0

    def get(self, key: K, compute: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            waiting = self._pending.get(key)
            if waiting is None:
                future: Future[np.ndarray] = Future()
                self._pending[key] = future
        if waiting is not None:
            return waiting.result()
        try:
            value = compute()
            value.setflags(write=False)  # shared by every caller from now on
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self._store(key, value)
        future.set_result(value)
        return value

    def peek(self, key: K) -> np.ndarray | None:
        """The value of ``key`` if it is cached (marked recently used), else None; never computes."""
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._bytes = 0

    def _store(self, key: K, value: np.ndarray) -> None:
        if value.nbytes > self.capacity_bytes:
            return
        self._values[key] = value
        self._bytes += value.nbytes
        while self._bytes > self.capacity_bytes:
            _, old = self._values.popitem(last=False)
            self._bytes -= old.nbytes
