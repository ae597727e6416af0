"""The one progress bar of every long command: tqdm behind a lock, or nothing.

Nothing is drawn when progress is off or tqdm is missing (a GPU machine may have only
torch, numpy and safetensors), so callers never branch on it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Progress:
    """A thread-safe bar over ``total`` items of ``unit``; a context manager."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> None:
        self._lock = threading.Lock()
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        if self._bar is not None:
            with self._lock:
                self._bar.update(n)

    def note(self, text: str) -> None:
        """Show ``text`` after the bar (the current file, the loss)."""
        if self._bar is not None:
            with self._lock:
                self._bar.set_postfix_str(text, refresh=False)

    def over(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting each."""
        for item in items:
            yield item
            self.update()

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            with self._lock:
                self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
