"""Full restores on real data: the outputs OpenSlide and tiffslide open, identical pixels
whatever the tiling settings, seamless tiles, background skipped, complete-or-nothing, and
the default generator the one trained on the archive's LR."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import tiffslide
import torch
import zarr
from PIL import ImageCms

import wsistore
from tests.cli.test_cli import run
from tests.data import SLIDE
from tests.restoration.interrupt import interrupted_restore
from tests.slides import write_mosaic_slide
from wsistore.archive.reader import Archive, ChunkState
from wsistore.degradation import extract_window
from wsistore.models.weights import LoadedGenerator, load_generator, sha256_file
from wsistore.readers import open_slide
from wsistore.restoration.grid import halo_for
from wsistore.restoration.pipeline import RestoreOptions, restore
from wsistore.restoration.runner import to_uint8
from wsistore.restoration.tiff_writer import TileCodec


def level0(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].asarray()


def test_restored_tiff_opens_with_source_geometry(full_restore: Path, tiny_edsr: Path) -> None:
    with openslide.OpenSlide(full_restore) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 3 and slide.level_dimensions[1:] == ((555, 742), (139, 186))
        assert slide.properties["openslide.mpp-x"] == slide.properties["openslide.mpp-y"] == "0.499"
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        description = slide.properties["tiff.ImageDescription"]
        region = np.asarray(slide.read_region((1000, 1200), 0, (300, 200)).convert("RGB"))
    assert "super_resolved = true" in description and "generator = tiny-edsr" in description
    assert f"weights_sha256 = {sha256_file(tiny_edsr)}" in description
    with tiffslide.TiffSlide(full_restore) as slide:
        assert slide.dimensions == (2220, 2967) and slide.level_count == 3
        assert slide.properties["tiffslide.mpp-x"] == pytest.approx(0.499)
        assert np.array_equal(slide.read_region((1000, 1200), 0, (300, 200), as_array=True), region)


def test_pixels_do_not_depend_on_tile_batch_or_workers(
    full_restore: Path, sample_archive: Path, tiny_edsr: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.tif"
    restore(
        sample_archive,
        other,
        RestoreOptions(model=str(tiny_edsr), device="cpu", tile=512, batch=3, workers=1, lossless=True, progress=False),
    )
    assert np.array_equal(level0(other), level0(full_restore))


def test_tiles_are_seamless(full_restore: Path, sample_archive: Path, tiny_edsr: Path) -> None:
    """The tiled restore equals the generator run on the whole LR image at once."""
    archive = Archive.open(sample_archive)
    model = load_generator(str(tiny_edsr)).model
    h = halo_for(model.receptive_field)
    lr = archive.read_lr(0, (0, 0, 555, 742))
    window = torch.from_numpy(extract_window(lr, (-h, -h, 555 + h, 742 + h))).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        whole = to_uint8(model(window)[0]).permute(1, 2, 0).numpy()
    whole = whole[4 * h : 4 * h + 2967, 4 * h : 4 * h + 2220]
    tiled = level0(full_restore)
    assert np.abs(tiled.astype(int) - whole).max() <= 1  # convolution kernels differ by input size
    assert np.mean(tiled != whole) < 1e-3


def test_region_and_zarr_equal_the_full_restore(
    full_restore: Path, sample_archive: Path, tiny_edsr: Path, tmp_path: Path
) -> None:
    full = level0(full_restore)
    region = "1000,1200,700,500"
    x, y, w, h = (int(v) for v in region.split(","))
    common = {"model": str(tiny_edsr), "device": "cpu", "region": (x, y, w, h), "progress": False}
    tif = restore(sample_archive, tmp_path / "r.tif", RestoreOptions(lossless=True, tile=256, **common))
    assert (tif.width, tif.height) == (700, 500)
    assert np.array_equal(level0(tmp_path / "r.tif"), full[y : y + h, x : x + w])
    restore(sample_archive, tmp_path / "r.zarr", RestoreOptions(format="zarr", tile=128, **common))
    group = zarr.open_group(tmp_path / "r.zarr", mode="r")
    assert np.array_equal(np.moveaxis(group["0"][:], 0, 2), full[y : y + h, x : x + w])
    assert group["1"].shape == (3, 125, 175)  # the stored 4x level under the region
    attrs = group.attrs.asdict()
    assert attrs["wsistore_restore"]["super_resolved"] is True
    assert attrs["wsistore_restore"]["generator"]["weights_sha256"] == sha256_file(tiny_edsr)
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[1:] == [0.499, 0.499]


def test_background_chunks_skip_the_generator(mosaic_slide: Path, tmp_path: Path, counting: LoadedGenerator) -> None:
    from wsistore.archive.writer import IngestOptions, ingest

    ingest(mosaic_slide, tmp_path / "m.zarr", IngestOptions(progress=False))
    archive = Archive.open(tmp_path / "m.zarr")
    lr = archive.level(0)
    chunks = [(r, c) for r in range(-(-lr.height // lr.chunk)) for c in range(-(-lr.width // lr.chunk))]
    background = [rc for rc in chunks if lr.chunk_state(*rc) == ChunkState.BACKGROUND]
    assert background  # the mosaic has glass chunks
    result = restore(
        tmp_path / "m.zarr",
        tmp_path / "m.tif",
        RestoreOptions(device="cpu", lossless=True, progress=False),
        generator=counting,
    )
    assert result.tiles_background == len(background)
    assert counting.model.windows == len(chunks) - len(background)  # 256 px compute tiles = chunks
    image = level0(tmp_path / "m.tif")
    glass = archive.metadata.tissue.background_rgb
    for r, c in background:
        assert (image[r * 1024 : (r + 1) * 1024, c * 1024 : (c + 1) * 1024] == glass).all()


def test_jpeg_tiles_and_icc_profile(tmp_path: Path) -> None:
    from wsistore.archive.writer import IngestOptions, ingest

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    slide = write_mosaic_slide(tmp_path / "icc.tif", [["lung_monuseg_18-5592"]], size=(1100, 1100), icc=icc)
    ingest(slide, tmp_path / "icc.zarr", IngestOptions(progress=False))
    restore(tmp_path / "icc.zarr", tmp_path / "jpeg.tif", RestoreOptions(model="bicubic", device="cpu", progress=False))
    restore(
        tmp_path / "icc.zarr",
        tmp_path / "exact.tif",
        RestoreOptions(model="bicubic", device="cpu", lossless=True, progress=False),
    )
    with tifffile.TiffFile(tmp_path / "jpeg.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG and tif.pages[0].tilewidth == 512
    for reader in ("openslide", "tiffslide"):
        with open_slide(tmp_path / "jpeg.tif", reader) as restored:
            assert restored.icc_profile == icc and restored.mpp == (0.25, 0.25)
            jpeg = restored.read_region((0, 0), 0, (1100, 1100)).astype(int)
    exact = level0(tmp_path / "exact.tif")
    assert np.abs(jpeg - exact).mean() < 3  # quality 90
    with open_slide(slide) as source:
        original = source.read_region((0, 0), 0, (1100, 1100)).astype(float)
    assert 10 * np.log10(255**2 / np.mean((exact - original) ** 2)) > 24  # aligned with the source


def test_interrupted_restore_is_incomplete_and_resumes(
    sample_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = RestoreOptions(model="bicubic", device="cpu", tile=256, lossless=True, progress=False)
    restore(sample_archive, tmp_path / "fresh.tif", options)
    out = tmp_path / "out.tif"
    interrupted_restore(monkeypatch, TileCodec, sample_archive, out, options, tiles=9 * 3)  # three rows of nine
    result = restore(sample_archive, out, replace(options, resume=True))
    assert result.rows_resumed == 3
    assert np.array_equal(level0(out), level0(tmp_path / "fresh.tif"))
    assert not (tmp_path / "out.tif.partial").exists()


def test_lazy_level0_pickles_for_distributed_workers(sample_archive: Path) -> None:
    """dask.distributed ships the graph to other processes: the restorer travels as its
    spec (archive URL, manifest, model, device) and is rebuilt there once."""
    import pickle

    from wsistore.restoration.engine import RestoreSpec, level0_array, restorer_for

    archive = Archive.open(sample_archive)
    spec = RestoreSpec(str(sample_archive), archive.metadata.manifest_sha256, "bicubic", "cpu")
    lazy = level0_array(restorer_for(spec))
    assert lazy.shape == (2967, 2220, 3) and lazy.chunksize == (1024, 1024, 3)
    shipped = pickle.loads(pickle.dumps(lazy[900:1100, 1000:1100]))
    assert np.array_equal(shipped.compute(), lazy[900:1100, 1000:1100].compute())


def test_an_archive_at_quality_60_restores_with_the_model_trained_on_its_lr(tmp_path: Path) -> None:
    """Ingested with ``--quality 60``, the archive restores by default with compact-l1-q60
    (named in the TIFF description, the OME-Zarr attributes and on-demand reads' properties);
    ``--model`` still overrides."""
    archive = tmp_path / "archive-q60.zarr"
    ingested = run("ingest", str(SLIDE), str(archive), "--quality", "60", "--no-adapt", "--quiet")
    assert ingested.returncode == 0, ingested.stderr
    common = {"device": "cpu", "region": (1000, 1200, 256, 256), "progress": False}
    matched = restore(archive, tmp_path / "q60.tif", RestoreOptions(lossless=True, **common))
    assert matched.generator["name"] == "compact-l1-q60"
    with tifffile.TiffFile(tmp_path / "q60.tif") as tif:
        assert "generator = compact-l1-q60" in tif.pages[0].description
    restore(archive, tmp_path / "q60.zarr", RestoreOptions(format="zarr", **common))
    attrs = zarr.open_group(tmp_path / "q60.zarr", mode="r").attrs.asdict()
    assert attrs["wsistore_restore"]["generator"]["name"] == "compact-l1-q60"
    with wsistore.open(archive, device="cpu") as slide:
        assert slide.properties["wsistore.generator"] == "compact-l1-q60"
    named = restore(archive, tmp_path / "gpu.tif", RestoreOptions(model="compact-l1-gpu", **common))
    assert named.generator["name"] == "compact-l1-gpu"
    with tifffile.TiffFile(tmp_path / "gpu.tif") as tif:
        assert "generator = compact-l1-gpu" in tif.pages[0].description
