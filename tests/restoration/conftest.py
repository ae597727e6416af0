"""Restore fixtures: a tiny seeded EDSR weights file, a generator that counts what it
sees, and one full lossless restore of the real sample slide shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsistore.models.registry import build_generator
from wsistore.models.weights import save_generator

TINY_EDSR = {"blocks": 2, "features": 16}


@pytest.fixture(scope="session")
def tiny_edsr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block, 16-feature EDSR with seeded random weights, saved with its model card."""
    torch.manual_seed(0)
    model = build_generator("edsr", TINY_EDSR)
    path = tmp_path_factory.mktemp("weights") / "tiny-edsr.safetensors"
    save_generator(path, model, {"architecture": "edsr", "config": TINY_EDSR, "scale": 4})
    return path


@pytest.fixture(scope="session")
def full_restore(tmp_path_factory: pytest.TempPathFactory, sample_archive: Path, tiny_edsr: Path) -> Path:
    """The whole sample restored by the tiny EDSR on the CPU: lossless TIFF, 256 px tiles."""
    from wsistore.restoration.pipeline import RestoreOptions, restore

    out = tmp_path_factory.mktemp("restored") / "full.tif"
    restore(
        sample_archive,
        out,
        RestoreOptions(model=str(tiny_edsr), device="cpu", tile=256, workers=2, lossless=True, progress=False),
    )
    return out
