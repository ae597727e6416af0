"""The loss map (format 1.2): what the 4x archive loses per level-0 chunk, against the
source, recorded at ingest; read, summarised, verified; older archives have none."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wsistore.archive.format import FORMAT_VERSION, LOSS_ARRAY, MANIFEST_KEY
from wsistore.archive.reader import Archive, ChunkState
from wsistore.archive.verify import VerifyReport, _compare_source, verify
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.cli.info import describe
from wsistore.codecs import make_codec
from wsistore.degradation import SourceLoss, _bicubic_phases, bicubic_upscale, loss_rms
from wsistore.models.layers import bicubic_up
from wsistore.readers import open_slide


def _torch_rms(hr: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """The loss computed independently: the restore's own bicubic (torch), in float64."""
    up = bicubic_up(torch.from_numpy(lr).permute(2, 0, 1)[None].double(), scale)[0].permute(1, 2, 0).numpy()
    return float(np.sqrt(np.mean((hr.astype(np.float64) - up[: hr.shape[0], : hr.shape[1]]) ** 2)))


def _grid(archive: Archive) -> tuple[int, int]:
    base = archive.level(0)
    return -(-base.height // base.chunk), -(-base.width // base.chunk)


def test_numpy_bicubic_is_the_restores_bicubic(tile: np.ndarray) -> None:
    lr = np.ascontiguousarray(tile[:93, :70])
    ours = bicubic_upscale(lr, 4)
    theirs = bicubic_up(torch.from_numpy(lr).permute(2, 0, 1)[None].double(), 4)[0].permute(1, 2, 0).numpy()
    assert ours.shape == theirs.shape == (372, 280, 3)
    assert np.abs(ours - theirs).max() < 1e-9


def test_split_computation_equals_the_direct_one(tile: np.ndarray) -> None:
    """Ingest finishes the loss from a summary of the source (no source pixels kept)."""
    hr = tile[:250, :237]
    lr = np.ascontiguousarray(tile[:63, :60])  # any LR of the right size: 4 * 63 >= 250
    assert SourceLoss.of(hr, lr.shape[:2], 4).rms(lr, 4) == pytest.approx(loss_rms(hr, lr, 4), rel=1e-6)


def _reference_adjoint(a: np.ndarray, scale: int, n: int) -> np.ndarray:
    """``M^T a`` along axis 0 written plainly (slow): phase by phase, tap by tap, float32."""
    a = np.concatenate([a, np.zeros((scale * n - a.shape[0], *a.shape[1:]), dtype=np.float32)])
    g = np.zeros((n + 4, *a.shape[1:]), dtype=np.float32)
    for p, (o, w) in enumerate(_bicubic_phases(scale)):
        for k in range(4):
            g[o + k : o + k + n] += a[p::scale] * w[k]
    out = g[2 : n + 2]
    out[0] += g[0] + g[1]
    out[-1] += g[n + 2] + g[n + 3]
    return out


@pytest.mark.parametrize(
    ("hr_shape", "lr_shape", "scale"),
    [
        ((1024, 1024), (256, 256), 4),
        ((250, 237), (63, 60), 4),
        ((3, 5), (1, 2), 4),
        ((100, 64), (50, 32), 2),
        ((800, 88), (100, 11), 8),
    ],
)
def test_source_summary_equals_the_reference_bit_for_bit(
    hr_shape: tuple[int, int], lr_shape: tuple[int, int], scale: int
) -> None:
    hr = np.random.default_rng(scale).integers(0, 256, (*hr_shape, 3), dtype=np.uint8)
    a = hr.astype(np.float32) - 128
    rows = _reference_adjoint(a, scale, lr_shape[0])
    adjoint = _reference_adjoint(np.ascontiguousarray(rows.transpose(1, 0, 2)), scale, lr_shape[1]).transpose(1, 0, 2)
    ours = SourceLoss.of(hr, lr_shape, scale)
    assert np.array_equal(ours.adjoint, adjoint)
    assert ours.sum_sq == float(np.square(a).sum(dtype=np.float64))


def test_map_has_the_chunk_grid_and_matches_an_independent_computation(sample_archive: Path, slide_path: Path) -> None:
    archive = Archive.open(sample_archive)
    loss = archive.loss_map()
    assert loss is not None and loss.dtype == np.float32 and loss.shape == _grid(archive) == (3, 3)
    assert np.isfinite(loss).all() and (loss > 1).all() and (loss < 60).all()
    base, c, s = archive.level(0), archive.metadata.chunk, archive.metadata.scale
    slide = open_slide(slide_path)
    try:
        for r, q in [(0, 0), (1, 1), (2, 2)]:  # (2, 2) is an edge chunk, cropped to the slide
            box = (q * c, r * c, min((q + 1) * c, base.width), min((r + 1) * c, base.height))
            lr = archive.read_lr(0, box)
            x0, y0 = s * box[0], s * box[1]
            x1, y1 = min(s * box[2], archive.metadata.width), min(s * box[3], archive.metadata.height)
            hr = slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0))
            assert float(loss[r, q]) == pytest.approx(_torch_rms(hr, lr, s), abs=1e-3)
    finally:
        slide.close()


