"""pipelines/device_data.py: prepared patches packed for the GPU machine come back byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.device_data import pack, unpack
from tests.data import TILES, TRAINING_FILES
from wsistore.cli import main
from wsistore.training.shards import read_manifest


def _prepare(out: Path, *extra: str) -> Path:
    sources = [str(TILES / name) for name in TRAINING_FILES[:3]]
    argv = ["train", "prepare", *sources, str(out), "--patch", "24", "--patches-per-file", "12", "--quiet"]
    assert main([*argv, "--positions", "random", "--val-file", TRAINING_FILES[2], *extra]) == 0
    return out


def test_packed_sets_unpack_to_the_same_shards(tmp_path: Path) -> None:
    sets = [_prepare(tmp_path / "q75", "--phases", "2"), _prepare(tmp_path / "q60", "--phases", "2", "--quality", "60")]
    pack(sets, tmp_path / "packed")
    # each tile once, each variant's LR once per codec setting
    assert len(list((tmp_path / "packed" / "images").iterdir())) == 3 + 2 * (2 * 2 + 1)
    made = unpack(tmp_path / "packed", tmp_path / "out")
    assert [m.name for m in made] == ["q60", "q75"]
    for root in sets:
        for shard in read_manifest(root)["shards"]:
            for key in ("lr", "hr", "index"):
                np.testing.assert_array_equal(
                    np.load(root / shard[key]), np.load(tmp_path / "out" / root.name / shard[key])
                )


def test_dihedral_variants_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="dihedral"):
        pack([_prepare(tmp_path / "d", "--dihedral")], tmp_path / "packed")
