"""napari itself, on Xvfb, opens the sample archive through the plugin it discovers (npe2,
the ``napari.manifest`` entry point): one multiscale RGB layer in micrometres, level 0 restored
as napari pans (the pixels of ``read_region``), a screenshot with tissue in it, the loss map
aligned beside it; a folder that is no archive gets napari's "no reader", and a damaged chunk
napari's error notification with the archive's message."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import wsistore
from benchmarks.napari_view import available, look_at, set_canvas, spin, virtual_display
from tests.restoration.test_errors import flip_byte
from wsistore.archive.reader import Archive
from wsistore.models.weights import default_model
from wsistore.napari_plugin.levels import DAMAGED_RGB, ProgressiveLevel


@pytest.fixture(scope="module")
def napari_display() -> Iterator[str]:
    """An Xvfb display for napari (skipped without Xvfb, failed under CI, which installs it)."""
    missing = available()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install Xvfb: {missing}")
        pytest.skip(missing)
    with virtual_display() as display:
        yield display
        import napari

        napari.Viewer.close_all()  # before the display goes (a failed test may leave one open)


@pytest.fixture
def viewer(napari_display: str) -> Iterator[Any]:
    import napari

    viewer = napari.Viewer(show=True)  # shown on Xvfb: napari renders only a shown canvas
    yield viewer
    for layer in list(viewer.layers):
        if layer.multiscale and isinstance(layer.data[0], ProgressiveLevel):
            layer.data[0].close()
    viewer.close()


def restored(layer: Any) -> bool:
    """Whether napari's latest read of level 0 was restored everywhere it looked."""
    level = layer.data[0]
    return layer.data_level == 0 and level.pending == 0 and level.last_read_complete


def test_napari_opens_an_archive_at_full_resolution(viewer: Any, sample_archive: Path) -> None:
    from napari.plugins import _npe2

    readers = _npe2.get_readers(str(sample_archive))  # napari's plugin manager found the manifest
    assert readers.get("wsistore") == "wsistore", readers
    image, loss = viewer.open(sample_archive, plugin="wsistore")
    set_canvas(viewer, 800, 600)
    archive = Archive.open(sample_archive)

    source = archive.metadata.source.file_name
    assert image.multiscale and image.rgb and image.name == source
    assert [tuple(s) for s in image.level_shapes] == [(2967, 2220), (742, 555), (371, 278), (186, 139)]
    assert tuple(image.scale) == (0.499, 0.499) and [str(u) for u in image.units] == ["micrometer"] * 2
    meta = image.metadata["wsistore"]
    assert meta["generator"]["name"] == default_model(archive.codec) and meta["source"] == source
    assert "adaptation" in meta and meta["mode"] == archive.metadata.mode

    # the whole slide in view: a stored level, no generator work
    spin(0.5)
    assert image.data_level > 0 and image.data[0].pending == 0

    # full resolution at the epidermis: level 0, restored tile by tile behind the stored level
    look_at(viewer, image, 1250, 1900)
    spin(until=lambda: restored(image))
    with wsistore.open(sample_archive) as slide:
        exact = np.asarray(slide.read_region((1000, 1700), 0, (500, 400)))[..., :3]
    assert np.array_equal(image.data[0][1700:2100, 1000:1500], exact)
    shown = np.asarray(image._slice.image.raw)  # what napari holds for the canvas now
    y0, x0 = (int(v) for v in image.corner_pixels[0][:2])
    assert np.array_equal(shown[1700 - y0 : 2100 - y0, 1000 - x0 : 1500 - x0], exact)

    spin(0.3)
    shot = viewer.screenshot(canvas_only=True)[..., :3].astype(int)
    assert shot.shape[:2] == (600, 800)
    tissue = (shot.max(axis=2) - shot.min(axis=2) > 40) & (shot.mean(axis=2) < 200)  # stained, not glass
    assert tissue.mean() > 0.5, tissue.mean()

    # the loss map: one cell per level-0 chunk, over the image's extent, hidden until asked for
    assert not loss.visible and loss.data.shape == archive.loss_map().shape == (3, 3)
    # cell (2, 1) lies on source pixels 2048..3071 x 1024..2047: its centre is theirs
    assert np.allclose(loss.data_to_world((2, 1)), image.data_to_world((2048 + 511.5, 1024 + 511.5)))
    assert np.allclose(loss.scale, (1024 * 0.499, 1024 * 0.499))


def test_a_folder_that_is_no_archive_gets_no_reader(viewer: Any, tmp_path: Path, sample_archive: Path) -> None:
    from wsistore.napari_plugin.reader import get_reader

    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    (plain / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    for folder in (tmp_path, plain):
        assert get_reader(str(folder)) is None
        with pytest.raises(ValueError, match="refused the file"):  # napari's own "no reader"
            viewer.open(folder, plugin="wsistore")
    assert get_reader(str(sample_archive)) is not None and get_reader([str(sample_archive)] * 2) is None


def test_a_damaged_chunk_shows_the_archives_message(viewer: Any, archive_copy: Path) -> None:
    from napari.utils.notifications import notification_manager

    flip_byte(archive_copy / "0" / "c" / "0" / "0" / "0")  # level 0, chunk row 0 col 0
    before = len(notification_manager.records)
    image, _ = viewer.open(archive_copy, plugin="wsistore")
    set_canvas(viewer, 800, 600)
    look_at(viewer, image, 400, 400)

    def named() -> bool:
        return any("chunk 0 row 0 col 0 is damaged" in str(n.message) for n in notification_manager.records[before:])

    spin(until=named, timeout=60)
    assert (image.data[0][0:800, 0:800] == DAMAGED_RGB).all()  # painted, never black nor a guess
