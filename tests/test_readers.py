"""Readers: openslide and tiffslide agree on a real Aperio slide; mpp is never guessed;
bad files fail with one clear error; every input path has one kind and one way to open."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tests.data import SHARED, TILES
from wsistore.archive.writer import IngestOptions
from wsistore.errors import InputError
from wsistore.readers import (
    ArraySlide,
    PlainImageReader,
    TiffSlideReader,
    image_files,
    input_kind,
    open_input,
    open_slide,
    read_tile,
    resolve_mpp,
)


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_reads_the_real_svs(slide_path: Path, reader: str) -> None:
    with open_slide(slide_path, reader) as slide:
        assert slide.name == reader
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1 and slide.level_downsamples == (1.0,)
        assert slide.mpp == (0.499, 0.499)
        assert slide.mpp_source == "vendor metadata (aperio)"
        assert slide.vendor == "aperio"
        assert slide.objective_power == 20.0
        assert slide.properties["openslide.mpp-x"] == "0.499"
        assert set(slide.associated_image_names) == {"label", "macro", "thumbnail"}
        label = slide.associated_image("label")
        assert label.ndim == 3 and label.shape[2] == 3 and label.dtype == np.uint8
        region = slide.read_region((1000, 1200), 0, (300, 200))
        assert region.shape == (200, 300, 3) and region.dtype == np.uint8
        assert region.std() > 10  # real tissue, not blank


def test_backends_return_identical_pixels(slide_path: Path) -> None:
    with open_slide(slide_path, "openslide") as a, open_slide(slide_path, "tiffslide") as b:
        for loc in [(0, 0), (1500, 2000), (1919, 2666)]:
            assert np.array_equal(a.read_region(loc, 0, (301, 301)), b.read_region(loc, 0, (301, 301)))


@pytest.mark.parametrize(
    "name", ["skin_cmu1-small-region_aperio-20x.svs", "kidney_tcga-5P-A9K0-monusac-1_aperio-jp2k.svs", "mosaic"]
)
def test_tiffslide_tiles_decoded_in_the_calling_thread_equal_tiffslides_own(name: str, mosaic_slide: Path) -> None:
    """tiffslide levels that are one tiled page are decoded tile by tile in the reading thread;
    the pixels equal tiffslide's own read at every level, across tile edges and the border."""
    path = mosaic_slide if name == "mosaic" else SHARED / "slides" / name
    rng = np.random.default_rng(7)
    with open_slide(path, "tiffslide") as slide:
        assert isinstance(slide, TiffSlideReader) and slide._tiles[0] is not None
        for level, (width, height) in enumerate(slide.level_dimensions):
            downsample = slide.level_downsamples[level]
            for _ in range(8):
                w, h = int(rng.integers(1, min(width, 700) + 1)), int(rng.integers(1, min(height, 700) + 1))
                x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                location = (round(x * downsample), round(y * downsample))
                theirs = slide._slide.read_region(location, level, (w, h), as_array=True)[..., :3]
                assert np.array_equal(slide.read_region(location, level, (w, h)), theirs)
            corner = (round((width - 5) * downsample), 0)
            assert np.array_equal(  # past the border: tiffslide pads, as before
                slide.read_region(corner, level, (9, 9)),
                slide._slide.read_region(corner, level, (9, 9), as_array=True)[..., :3],
            )


def test_auto_prefers_tiffslide_for_svs(slide_path: Path) -> None:
    with open_slide(slide_path) as slide:
        assert slide.name == "tiffslide"


def test_ome_tiff_mpp_from_ome_xml(tmp_path: Path, tile: np.ndarray) -> None:
    path = tmp_path / "crop.ome.tif"
    tifffile.imwrite(
        path,
        tile,
        tile=(256, 256),
        compression="zlib",
        photometric="rgb",
        metadata={"axes": "YXS", "PhysicalSizeX": 0.2527, "PhysicalSizeY": 0.2527},
    )
    with open_slide(path) as slide:
        assert slide.mpp == (0.2527, 0.2527)
        assert "OME" in slide.mpp_source
        assert np.array_equal(slide.read_region((0, 0), 0, (1000, 1000)), tile)


def test_mpp_from_tiff_resolution_tags_with_units() -> None:
    def tags(unit: str, x: str, y: str) -> dict[str, str]:
        return {"tiff.ResolutionUnit": unit, "tiff.XResolution": x, "tiff.YResolution": y}

    assert resolve_mpp(tags("centimeter", "40000", "20000"))[0] == (0.25, 0.5)
    assert resolve_mpp(tags("INCH", "101600", "101600"))[0] == (0.25, 0.25)
    # no unit, and objective power alone: unknown, never guessed
    assert resolve_mpp(tags("NONE", "1", "1")) == (None, None)
    assert resolve_mpp({"openslide.objective-power": "40"}) == (None, None)


