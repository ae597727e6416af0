"""Readers: openslide and tiffslide agree on a real Aperio slide; mpp is never guessed;
bad files fail with one clear error; every input path has one kind and one way to open."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.data import TILES
from wsistore.errors import InputError
from wsistore.readers import ArraySlide, image_files, input_kind, open_input, open_slide, read_tile, resolve_mpp


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


def test_not_a_slide() -> None:
    with pytest.raises(InputError, match="not a slide"):
        open_slide(TILES / "lung_monuseg_18-5592.png")


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
        assert isinstance(array, ArraySlide) and array.path.name == tile.name
        assert np.array_equal(array.read_region((0, 0), 0, array.dimensions), read_tile(tile))
    with open_input(slide_path, "openslide") as slide:
        assert slide.name == "openslide"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        read_tile(tmp_path / "bad.png")
