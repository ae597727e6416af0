"""Ingest on real slides: metadata round trip, exact tiled downsample, background,
associated images, resume, and every bad-input path."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from tests.data import SHARED
from tests.slides import GLASS, write_mosaic_slide
from wsistore.archive import writer
from wsistore.archive.reader import Archive, ChunkState
from wsistore.archive.verify import verify
from wsistore.archive.writer import MPP_GIVEN, IngestOptions, _Ingest, halve, ingest
from wsistore.codecs import make_codec
from wsistore.degradation import Downsample, degrade
from wsistore.errors import ArchiveError, InputError, OutputExistsError
from wsistore.psnr import psnr_from_mse
from wsistore.readers import open_slide, stored_associated_bytes

SLIDES = SHARED / "slides"


def test_metadata_round_trip(sample_archive: Path, slide_path: Path) -> None:
    archive = Archive.open(sample_archive)
    md = archive.metadata
    assert (md.width, md.height) == (2220, 2967)
    assert md.mpp == (0.499, 0.499)
    assert md.source.vendor == "aperio" and md.source.objective_power == 20.0
    assert md.source.sha256 == hashlib.sha256(slide_path.read_bytes()).hexdigest()
    assert md.source.bytes == slide_path.stat().st_size
    assert md.source.properties["aperio.AppMag"] == "20"
    assert md.scale == 4 and md.downsample["scale"] == 4 and len(md.downsample["tap_weights"]) == 16
    assert md.codec == {
        "name": "imagecodecs_avif",
        "configuration": {"level": 75, "speed": 8, "pixelformat": "YUV444", "bitspersample": 8, "codec": "AOM"},
    }
    assert [(lv.width, lv.height) for lv in md.levels] == [(555, 742), (278, 371), (139, 186)]
    assert md.chunk % 16 == 0 and md.shard % md.chunk == 0


def test_ome_ngff_multiscales(sample_archive: Path) -> None:
    attrs = json.loads((sample_archive / "zarr.json").read_text())["attributes"]["ome"]
    ms = attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][1]["unit"] == "micrometer"
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales[0] == pytest.approx([1.0, 0.499 * 4, 0.499 * 4])
    assert scales[1] == pytest.approx([1.0, 0.499 * 8, 0.499 * 8])
    translation = ms["datasets"][0]["coordinateTransformations"][1]["translation"]
    assert translation == pytest.approx([0.0, 1.5 * 0.499, 1.5 * 0.499])


def test_arrays_are_sharded_with_crc32c_and_cyx(sample_archive: Path) -> None:
    meta = json.loads((sample_archive / "0" / "zarr.json").read_text())
    assert meta["dimension_names"] == ["c", "y", "x"]
    shard = meta["codecs"][0]
    assert shard["name"] == "sharding_indexed"
    inner = [c["name"] for c in shard["configuration"]["codecs"]]
    assert inner == ["transpose", "imagecodecs_avif", "crc32c"]
    assert [c["name"] for c in shard["configuration"]["index_codecs"]] == ["bytes", "crc32c"]


def test_tiled_ingest_equals_whole_image_downsample(tmp_path: Path, slide_path: Path) -> None:
    """Lossless LR, small shards: every chunk read with halo equals the whole-slide downsample."""
    out = tmp_path / "lossless.zarr"
    ingest(slide_path, out, IngestOptions(codec=make_codec("png"), chunk=128, shard=256, progress=False))
    archive = Archive.open(out)
    with open_slide(slide_path) as slide:
        whole = slide.read_region((0, 0), 0, slide.dimensions)
    expected = Downsample(4).reduce_region(whole)
    assert np.array_equal(archive.read_lr(0, (0, 0, 555, 742)), expected)
    # and the pyramid levels are 2x means of the level above
    assert np.array_equal(archive.read_lr(1, (0, 0, 278, 371)), halve(expected, (278, 371)))


@pytest.mark.parametrize("shape", [(8, 12), (7, 12), (8, 11), (5, 9)])
def test_halve_is_the_rounded_mean_of_2x2_with_the_edge_replicated(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(3).integers(0, 256, (*shape, 3), dtype=np.uint8)
    h, w = -(-shape[0] // 2), -(-shape[1] // 2)
    padded = np.pad(image, ((0, 2 * h - shape[0]), (0, 2 * w - shape[1]), (0, 0)), mode="edge").astype(np.int64)
    expected = (padded.reshape(h, 2, w, 2, 3).sum(axis=(1, 3)) + 2) // 4
    assert np.array_equal(halve(image, (w, h)), expected)


def _archive_files(root: Path) -> dict[str, bytes]:
    """Every file of an archive, the group's creation time left out."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    group = json.loads(files.pop("zarr.json"))
    del group["attributes"]["wsistore"]["created"]
    files["zarr.json"] = json.dumps(group, sort_keys=True).encode()
    return files


