"""The per-slide adaptation at ingest (format 1.4): stored, checksummed and shown; tuned on the
default generator for the archive's LR codec; applied by restore, on-demand reads and serve
unless ``--model`` names another; the same bytes whatever the workers, and across
``--resume``; skipped where it cannot pay."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

import wsistore
from tests.cli.test_cli import run
from tests.data import SLIDE
from wsistore.archive import writer
from wsistore.archive.format import ADAPTATION_ARRAY, FORMAT_VERSION, MANIFEST_KEY
from wsistore.archive.reader import Archive
from wsistore.archive.verify import verify
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.codecs import make_codec
from wsistore.errors import ArchiveError
from wsistore.models import adaptation
from wsistore.models.weights import default_model, load_generator
from wsistore.restoration.pipeline import RestoreOptions, restore
from wsistore.training import adapt
from wsistore.training.adapt import AdaptOptions

#: A short adaptation that the rule keeps on the sample slide (with compact-l1-gpu: +0.044 dB
#: held out against a cost of 0.034 dB), in about 7 s.
QUICK_ADAPT = AdaptOptions(steps=60, pairs=96, batch=8)
#: Ingest settings of these tests (the shard fixed, so that the workers do not choose it).
OPTIONS = IngestOptions(chunk=256, shard=512, workers=2, progress=False, adapt=QUICK_ADAPT)
#: A region across chunk borders, for the restores.
REGION = (700, 900, 600, 500)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapted") / "sample.zarr"
    ingest(SLIDE, out, OPTIONS)
    return out


def test_the_kept_adaptation_is_stored_checksummed_and_shown(adapted: Path) -> None:
    archive = Archive.open(adapted)
    record = archive.metadata.adaptation
    assert record is not None and record["kept"] and archive.metadata.format_version == FORMAT_VERSION
    payload = archive.adaptation()
    assert payload is not None and len(payload) == record["bytes"] == 2016
    assert hashlib.sha256(payload).hexdigest() == record["sha256"]
    assert record["base"] == default_model() and record["base_sha256"] == load_generator(default_model()).weights_sha256
    assert record["held_out_gain_db"] > record["cost_db"] > 0 and record["steps"] == QUICK_ADAPT.steps
    assert ADAPTATION_ARRAY in archive.manifest.arrays
    assert verify(adapted).ok
    shown = run("info", str(adapted), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["adaptation"] == record
    assert f"{default_model()} adapted: +0." in run("info", str(adapted)).stdout


def test_an_edited_adaptation_record_is_detected(tmp_path: Path, adapted: Path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(adapted, copy)
    meta = json.loads((copy / "zarr.json").read_text())
    meta["attributes"]["wsistore"]["adaptation"]["held_out_gain_db"] = 9.0
    (copy / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ArchiveError, match="damaged"):
        Archive.open(copy)


def test_restore_applies_it_unless_a_model_is_named(tmp_path: Path, adapted: Path) -> None:
    archive = Archive.open(adapted)
    base = load_generator(default_model())
    by_hand = adaptation.apply(base, archive.adaptation() or b"", base.weights_sha256 or "")
    x, y, w, h = REGION
    with wsistore.open(adapted, model=by_hand, device="cpu") as slide:
        expected = np.asarray(slide.read_region((x, y), 0, (w, h)).convert("RGB"))

    options = RestoreOptions(region=REGION, device="cpu", lossless=True, progress=False)
    result = restore(adapted, tmp_path / "adapted.tif", options)
    restored = tifffile.imread(tmp_path / "adapted.tif")
    assert np.array_equal(restored, expected)
    assert result.generator["adaptation_sha256"] == archive.metadata.adaptation["sha256"]  # type: ignore[index]
    with tifffile.TiffFile(tmp_path / "adapted.tif") as tif:
        assert f"adaptation_sha256 = {result.generator['adaptation_sha256']}" in tif.pages[0].description

    plain = restore(adapted, tmp_path / "plain.tif", replace(options, model=default_model()))
    assert "adaptation_sha256" not in plain.generator
    assert not np.array_equal(tifffile.imread(tmp_path / "plain.tif"), restored)

    with wsistore.open(adapted, device="cpu") as slide:  # on demand: the same pixels
        region = np.asarray(slide.read_region((x, y), 0, (w, h)).convert("RGB"))
        assert np.array_equal(region, expected)
        assert slide.properties["wsistore.adaptation-sha256"] == result.generator["adaptation_sha256"]


def test_same_bytes_whatever_the_workers_and_across_resume(
    tmp_path: Path, adapted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "again.zarr"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(writer._Ingest, "_write_associated", interrupted)  # after the adaptation is journalled
    with pytest.raises(KeyboardInterrupt):
        ingest(SLIDE, out, replace(OPTIONS, workers=1))
    monkeypatch.undo()

    def not_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the resumed ingest tuned the adaptation again")

    monkeypatch.setattr(adapt, "tune", not_again)
    ingest(SLIDE, out, replace(OPTIONS, workers=1, resume=True))
    assert (out / MANIFEST_KEY).read_bytes() == (adapted / MANIFEST_KEY).read_bytes()
    assert Archive.open(out).adaptation() == Archive.open(adapted).adaptation()


def test_a_quality_60_ingest_adapts_the_model_trained_on_its_lr(tmp_path: Path) -> None:
    out = tmp_path / "q60.zarr"
    result = ingest(SLIDE, out, replace(OPTIONS, codec=make_codec("avif", 60)))
    record = result.adaptation
    assert record is not None and record["base"] == "compact-l1-q60"
    assert record["base_sha256"] == load_generator("compact-l1-q60").weights_sha256
    assert Archive.open(out).metadata.adaptation == record


def test_no_adapt_stores_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "plain.zarr"
    ingest(SLIDE, out, replace(OPTIONS, adapt=None))
    archive = Archive.open(out)
    assert archive.metadata.adaptation is None and archive.adaptation() is None
    assert ADAPTATION_ARRAY not in archive.manifest.arrays
    assert IngestOptions().adapt is None  # the library adapts when asked; the CLI by default
    monkeypatch.setenv(adapt.ADAPT_ENV, "0")
    assert adapt.default_adaptation() is None
    monkeypatch.setenv(adapt.ADAPT_ENV, "1")
    assert adapt.default_adaptation() == AdaptOptions()


def test_a_slide_too_small_to_pay_is_not_tuned(tmp_path: Path, tile: np.ndarray) -> None:
    slide = tmp_path / "tile.tif"
    tifffile.imwrite(slide, tile[:512, :512], tile=(256, 256), photometric="rgb")  # 0.26 MP: 0.84 dB of bytes
    result = ingest(slide, tmp_path / "tile.zarr", replace(OPTIONS, shard=None))
    assert result.adaptation is not None and not result.adaptation["kept"]
    assert "too small" in result.adaptation["reason"]
    assert Archive.open(tmp_path / "tile.zarr").adaptation() is None


def test_cli_options(tmp_path: Path) -> None:
    refused = run("ingest", str(SLIDE), str(tmp_path / "x.zarr"), "--adapt-seconds", "0")
    assert refused.returncode == 2 and "--adapt-seconds: must be a number above 0" in refused.stderr
    assert not (tmp_path / "x.zarr").exists()
    done = run("ingest", str(SLIDE), str(tmp_path / "y.zarr"), "--no-adapt", "--quiet")
    assert done.returncode == 0 and "adapt" not in done.stdout
    assert Archive.open(tmp_path / "y.zarr").metadata.adaptation is None