def test_tiff_without_resolution_has_no_mpp(tmp_path: Path, tile: np.ndarray) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, tile, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None)
    with open_slide(path) as slide:
        assert slide.mpp is None


def test_icc_profile_is_read_raw(tmp_path: Path, tile: np.ndarray) -> None:
    icc = _srgb_icc()
    path = tmp_path / "icc.tif"
    tifffile.imwrite(path, tile, tile=(256, 256), compression="jpeg", photometric="rgb", iccprofile=icc, metadata=None)
    for reader in ("openslide", "tiffslide"):
        with open_slide(path, reader) as slide:
            assert slide.icc_profile == icc


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_slide(tmp_path / "nope.svs")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        open_slide(tmp_path)


def test_not_a_slide(tmp_path: Path) -> None:
    path = tmp_path / "notes.svs"
    path.write_text("a text file, not a slide\n")
    with pytest.raises(InputError, match="not a slide"):
        open_slide(path)


def test_plain_png_opens_as_a_plain_image() -> None:
    """A PNG has no pyramid and no mpp: the plain-image reader says so."""
    tile = TILES / "lung_monuseg_18-5592.png"
    for reader in ("auto", "image"):
        with open_slide(tile, reader) as slide:
            assert isinstance(slide, PlainImageReader) and slide.name == "image"
            assert slide.vendor == "plain image (PNG)" and slide.path == tile
            assert slide.level_count == 1 and slide.level_downsamples == (1.0,)
            assert slide.associated_image_names == ()
            assert slide.mpp is None and slide.mpp_source is None
            assert np.array_equal(slide.read_region((0, 0), 0, slide.dimensions), read_tile(tile))


def test_plain_jpeg_and_bmp(tmp_path: Path, tile: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(tile).save(tmp_path / "t.jpg", quality=90)
    Image.fromarray(tile).save(tmp_path / "t.bmp")
    with open_slide(tmp_path / "t.jpg") as jpeg, open_slide(tmp_path / "t.bmp") as bmp:
        assert jpeg.vendor == "plain image (JPEG)" and bmp.vendor == "plain image (BMP)"
        assert np.array_equal(bmp.read_region((0, 0), 0, (1000, 1000)), tile)
        assert np.abs(jpeg.read_region((0, 0), 0, (1000, 1000)).astype(int) - tile).mean() < 4


def test_palette_tiff_falls_back_to_the_plain_image_reader(tmp_path: Path, tile: np.ndarray) -> None:
    """tiffslide reads a palette TIFF's indices as grey; neither slide reader reads it right."""
    from PIL import Image

    palette = Image.fromarray(tile).convert("P")
    palette.save(tmp_path / "palette.tif")
    with open_slide(tmp_path / "palette.tif") as slide:
        assert slide.name == "image" and slide.vendor == "plain image (TIFF)" and slide.mpp is None
        assert np.array_equal(slide.read_region((0, 0), 0, (1000, 1000)), np.asarray(palette.convert("RGB")))
    with pytest.raises(InputError, match="palette-colour TIFF"):
        open_slide(tmp_path / "palette.tif", "tiffslide")


def test_plain_image_too_large_or_not_8_bit(tmp_path: Path, tile: np.ndarray) -> None:
    from PIL import Image

    from benchmarks.reliability.bad_inputs import _png_header

    (tmp_path / "huge.png").write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(InputError, match="too large to read whole"):
        open_slide(tmp_path / "huge.png")
    Image.fromarray(tile[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    with pytest.raises(InputError, match="not supported; wsistore archives 8-bit RGB brightfield"):
        open_slide(tmp_path / "grey16.png")


def test_plain_png_ingests_and_verifies(tmp_path: Path) -> None:
    """A real 1000 x 1000 tile (250 x 250 LR: smaller than one 256 chunk) archives with
    the defaults and verifies against its source."""
    import json

    import wsistore

    tile = TILES / "lung_monuseg_18-5592.png"
    archive = tmp_path / "tile.zarr"
    wsistore.ingest(tile, archive, IngestOptions(progress=False, workers=2))
    report = wsistore.verify(archive, against=tile, workers=2, progress=False)
    assert report.ok, report
    source = json.loads((archive / "zarr.json").read_text())["attributes"]["wsistore"]["source"]
    assert source["reader"] == "image" and source["vendor"] == "plain image (PNG)"
    assert source["mpp_x"] is None and source["level_count"] == 1


def test_greyscale_tiff_records_its_channels(tmp_path: Path, tile: np.ndarray) -> None:
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, tile[:, :, 1], tile=(256, 256), compression="zlib")
    with open_slide(path) as slide:
        assert slide.properties["wsistore.source-channels"] == "greyscale (1 channel), read as RGB"
        region = slide.read_region((0, 0), 0, (1000, 1000))
        assert region.shape == (1000, 1000, 3) and np.array_equal(region[:, :, 0], tile[:, :, 1])
        assert np.array_equal(region[:, :, 2], tile[:, :, 1])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t.astype(np.uint16) * 257, "16-bit uint16 samples"),
        (lambda t: np.stack([t[:, :, i % 3] for i in range(4)]), "multichannel image \\(4 channels"),
    ],
)
def test_not_8_bit_rgb_is_refused_by_name(tmp_path: Path, tile: np.ndarray, make: Any, message: str) -> None:
    path = tmp_path / "x.tif"
    data = make(tile)
    planes = data.shape[0] == 4
    photometric = "minisblack" if planes else "rgb"
    axes = {"axes": "CYX"} if planes else None
    tifffile.imwrite(path, data, tile=(256, 256), compression="zlib", photometric=photometric, metadata=axes)
    with pytest.raises(InputError, match=message):
        open_slide(path)