def test_same_bytes_whatever_the_workers_and_source_blocks(
    tmp_path: Path, mosaic_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive (chunks, loss map, manifest) depends on the settings only: not on the number
    of workers, nor on the blocks the source is read in (odd ones here, across tiles and chunks)."""
    archives = []
    for workers, block in [(1, None), (2, None), (2, (96, 80))]:
        if block:
            monkeypatch.setattr(writer, "source_block", lambda slide, block=block: block)
        out = tmp_path / f"w{workers}-{block}.zarr"
        ingest(mosaic_slide, out, IngestOptions(chunk=128, shard=256, workers=workers, progress=False))
        archives.append(_archive_files(out))
    assert archives[0] == archives[1] == archives[2]


def test_lossy_chunks_record_their_coding_error(sample_archive: Path) -> None:
    archive = Archive.open(sample_archive)
    psnr = archive.manifest.arrays["0"].coding_psnr
    assert len(psnr) == 9 and all(30 < v < 60 for v in psnr.values())


@pytest.mark.parametrize(
    "name", ["skin_cmu1-small-region_aperio-20x.svs", "kidney_tcga-5P-A9K0-monusac-1_aperio-jp2k.svs"]
)
def test_associated_images_never_outweigh_the_source(tmp_path: Path, name: str) -> None:
    """Each associated image is lossless, or, where lossless would take more bytes than the
    source itself spends on it, the finest JPEG-XL setting that fits those bytes."""
    source = SLIDES / name
    archive = Archive.open(ingest(source, tmp_path / "a.zarr", IngestOptions(progress=False)).archive)
    budgets = stored_associated_bytes(source)
    assert archive.metadata.source.associated_bytes == budgets and set(budgets) == {"label", "macro", "thumbnail"}
    records = archive.manifest.arrays
    with open_slide(source) as slide:
        for image in ("label", "macro", "thumbnail"):
            stored = sum(s["bytes"] for s in records[f"associated/{image}"].shards.values())
            original, kept = slide.associated_image(image), archive.associated_image(image)
            exact = np.array_equal(kept, original)
            assert exact or stored <= budgets[image], (image, stored, budgets[image])
            assert exact or psnr_from_mse(float(np.mean((kept.astype(float) - original) ** 2))) > 30
    info = archive.info()
    assert info["associated_bytes"] <= info["source_associated_bytes"] * 1.05
    assert info["pyramid_ratio"] > 5 and info["pyramid_ratio_against"] == "the source's image data"


def test_strip_label(tmp_path: Path, slide_path: Path) -> None:
    out = tmp_path / "stripped.zarr"
    ingest(slide_path, out, IngestOptions(strip_label=True, progress=False))
    archive = Archive.open(out)
    assert archive.associated_image_names == ["thumbnail"]
    assert archive.metadata.stripped_images == ["label", "macro"]
    assert not (out / "associated" / "label").exists()
    with pytest.raises(KeyError):
        archive.associated_image("label")


def test_strip_label_drops_identifying_dicom_attributes(tmp_path: Path) -> None:
    """Patient, study and specimen attributes are kept; with strip_label those that identify
    (wsistore.dicom.IDENTIFYING_ATTRIBUTES) are dropped, and their names recorded."""
    from tests.data import DICOM_SLIDE

    kept, stripped = tmp_path / "kept.zarr", tmp_path / "stripped.zarr"
    ingest(DICOM_SLIDE, kept, IngestOptions(progress=False, workers=2))
    ingest(DICOM_SLIDE, stripped, IngestOptions(strip_label=True, progress=False, workers=2))
    before = Archive.open(kept).metadata.source.properties
    after = Archive.open(stripped).metadata.source.properties
    identifying = {"dicom.PatientName", "dicom.PatientID", "dicom.StudyID", "dicom.StudyDate", "dicom.ContentDate"}
    assert identifying <= set(before) and not identifying & set(after)
    assert after["wsistore.stripped-properties"] == ", ".join(sorted(identifying | {"dicom.SeriesDate"}))
    assert after["dicom.StudyInstanceUID"] == before["dicom.StudyInstanceUID"]  # UIDs are kept
    assert not any("TCGA" in value for value in after.values())


def test_background_chunks_are_dropped_and_read_as_glass(tmp_path: Path, mosaic_slide: Path) -> None:
    out = tmp_path / "mosaic.zarr"
    ingest(mosaic_slide, out, IngestOptions(chunk=128, progress=False))
    archive = Archive.open(out)
    md = archive.metadata
    assert md.mpp == (0.25, 0.25) and md.source.mpp_source.startswith("TIFF")
    assert 0.2 < md.tissue.fraction < 0.7
    assert md.tissue.chunks_background > 0 and md.tissue.background_dropped > 0.15
    assert max(abs(a - b) for a, b in zip(md.tissue.background_rgb, GLASS)) <= 2
    base = archive.level(0)
    # the empty top-right cell (x 2048..3000, y 0..1024 at level 0) is background
    assert base.chunk_state(0, 5) == ChunkState.BACKGROUND
    glass = archive.read_lr(0, (5 * 128, 0, 750, 128))
    assert (glass == np.asarray(md.tissue.background_rgb, np.uint8)).all()
    # tissue cells were kept
    assert base.chunk_state(0, 0) == ChunkState.WRITTEN
    # a stock zarr reader sees the fill value there
    raw = zarr.open_array(out / "0", mode="r")[:, 0:128, 5 * 128 : 750]
    assert (np.asarray(raw) == md.fill_value).all()


def test_keep_background_stores_every_chunk(tmp_path: Path, mosaic_slide: Path) -> None:
    out = tmp_path / "all.zarr"
    ingest(mosaic_slide, out, IngestOptions(chunk=256, keep_background=True, progress=False))
    md = Archive.open(out).metadata
    assert md.tissue.keep_background and md.tissue.chunks_background == 0
    assert md.tissue.chunks_written == md.tissue.chunks_total


def test_icc_profile_round_trip(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    slide = write_mosaic_slide(
        tmp_path / "icc.tif", [["lung_monuseg_18-5592"]], size=(1000, 1000), downsamples=(1,), icc=icc
    )
    out = tmp_path / "icc.zarr"
    ingest(slide, out, IngestOptions(chunk=128, progress=False))
    archive = Archive.open(out)
    assert archive.icc_profile == icc
    assert archive.metadata.source.icc_profile_sha256 == hashlib.sha256(icc).hexdigest()


def test_stock_zarr_reads_the_archive(sample_archive: Path) -> None:
    """A fresh interpreter with zarr + the registered codecs reads level 0 and the NGFF block."""
    code = (
        "import zarr, sys, json;"
        f"g = zarr.open_group({str(sample_archive)!r}, mode='r');"
        "a = g['0'];"
        "print(json.dumps([list(a.shape), int(a[:, 100:120, 200:230].mean() > 0), g.attrs['ome']['version']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [[3, 742, 555], 1, "0.5"]


# -- interruption and resume ----------------------------------------------------------------
def test_interrupted_ingest_resumes_to_the_same_archive(
    tmp_path: Path, slide_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = IngestOptions(chunk=128, shard=256, workers=1, progress=False)
    reference = tmp_path / "reference.zarr"
    ingest(slide_path, reference, options)

    out = tmp_path / "interrupted.zarr"
    calls = {"n": 0}
    original = _Ingest.store_shard

    def flaky(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_Ingest, "store_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest(slide_path, out, options)
    monkeypatch.setattr(_Ingest, "store_shard", original)

    assert not out.exists() and (tmp_path / "interrupted.zarr.partial").is_dir()
    with pytest.raises(ArchiveError, match="--resume"):
        Archive.open(out)

    result = ingest(slide_path, out, IngestOptions(chunk=128, shard=256, workers=1, progress=False, resume=True))
    assert result.shards_skipped == 3
    a, b = Archive.open(out).manifest.arrays, Archive.open(reference).manifest.arrays
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shards == b[name].shards and a[name].chunks == b[name].chunks


@pytest.mark.parametrize("shard", ["0/c/0/2/0", "3/c/0/0/0"])
def test_resume_rewrites_a_shard_written_but_not_journalled_to_the_same_bytes(
    tmp_path: Path, slide_path: Path, monkeypatch: pytest.MonkeyPatch, shard: str
) -> None:
    """A kill between a shard's write and its journal entry: the resumed run writes that shard
    again, and it must come out as if never interrupted. Both shards hold edge chunks (past the
    array's end), which zarr merged into the stale shard, keeping its decoded lossy padding."""
    options = IngestOptions(chunk=128, shard=256, workers=1, progress=False)
    reference = tmp_path / "reference.zarr"
    ingest(slide_path, reference, options)

    out = tmp_path / "interrupted.zarr"
    original = _Ingest.journal_shard

    def killed(self, rec):  # type: ignore[no-untyped-def]
        if f"{rec.array}/{rec.key}" == shard:
            raise KeyboardInterrupt  # the shard is on disk, its journal line is not
        return original(self, rec)

    monkeypatch.setattr(_Ingest, "journal_shard", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest(slide_path, out, options)
    monkeypatch.setattr(_Ingest, "journal_shard", original)
    assert (tmp_path / "interrupted.zarr.partial" / shard).is_file()

    ingest(slide_path, out, IngestOptions(chunk=128, shard=256, workers=1, progress=False, resume=True))
    assert (out / shard).read_bytes() == (reference / shard).read_bytes()
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()


def test_resume_refuses_changed_settings(tmp_path: Path, slide_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "a.zarr"
    monkeypatch.setattr(_Ingest, "_level_shard", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ingest(slide_path, out, IngestOptions(chunk=128, progress=False))
    monkeypatch.undo()
    with pytest.raises(InputError, match="codec"):
        ingest(slide_path, out, IngestOptions(chunk=128, codec=make_codec("png"), progress=False, resume=True))


def test_resume_without_partial(tmp_path: Path, slide_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to resume"):
        ingest(slide_path, tmp_path / "x.zarr", IngestOptions(resume=True, progress=False))


# -- destinations and options -------------------------------------------------------------
def test_existing_destination_needs_overwrite(tmp_path: Path, slide_path: Path, sample_archive: Path) -> None:
    out = tmp_path / "exists.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="use --overwrite"):
        ingest(slide_path, out, IngestOptions(progress=False))
    with pytest.raises(OutputExistsError, match="not a wsistore archive: --overwrite replaces only"):
        ingest(slide_path, out, IngestOptions(overwrite=True, progress=False))  # a folder that is not ours
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    archive = tmp_path / "archive.zarr"
    shutil.copytree(sample_archive, archive)
    ingest(slide_path, archive, IngestOptions(overwrite=True, progress=False))  # an archive: ours to replace
    assert Archive.open(archive).metadata.width == 2220 and not (tmp_path / "archive.zarr.partial").exists()


def test_missing_parent_directory(tmp_path: Path, slide_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        ingest(slide_path, tmp_path / "no" / "such" / "a.zarr", IngestOptions(progress=False))


def test_slide_smaller_than_one_chunk_ingests_with_the_defaults(tmp_path: Path, tile: np.ndarray) -> None:
    """A 512 x 480 TIFF is 128 x 120 LR, inside one 256-pixel chunk: it is archived with the
    defaults, and its LR is exactly what training and the reports code (one padded chunk)."""
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, tile[:480, :512], tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None)
    archive = Archive.open(ingest(small, tmp_path / "small.zarr", IngestOptions(progress=False)).archive)
    assert (archive.metadata.levels[0].width, archive.metadata.levels[0].height) == (128, 120)
    assert verify(tmp_path / "small.zarr", against=small, progress=False).ok
    with open_slide(small) as slide:
        hr = slide.read_region((0, 0), 0, (512, 480))
    fill = archive.metadata.fill_value
    assert np.array_equal(archive.read_lr(0, (0, 0, 128, 120)), degrade(hr, make_codec(), fill=fill))


def test_real_slide_smaller_than_one_chunk(tmp_path: Path) -> None:
    source = SLIDES / "kidney_tcga-5P-A9K0-monusac-2_aperio-jp2k.svs"  # 756 x 763: LR 189 x 191
    ingest(source, tmp_path / "k.zarr", IngestOptions(progress=False))
    assert verify(tmp_path / "k.zarr", against=source, progress=False).ok


def test_mpp_given_by_the_user(tmp_path: Path, tile: np.ndarray) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, tile[:512, :512], photometric="rgb", metadata=None)
    archive = Archive.open(ingest(plain, tmp_path / "p.zarr", IngestOptions(progress=False, mpp=(0.25, 0.26))).archive)
    assert archive.metadata.mpp == (0.25, 0.26) and archive.metadata.source.mpp_source == MPP_GIVEN
    with pytest.raises(InputError, match="mpp must be"):
        IngestOptions(mpp=(0.0, 1.0))


@pytest.mark.parametrize(
    "kwargs", [{"chunk": 100}, {"chunk": 2048}, {"scale": 3}, {"workers": 0}, {"chunk": 128, "shard": 200}]
)
def test_invalid_options(kwargs: dict) -> None:
    with pytest.raises(InputError):
        IngestOptions(**kwargs)


def test_not_a_slide_leaves_nothing(tmp_path: Path) -> None:
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    with pytest.raises(InputError):
        ingest(text, tmp_path / "x.zarr", IngestOptions(progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.svs"]


def test_full_disk_leaves_an_incomplete_partial(
    tmp_path: Path, slide_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from wsistore.archive.store import Location
    from wsistore.errors import WsistoreError

    def no_space(self, key, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Location, "write_bytes", no_space)
    out = tmp_path / "full.zarr"
    with pytest.raises(WsistoreError, match="No space left on device"):
        ingest(slide_path, out, IngestOptions(progress=False))
    monkeypatch.undo()
    assert not out.exists()
    with pytest.raises(ArchiveError):
        Archive.open(out)


def test_fsspec_url_destination(slide_path: Path) -> None:
    """Non-local stores (here fsspec's memory filesystem) are written in place, metadata last."""
    import fsspec

    from wsistore.archive.verify import verify

    url = "memory://wsistore-test/sample.zarr"
    ingest(slide_path, url, IngestOptions(progress=False))
    try:
        archive = Archive.open(url)
        assert archive.metadata.width == 2220
        assert verify(url, progress=False).ok
        assert not fsspec.filesystem("memory").exists("/wsistore-test/sample.zarr/ingest-journal.jsonl")
        with pytest.raises(OutputExistsError):
            ingest(slide_path, url, IngestOptions(progress=False))
    finally:
        fsspec.filesystem("memory").rm("/wsistore-test", recursive=True)