def test_background_chunks_have_no_value(tmp_path: Path, mosaic_slide: Path) -> None:
    out = tmp_path / "m.zarr"
    ingest(mosaic_slide, out, IngestOptions(chunk=256, progress=False))
    archive = Archive.open(out)
    loss = archive.loss_map()
    assert loss is not None and loss.shape == _grid(archive)
    base = archive.level(0)
    background = np.array(
        [[base.chunk_state(r, q) == ChunkState.BACKGROUND for q in range(loss.shape[1])] for r in range(loss.shape[0])]
    )
    assert background.any() and not background.all()
    assert np.isnan(loss[background]).all() and np.isfinite(loss[~background]).all()
    summary = archive.info()["loss_map"]
    assert summary["chunks"] == int((~background).sum())
    assert summary["median_rms"] <= summary["p95_rms"] <= summary["max_rms"]
    assert loss[tuple(summary["worst_chunk"])] == pytest.approx(summary["max_rms"], abs=1e-3)
    assert verify(out, against=mosaic_slide, progress=False).ok


def test_a_lossier_codec_loses_more(tmp_path: Path, slide_path: Path, sample_archive: Path) -> None:
    out = tmp_path / "lossy.zarr"
    ingest(slide_path, out, IngestOptions(codec=make_codec("avif", 20), progress=False))
    lossy, default = Archive.open(out).loss_map(), Archive.open(sample_archive).loss_map()
    assert lossy is not None and default is not None
    assert (lossy > default).all() and np.median(lossy) > np.median(default) + 0.5


def test_info_and_verify_report_it(sample_archive: Path, slide_path: Path) -> None:
    info = Archive.open(sample_archive).info()
    assert info["format_version"] == FORMAT_VERSION and info["loss_map"]["chunks"] == 9
    assert "archive loss: RMS of source minus bicubic" in describe(info)
    report = verify(sample_archive, against=slide_path, progress=False)
    assert report.ok, report.problems


def test_a_wrong_value_is_found_against_the_source(sample_archive: Path, slide_path: Path) -> None:
    archive = Archive.open(sample_archive)
    loss = archive.loss_map()
    assert loss is not None
    loss[1, 2] += 0.5
    report = VerifyReport(archive=str(sample_archive))
    _compare_source(archive, slide_path, "auto", report, 1, False, loss)
    assert report.problems == [
        f"loss map row 1 col 2 is {float(loss[1, 2]):.3f}, the source gives {float(loss[1, 2]) - 0.5:.3f}"
    ]


def test_a_damaged_loss_map_is_detected(archive_copy: Path) -> None:
    shard = archive_copy / LOSS_ARRAY / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x40
    shard.write_bytes(bytes(data))
    report = verify(archive_copy, progress=False)
    assert any(f"shard {LOSS_ARRAY}/c/0/0 has changed since ingest" in p for p in report.problems)
    assert any("the loss map does not decode" in p for p in report.problems)


def test_a_missing_loss_map_is_detected(archive_copy: Path) -> None:
    shutil.rmtree(archive_copy / LOSS_ARRAY)
    report = verify(archive_copy, progress=False)
    assert any(f"array {LOSS_ARRAY} is missing" in p for p in report.problems)


def _as_format_1_1(path: Path) -> None:
    """What a 1.1 ingest wrote: no loss map, in the manifest or on disk."""
    shutil.rmtree(path / LOSS_ARRAY)
    manifest = json.loads((path / MANIFEST_KEY).read_text())
    del manifest["arrays"][LOSS_ARRAY]
    del manifest["metadata_sha256"]  # format 1.3's digest of the metadata block
    manifest["format_version"] = "1.1"
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    (path / MANIFEST_KEY).write_bytes(data)
    group = json.loads((path / "zarr.json").read_text())
    group["attributes"]["wsistore"]["format_version"] = "1.1"
    group["attributes"]["wsistore"]["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (path / "zarr.json").write_text(json.dumps(group))


def test_an_archive_without_a_loss_map_still_opens(archive_copy: Path, slide_path: Path) -> None:
    _as_format_1_1(archive_copy)
    archive = Archive.open(archive_copy)
    assert archive.metadata.format_version == "1.1"
    assert archive.loss_map() is None
    info = archive.info()
    assert info["loss_map"] is None and "no loss map (format before 1.2)" in describe(info)
    report = verify(archive_copy, against=slide_path, progress=False)
    assert report.ok, report.problems
    assert archive.read_lr(0, (0, 0, 64, 64)).shape == (64, 64, 3)
