"""Pixel truth at the readers: the slide is the file's main image whatever its page order, and
frames go where the file puts them, checked against the truth image the test wrote (never
through the code under test alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data import SHARED
from tests.slides import (
    real_image,
    write_dicom_frames,
    write_multi_series_ome_tiff,
    write_thumbnail_first_tiff,
)
from wsistore.errors import InputError
from wsistore.psnr import psnr_from_mse
from wsistore.readers import DicomFramesReader, independent_reader, open_slide
from wsistore.readers.placement import FrameGrid, decide_frame_order


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b) ** 2)))


def _whole(path: Path, **kwargs: str | None) -> np.ndarray:
    with open_slide(path, **kwargs) as slide:  # type: ignore[arg-type]
        return slide.read_region((0, 0), 0, slide.dimensions)


@pytest.mark.parametrize("order", ["row", "column"])
def test_frames_of_unstated_order_are_placed_as_their_seams_tell(tmp_path: Path, order: str) -> None:
    truth = real_image()
    path = write_dicom_frames(tmp_path / f"{order}.dcm", truth, order=order)
    with open_slide(path) as slide:
        assert slide.properties["wsistore.dicom-frame-order"] == order
        assert slide.properties["wsistore.dicom-frame-order-evidence"].startswith("decided from the frames")
        assert f"frames placed {order} by {order}" in slide.properties["wsistore.dicom-repairs"]
        assert _psnr(slide.read_region((0, 0), 0, slide.dimensions), truth) > 38  # JPEG q95 only
    with DicomFramesReader(path) as frames:
        assert _psnr(frames.read_region((0, 0), 0, frames.dimensions), truth) > 38


def test_frames_whose_seams_do_not_tell_are_refused_unless_named(tmp_path: Path) -> None:
    """Flat frames of different colours step at every seam in either order: refused in one line
    naming --frame-order; named, the frames are placed so."""
    rng = np.random.default_rng(0)
    cells = rng.integers(30, 226, size=(3, 4, 3))
    flat = np.repeat(np.repeat(cells, 250, axis=0), 250, axis=1)[:744, :1000]
    truth = (flat + rng.integers(-3, 4, size=flat.shape)).astype(np.uint8)
    path = write_dicom_frames(tmp_path / "flat.dcm", truth, order="column")
    with pytest.raises(InputError, match=r"do not tell row by row from column by column .*--frame-order row\|column"):
        open_slide(path)
    assert _psnr(_whole(path, frame_order="column"), truth) > 35
    assert _psnr(_whole(path, frame_order="row"), truth) < 20  # the user's word is followed where seams are mute
    with open_slide(path, frame_order="column") as slide:
        assert slide.properties["wsistore.dicom-frame-order-evidence"].startswith("given by the user")


def test_a_named_order_that_the_seams_contradict_is_refused(tmp_path: Path) -> None:
    path = write_dicom_frames(tmp_path / "c.dcm", real_image(), order="column")
    with pytest.raises(InputError, match="--frame-order row contradicts the frames: their seams join column by column"):
        open_slide(path, frame_order="row")


@pytest.mark.parametrize("organisation", ["TILED_SPARSE", None])
def test_sparse_frames_in_any_order_go_to_their_positions(tmp_path: Path, organisation: str | None) -> None:
    """Per-frame positions place the frames, whether or not the instance names its organisation
    (positions with no Dimension Organization Type, as Orthanc's own WSI converter writes)."""
    truth = real_image()
    path = write_dicom_frames(tmp_path / "sparse.dcm", truth, positions=True, shuffle_seed=5, organisation=organisation)
    with open_slide(path) as slide:
        assert "wsistore.dicom-frame-order" not in slide.properties  # stated by the file: nothing decided
    assert _psnr(_whole(path), truth) > 38
    with DicomFramesReader(path) as frames:
        assert _psnr(frames.read_region((0, 0), 0, frames.dimensions), truth) > 38


def test_the_shared_dicom_is_the_coherent_slide() -> None:
    """Its frames are stored column by column with no stated order; the decision is decisive."""
    path = SHARED / "slides" / "prostate_tcga-xk-aaju-ts1_pathml.dcm"
    with open_slide(path) as slide:
        evidence = slide.properties["wsistore.dicom-frame-order-evidence"]
    assert slide.properties["wsistore.dicom-frame-order"] == "column" and "row by row 12." in evidence


def test_seam_decision_on_a_one_row_grid_needs_no_evidence() -> None:
    decision = decide_frame_order(FrameGrid((100, 100), (500, 80)), lambda k: np.zeros((100, 100, 3)))
    assert decision.order == "row" and decision.pairs == 0


@pytest.mark.parametrize("write", [write_thumbnail_first_tiff, write_multi_series_ome_tiff])
def test_the_slide_is_the_main_image_whatever_the_page_order(tmp_path: Path, write: object) -> None:
    truth = real_image(1000, 744)
    path = write(tmp_path / "s.tif", truth)  # type: ignore[operator]
    with open_slide(path) as slide:
        assert slide.name == "tiffslide" and slide.dimensions == (1000, 744)
        assert slide.level_dimensions == ((1000, 744), (500, 372))
        assert _psnr(slide.read_region((0, 0), 0, slide.dimensions), truth) > 38
        if write is write_multi_series_ome_tiff:
            assert slide.mpp == (0.25, 0.25)  # the main series' own physical size
    second, why = independent_reader(path, "tiffslide")
    assert second is None and why.startswith("openslide cannot read it")  # said plainly by verify


def test_a_macro_larger_than_the_scan_stays_the_macro() -> None:
    """The shared JP2K SVS's macro (1544 x 3469) is larger than its scan (1307 x 1153)."""
    path = SHARED / "slides" / "kidney_tcga-5P-A9K0-monusac-1_aperio-jp2k.svs"
    for reader in ("tiffslide", "openslide"):
        with open_slide(path, reader) as slide:
            assert slide.dimensions == (1307, 1153) and "macro" in slide.associated_image_names


def test_vsi_is_refused_rather_than_archived_as_its_overview() -> None:
    path = SHARED / "slides" / "vsi" / "vsi-ets-test-jpg2k.vsi"
    with pytest.raises(InputError, match=r"Olympus VSI keeps its image in companion \.ets files .* Supported: Aperio"):
        open_slide(path)
    for reader in ("tiffslide", "openslide"):
        with pytest.raises(InputError, match="Olympus VSI"):
            open_slide(path, reader)


def test_zeiss_czi_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "s.czi"
    path.write_bytes(b"ZISRAWFILE" + bytes(100))
    with pytest.raises(InputError, match="Zeiss CZI, which no reader here decodes"):
        open_slide(path)
