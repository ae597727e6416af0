"""The loss map as a picture: one fixed colour scale, background transparent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wsistore.archive.reader import Archive
from wsistore.reports.loss_map import LOSS_VMAX, heat_map, legend, loss_figure


def test_heat_map_scale_and_background() -> None:
    loss = np.array([[np.nan, 0.0], [LOSS_VMAX, 4 * LOSS_VMAX]], dtype=np.float32)
    picture = heat_map(loss, cell_px=4)
    assert picture.shape == (8, 8, 4) and picture.dtype == np.uint8
    assert (picture[:4, :4, 3] == 0).all() and (picture[:4, 4:, 3] == 255).all()
    assert (picture[4:, :4] == picture[4:, 4:]).all()  # the scale stops at LOSS_VMAX
    assert picture[4, 0, :3].astype(int).sum() > picture[0, 4, :3].astype(int).sum() + 300  # bright = lossy
    assert legend(3)[0] != legend(3)[-1]


def test_loss_figure_of_the_sample(sample_archive: Path, tmp_path: Path) -> None:
    shown = loss_figure(Archive.open(sample_archive), tmp_path / "loss.png")
    loss = Archive.open(sample_archive).loss_map()
    assert loss is not None and shown["cells"] == list(loss.shape) and shown["cell_px"] == 1024
    assert shown["max_rms"] == float(np.nanmax(loss))
    assert Image.open(tmp_path / "loss.png").size[0] > 300
