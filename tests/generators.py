"""A generator for tests that counts what it upscales (bicubic underneath), shared by the
restoration and serve tests."""

from __future__ import annotations

import threading

import torch

from wsistore.models.base import Generator
from wsistore.models.registry import build_generator
from wsistore.models.weights import LoadedGenerator


class CountingGenerator(Generator):
    """Bicubic upscaling that counts the windows it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = build_generator("bicubic")
        self.windows = 0
        self._lock = threading.Lock()

    @property
    def receptive_field(self) -> int:
        return self.inner.receptive_field

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self.windows += lr.shape[0]
        return self.inner(lr)


def counting_generator() -> LoadedGenerator:
    """A fresh counting generator, loaded as a model is."""
    return LoadedGenerator(CountingGenerator(), "counting", None, {"architecture": "bicubic", "scale": 4})
