"""A description of every registered component, for ``wsistore models``."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from wsistore.models.base import Generator
from wsistore.models.registry import ADVERSARIAL, DISCRIMINATORS, GENERATORS, LOSSES, Entry, build_generator
from wsistore.models.weights import shipped_weights


def _entry(entry: Entry) -> dict[str, Any]:
    defaults = dataclasses.asdict(entry.config()) if entry.config is not None else {}
    return {
        "name": entry.name,
        "summary": entry.summary,
        "paper": entry.paper,
        "settings": defaults,
        "tiny": dict(entry.tiny),
    }


def describe_generator(name: str) -> dict[str, Any]:
    """Registry entry plus receptive field, parameters and FLOPs of the default settings
    (counted on the meta device, so listing the 16.7M-parameter RRDBNet is instant)."""
    entry = GENERATORS[name]
    with torch.device("meta"):  # shapes only: no weight initialisation, no arithmetic
        model = build_generator(name)
    assert isinstance(model, Generator)
    return {
        **_entry(entry),
        "receptive_field": model.receptive_field,
        "parameters": model.parameter_count,
        "mflops_per_output_pixel": model.flops_per_output_pixel() / 1e6,
    }


def catalog() -> dict[str, Any]:
    """Every registry's entries, and the shipped weights."""
    return {
        "generators": [describe_generator(name) for name in GENERATORS],
        "discriminators": [_entry(e) for e in DISCRIMINATORS.values()],
        "losses": [_entry(e) for e in LOSSES.values()],
        "adversarial": [_entry(e) for e in ADVERSARIAL.values()],
        "shipped_weights": shipped_weights(),
    }
