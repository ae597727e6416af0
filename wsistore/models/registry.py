"""Explicit registries: name -> typed config + constructor. Nothing registers itself at
import time; every entry is listed here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from wsistore.errors import InputError
from wsistore.models.base import Generator
from wsistore.models.generators import EDSR, EDSRConfig, InterpolationUpsampler


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    name: str
    config: type | None  # a frozen dataclass, or None when it takes no settings
    build: Callable[[Any], nn.Module]
    summary: str
    paper: str = ""

    def make(self, settings: dict[str, Any] | None = None) -> nn.Module:
        settings = dict(settings or {})
        if self.config is None:
            if settings:
                raise InputError(f"{self.name} takes no settings, got {sorted(settings)}")
            return self.build(None)
        known = {f.name for f in dataclasses.fields(self.config)}
        unknown = set(settings) - known
        if unknown:
            raise InputError(f"{self.name} has no setting {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        try:
            return self.build(self.config(**settings))
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid {self.name} settings {settings}: {exc}") from None


GENERATORS: dict[str, Entry] = {
    "edsr": Entry("edsr", EDSRConfig, EDSR, "EDSR residual network with pixel-shuffle upsampling", "Techcyte poster (seed 004); Lim et al. 2017"),
    "bicubic": Entry("bicubic", None, lambda _: InterpolationUpsampler("bicubic"), "bicubic interpolation (baseline)"),
    "nearest": Entry("nearest", None, lambda _: InterpolationUpsampler("nearest"), "pixel replication: the seeds' i-HR baseline"),
}


def build_generator(name: str, settings: dict[str, Any] | None = None) -> Generator:
    """A generator from its registry name and settings."""
    try:
        entry = GENERATORS[name]
    except KeyError:
        raise InputError(f"unknown generator {name!r}; registered: {', '.join(GENERATORS)}") from None
    model = entry.make(settings)
    assert isinstance(model, Generator)
    return model