def test_multichannel_fluorescence_qptiff_is_refused() -> None:
    with pytest.raises(InputError, match="multichannel image \\(3 channels, axes CYX\\)"):
        open_slide(SHARED / "slides" / "fluor_vectra-polaris_pathml.qptiff")


def test_truncated_tiff_is_refused_even_with_an_intact_base(tmp_path: Path, slide_path: Path) -> None:
    """Cut inside a later image directory: the base image reads, but the label and macro
    would be lost; cut inside tile data: the data ends beyond the file."""
    data = slide_path.read_bytes()
    for cut in (1_474_372, len(data) - 1, 300_000):
        path = tmp_path / f"cut{cut}.svs"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match="truncated"):
            open_slide(path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        open_slide(tmp_path / "empty.svs")


def test_unknown_reader(slide_path: Path) -> None:
    with pytest.raises(InputError, match="unknown reader"):
        open_slide(slide_path, "pillow")


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_truncated_slide_fails_cleanly(tmp_path: Path, slide_path: Path, reader: str) -> None:
    """A slide cut short: either it does not open, or reading the lost part says so."""
    path = tmp_path / "truncated.svs"
    data = slide_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        slide = open_slide(path, reader)
        slide.read_region((0, 0), 0, slide.dimensions)


def _srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_copy_of_slide_is_still_read(tmp_path: Path, slide_path: Path) -> None:
    """Reading does not depend on the file name."""
    copy = tmp_path / "renamed.tiff"
    shutil.copy(slide_path, copy)
    with open_slide(copy) as slide:
        assert slide.dimensions == (2220, 2967)


def test_input_kinds_and_folders(tmp_path: Path, slide_path: Path) -> None:
    tile = TILES / "lung_monuseg_18-5592.png"
    (tmp_path / "a.zarr").mkdir()
    (tmp_path / "a.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    shutil.copy(tile, tmp_path / "t.PNG")
    shutil.copy(slide_path, tmp_path / "sub" / "s.svs")
    (tmp_path / "notes.txt").write_text("x")
    kinds = [input_kind(p) for p in (tmp_path / "a.zarr", tmp_path, tile, slide_path)]
    assert kinds == ["archive", "folder", "tile", "slide"]
    assert image_files(tmp_path) == [tmp_path / "t.PNG"]
    assert image_files(tmp_path, recursive=True) == [tmp_path / "sub" / "s.svs", tmp_path / "t.PNG"]
    with pytest.raises(InputError, match="no such file or folder"):
        input_kind(tmp_path / "none.png")


def test_open_input(tmp_path: Path, slide_path: Path) -> None:
    tile = TILES / "lung_monuseg_18-5592.png"
    with open_input(tile) as array:
        assert isinstance(array, ArraySlide) and isinstance(array, PlainImageReader) and array.path == tile
        assert np.array_equal(array.read_region((0, 0), 0, array.dimensions), read_tile(tile))
    with open_input(slide_path, "openslide") as slide:
        assert slide.name == "openslide"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        read_tile(tmp_path / "bad.png")
