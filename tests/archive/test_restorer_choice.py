"""Each chunk's restorer (format 1.7): ingest measures the generator against bicubic with the
source at hand, stores the choice, and every reader restores each chunk by its choice; on the
real DAPI fluorescence slide, where the generator changes the colours, bicubic everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wsistore
from tests.data import SHARED, SLIDE
from wsistore.archive.format import RESTORER_ARRAY
from wsistore.archive.reader import Archive
from wsistore.archive.restorer_choice import ChoicePolicy, choose_restorers, gain_db, spread
from wsistore.archive.verify import verify
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.errors import ArchiveError
from wsistore.readers import open_slide
from wsistore.restoration.hybrid import SrPath

DAPI = SHARED / "slides" / "fluor_hamamatsu-test3-DAPI.ndpi"
CHOOSING = IngestOptions(upscaler=SrPath(), progress=False, workers=2)


def test_a_unanimous_sample_decides_the_slide_else_every_chunk_is_measured() -> None:
    cells = [(r, q) for r in range(10) for q in range(10)]
    asked: list[int] = []

    def measure(gains: dict[tuple[int, int], float]):  # type: ignore[no-untyped-def]
        def run(some):  # type: ignore[no-untyped-def]
            some = list(some)
            asked.append(len(some))
            return {c: (1.0, 10 ** (gains[c] / 10)) for c in some}  # SSE_bicubic / SSE_generator = 10^(g/10)

        return run

    policy = ChoicePolicy(sample=8, margin_db=0.3)
    bicubic, record = choose_restorers(cells, measure(dict.fromkeys(cells, 1.0)), policy)
    assert bicubic == set() and asked == [8] and record["chunks"] == {"generator": 100, "bicubic": 0}
    asked.clear()
    bicubic, record = choose_restorers(cells, measure(dict.fromkeys(cells, -1.0)), policy)
    assert bicubic == set(cells) and asked == [8] and record["method"].startswith("chunks with content: bicubic won")
    asked.clear()
    mixed = {c: (0.5 if c[1] < 5 else -0.5) for c in cells}
    bicubic, record = choose_restorers(cells, measure(mixed), policy)
    assert asked == [8, 92] and bicubic == {c for c in cells if c[1] >= 5}
    assert record["measured"] == 100 and record["method"].startswith("chunks with content: each measured")
    asked.clear()
    small_gain = dict.fromkeys(cells, 0.1)  # the generator wins, but not by the margin: every chunk measured
    bicubic, record = choose_restorers(cells, measure(small_gain), policy)
    assert asked == [8, 92] and bicubic == set()
    asked.clear()
    flat = {c for c in cells if c[0] == 0}  # near-flat chunks are each measured, whatever the sample says
    gains = {c: (-0.2 if c in flat and c[1] % 2 else 1.0) for c in cells}
    bicubic, record = choose_restorers(cells, measure(gains), policy, flat)
    assert asked == [18] and bicubic == {(0, 1), (0, 3), (0, 5), (0, 7), (0, 9)}
    assert record["method"].endswith("; 10 near-flat chunks (loss under 2 grey levels RMS) each measured")
    assert spread(cells, 4) == [(1, 2), (3, 7), (6, 2), (8, 7)] and gain_db(4.0, 4.0) == 0.0


@pytest.fixture(scope="module")
def dapi_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dapi") / "dapi.zarr"
    ingest(DAPI, out, CHOOSING)
    return out


def test_the_dapi_slide_is_restored_by_bicubic_everywhere(dapi_archive: Path) -> None:
    """The generator loses to bicubic on every sampled chunk of the DAPI slide: bicubic for
    all; the restore is then bicubic's, pixel for pixel, and never worse than it."""
    archive = Archive.open(dapi_archive)
    record = archive.metadata.restorers
    assert archive.metadata.format_version == "1.8" and record is not None
    assert record["chunks"] == {"generator": 0, "bicubic": 20} and record["gain_db"]["max"] < 0
    assert record["method"].startswith("chunks with content: bicubic won all 16 sampled by at least 0.3 dB")
    assert len(archive.bicubic_chunks) == 20 and RESTORER_ARRAY in archive.manifest.arrays
    box = (900, 1900, 1400, 1300)  # across four chunks
    chosen = np.asarray(wsistore.open(dapi_archive).read_region(box[:2], 0, box[2:]))[..., :3]
    bicubic = np.asarray(wsistore.open(dapi_archive, model="bicubic").read_region(box[:2], 0, box[2:]))[..., :3]
    generator = np.asarray(wsistore.open(dapi_archive, model="compact-l1-gpu").read_region(box[:2], 0, box[2:]))
    assert np.array_equal(chosen, bicubic) and not np.array_equal(chosen, generator[..., :3])
    with open_slide(DAPI) as source:
        truth = source.read_region(box[:2], 0, box[2:]).astype(np.float64)
    assert ((chosen - truth) ** 2).mean() < ((generator[..., :3] - truth) ** 2).mean()
    assert verify(dapi_archive, against=DAPI, progress=False).ok


