"""Bench's crop panels show signal on real slides (never a black or blank square), dim
fluorescence is stretched alike in every panel, and the plots' legends sit outside the axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.data import DICOM_SLIDE, SHARED, SLIDE
from wsistore.readers import open_slide
from wsistore.reports.panels import CROP, choose_crop, cut, display_stretch, save_panel
from wsistore.reports.report import rd_figure

DAPI = SHARED / "slides" / "fluor_hamamatsu-test3-DAPI.ndpi"


def _read(path: Path, box: tuple[int, int, int, int]) -> np.ndarray:
    with open_slide(path) as slide:
        return slide.read_region(box[:2], 0, box[2:])


def _black(image: np.ndarray) -> float:
    return float((image.max(axis=2) < 30).mean())


def _stained(image: np.ndarray) -> float:
    """Share of pixels redder than green (H&E; not glass, black, or green/blue marker ink)."""
    return float((image[..., 0].astype(int) - image[..., 1] >= 8).mean())


def test_the_crop_avoids_a_large_black_area_on_a_real_slide() -> None:
    # the skin slide's most tissue-rich region with its left two thirds blanked to black, as
    # missing frames or padding read: the old rule (most dark pixels) chose black
    image = _read(SLIDE, (0, 768, 2048, 2048))
    image[:, :1360] = 0
    crop = cut(image, choose_crop(image))
    assert crop.shape == (CROP, CROP, 3)
    assert _black(crop) < 0.02 and _stained(crop) > 0.6 and crop.std() > 30
    assert display_stretch(image, crop) is None  # mostly black, yet bright-field: shown as is


def test_the_dicom_crop_is_tissue() -> None:
    # the DICOM holds blank frames as read today, and green and blue marker ink
    image = _read(DICOM_SLIDE, (0, 0, 3236, 2638))
    crop = cut(image, choose_crop(image))
    assert _black(crop) < 0.02 and _stained(crop) > 0.8 and crop.std() > 30


def test_a_fluorescence_crop_is_where_the_signal_is() -> None:
    image = _read(DAPI, (0, 0, 2048, 2048))  # bench's region of it: mostly dark background
    background = float(np.median(image.max(axis=2)))
    crop = cut(image, choose_crop(image))
    assert float(np.mean(crop.max(axis=2) > 4 * background + 40)) > 0.3


def test_dim_fluorescence_is_stretched_alike_and_said(tmp_path: Path) -> None:
    image = _read(DAPI, (0, 0, 2048, 2048)) // 4  # a dim channel: signal peaks near 64
    original = cut(image, choose_crop(image))
    stretch = display_stretch(image, original)
    assert stretch is not None and stretch.high <= 64
    shown = stretch.apply(original)
    assert np.percentile(shown.max(axis=2), 99.5) >= 250
    halved = original // 2  # a second panel: the same mapping, so it shows darker
    assert stretch.apply(halved).mean() < shown.mean()
    assert "stretched to 0-255 in every panel" in stretch.describe()
    path = save_panel({"original": original, "half": halved}, tmp_path / "p.png", "dim", stretch)
    assert np.asarray(Image.open(path).convert("RGB")).max() >= 250


def test_bright_field_is_shown_as_is() -> None:
    image = _read(SLIDE, (0, 768, 1024, 1024))
    assert display_stretch(image, cut(image, choose_crop(image))) is None


def test_the_legend_is_outside_the_axes_and_inside_the_figure() -> None:
    curves = [f"hybrid avif LR + compact-l1-gpu+adapted, HR avif:level=40,speed=6 lambda {lam}" for lam in range(30)]
    curves += ["avif full resolution", "archive avif LR + bicubic"]
    rows = [
        {"curve": c, "family": c.partition(" ")[0], "bpp": b, "metrics": {"psnr": 25 + 10 * b + i / 10}}
        for i, c in enumerate(curves)
        for b in (0.05, 0.1, 0.3, 1.0)
    ]
    fig = rd_figure(rows, "psnr", 1.5)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    (ax,) = fig.axes
    (legend,) = fig.legends
    box, axes, figure = legend.get_window_extent(renderer), ax.get_window_extent(renderer), fig.bbox
    assert len(legend.get_texts()) == len(curves) + 1
    assert box.x0 >= axes.x1  # right of the axes: covers no curve
    assert figure.x0 <= box.x0 and box.x1 <= figure.x1 and figure.y0 <= box.y0 and box.y1 <= figure.y1


def test_an_image_smaller_than_the_crop_is_cut_whole() -> None:
    image = np.full((100, 120, 3), 200, np.uint8)
    assert choose_crop(image) == (0, 0) and cut(image, (0, 0)).shape == image.shape
