"""The training tests' shared patches: prepared once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data import TILES, TRAINING_FILES
from wsistore.cli import main


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five real tiles -> 24-px LR patches, coded with the archive's default codec, the last
    file held out for validation. Tests read it and never write into it."""
    out = tmp_path_factory.mktemp("prepared") / "patches"
    sources = [str(TILES / name) for name in TRAINING_FILES]
    argv = ["train", "prepare", *sources, str(out), "--patch", "24", "--patches-per-file", "16"]
    assert main([*argv, "--val-file", TRAINING_FILES[-1], "--quiet"]) == 0
    return out