def test_h_and_e_keeps_the_generator(tmp_path: Path) -> None:
    out = tmp_path / "skin.zarr"
    ingest(SLIDE, out, CHOOSING)
    record = Archive.open(out).metadata.restorers
    assert record is not None and record["chunks"] == {"generator": 9, "bicubic": 0}
    assert record["measured"] == 9 and record["gain_db"]["min"] > 0


def test_a_mixed_slide_restores_each_chunk_by_its_choice_whatever_the_tiles(tmp_path: Path) -> None:
    """Half the chunks bicubic (the stored choice edited, its record and manifest kept whole by
    writing them afresh): a full restore, regions and every tile size paste bicubic exactly on
    those chunks and the generator's pixels elsewhere."""
    out = tmp_path / "skin.zarr"
    ingest(SLIDE, out, CHOOSING)
    whole = {
        m: np.asarray(wsistore.open(out, model=m).read_region((0, 0), 0, (2220, 2967)))[..., :3]
        for m in ("bicubic", "compact-l1-gpu")
    }
    _set_choice(out, np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=np.uint8))
    archive = Archive.open(out)
    assert archive.bicubic_chunks == {(0, 0), (0, 2), (1, 1), (2, 0), (2, 2)}
    restored = np.asarray(wsistore.open(out).read_region((0, 0), 0, (2220, 2967)))[..., :3]
    for r in range(3):
        for q in range(3):
            area = (slice(r * 1024, (r + 1) * 1024), slice(q * 1024, (q + 1) * 1024))
            model = "bicubic" if (r, q) in archive.bicubic_chunks else "compact-l1-gpu"
            assert np.array_equal(restored[area], whole[model][area]), (r, q)
    region = np.asarray(wsistore.open(out).read_region((700, 900), 0, (900, 700)))[..., :3]
    assert np.array_equal(region, restored[900:1600, 700:1600])


def _set_choice(path: Path, choice: np.ndarray) -> None:
    """Rewrite an archive's restorer array (and what records it) to ``choice``: a test's way to a
    mixed archive from a real slide."""
    import hashlib

    import zarr

    from wsistore.archive.format import metadata_digest
    from wsistore.archive.manifest import Manifest, describe_shard

    group = zarr.open_group(str(path), mode="r+")
    group[RESTORER_ARRAY][...] = choice
    manifest = Manifest.from_bytes((path / "manifest.json").read_bytes())
    record = manifest.arrays[RESTORER_ARRAY]
    record.chunks.clear()
    record.shards.clear()
    record.merge(describe_shard(RESTORER_ARRAY, record, (0, 0), (path / RESTORER_ARRAY / "c" / "0" / "0").read_bytes()))
    block = dict(group.attrs["wsistore"])
    block["restorers"] = {
        **block["restorers"],
        "chunks": {"generator": int((choice == 0).sum()), "bicubic": int(choice.sum())},
    }
    manifest.metadata_sha256 = metadata_digest(block)
    raw = manifest.to_bytes()
    (path / "manifest.json").write_bytes(raw)
    block["manifest_sha256"] = hashlib.sha256(raw).hexdigest()
    group.attrs["wsistore"] = block


def test_a_damaged_choice_is_found_by_verify(tmp_path: Path, dapi_archive: Path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(dapi_archive, copy)
    shard = copy / RESTORER_ARRAY / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[3] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = verify(copy, progress=False)
    assert not report.ok and any(RESTORER_ARRAY in p for p in report.problems)
    with pytest.raises(ArchiveError):
        Archive.open(copy).bicubic_chunks  # noqa: B018


def test_the_cli_chooses_and_info_shows_it(tmp_path: Path, dapi_archive: Path) -> None:
    info = subprocess.run(
        [sys.executable, "-m", "wsistore", "info", str(dapi_archive)], capture_output=True, text=True, check=True
    ).stdout
    assert "restorers: 0 chunks by the generator, 20 by bicubic (chunks with content: bicubic won all 16" in info
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "wsistore", "info", str(dapi_archive), "--json"], capture_output=True, text=True
        ).stdout
    )
    assert data["restorers"]["chunks"]["bicubic"] == 20
