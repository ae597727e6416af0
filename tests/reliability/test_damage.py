"""The damage campaign: random corruptions of the real archive are all detected by verify
(named to the chunk where one is hit) and refused by restore and ``wsistore.open``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import pytest

import wsistore
from benchmarks.reliability.damage import KINDS, run_damage
from wsistore.archive.reader import Archive
from wsistore.archive.verify import verify
from wsistore.errors import ArchiveError


def _assert_clean(result: dict[str, Any], count: int) -> None:
    assert result["corruptions"] == count
    assert result["missed"] == [], result["missed"]
    assert result["detected"] == count
    assert result["named_chunk"] == result["nameable"] > 0
    assert result["restore_refused"] == result["restore_checked"] > 0
    assert result["open_refused"] == result["open_checked"] == count
    assert set(result["kinds"]) == set(KINDS)


def test_damage_campaign(sample_archive: Path, tmp_path: Path) -> None:
    """Every kind five times (a few seconds)."""
    _assert_clean(run_damage(sample_archive, 30, seed=1, workdir=tmp_path), 30)


@pytest.mark.campaign
def test_damage_campaign_120(sample_archive: Path, tmp_path: Path) -> None:
    """The campaign RELIABILITY.md reports: 120 corruptions, seed 0."""
    _assert_clean(run_damage(sample_archive, 120, seed=0, workdir=tmp_path), 120)


def _swap_index_entries(shard: Path, n: int, a: int, b: int) -> None:
    data = bytearray(shard.read_bytes())
    pairs = np.frombuffer(bytes(data[-(16 * n + 4) : -4]), dtype="<u8").copy().reshape(n, 2)
    pairs[[a, b]] = pairs[[b, a]]
    raw = pairs.astype("<u8").tobytes()
    data[-(16 * n + 4) :] = raw + google_crc32c.value(raw).to_bytes(4, "little")
    shard.write_bytes(bytes(data))


def test_swapped_chunks_of_equal_size_are_refused(archive_copy: Path) -> None:
    """Two intact chunks exchanged: zarr's crc32c passes, so only the manifest's crc can tell.
    (Chunks of one size are rare with a lossy codec; the manifest's sizes are matched here.)"""
    _swap_index_entries(archive_copy / "0" / "c" / "0" / "0" / "0", 4, 0, 1)
    archive = Archive.open(archive_copy)
    level = archive.level(0)
    a, b = level.record.chunks["0.0.0"], level.record.chunks["0.0.1"]
    a[0], b[0] = b[0], a[0]  # as if both chunks had been written the same size
    with pytest.raises(ArchiveError, match=r"chunk 0 row 0 col 0 is not the chunk the manifest lists"):
        archive.read_lr(0, (0, 0, 64, 64))
    assert any("0 row 0 col 0 differs from the manifest" in p for p in verify(archive_copy, progress=False).problems)


def test_lost_shard_is_refused_not_painted_as_glass(archive_copy: Path) -> None:
    (archive_copy / "0" / "c" / "0" / "0" / "0").unlink()
    slide = wsistore.open(archive_copy, model="bicubic", workers=1)
    try:
        with pytest.raises(ArchiveError, match="chunk 0 row 0 col 0 cannot be read: shard 0/c/0/0/0 is missing"):
            slide.read_region((0, 0), 1, (64, 64))
        with pytest.raises(ArchiveError, match="row 0 col 0"):
            slide.read_region((100, 100), 0, (64, 64))
    finally:
        slide.close()


def test_damaged_mask_and_array_metadata_are_refused(archive_copy: Path) -> None:
    (archive_copy / "tissue_mask" / "c" / "0" / "0").unlink()
    with pytest.raises(ArchiveError, match=r"tissue_mask \[0.0\] cannot be read"):
        _ = Archive.open(archive_copy).tissue_mask
    meta = archive_copy / "0" / "zarr.json"
    edited = json.loads(meta.read_text())
    edited["fill_value"] = (edited["fill_value"] + 1) % 256  # uniform chunks would read another colour
    meta.write_text(json.dumps(edited))
    with pytest.raises(ArchiveError, match="0/zarr.json: fill_value"):
        Archive.open(archive_copy)
    report = verify(archive_copy, progress=False)
    assert any("0/zarr.json: fill_value" in p for p in report.problems)
    assert any("tissue_mask/c/0/0 is missing" in p for p in report.problems)
