"""OHIF's microscopy viewer (the prebuilt ``@ohif/app`` from npm, :mod:`benchmarks.ohif`), served
locally from another origin than ``wsistore serve``, opens a slide over serve's DICOMweb in
Debian's headless Chromium and draws tissue. Everything runs in the test's network namespace
(loopback alone), so the app can load nothing from outside. The app is fetched by ``.ci/run``
(``python -m benchmarks.ohif fetch``); without it the test is skipped, under CI it fails."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from benchmarks import ohif
from benchmarks.browser import chromium
from tests.dicomweb.conftest import SERVE_PORT
from tests.serve.conftest import LoggedRequests, need_browser
from wsistore.serve.app import build_app, open_slides
from wsistore.serve.server import ServerThread

OHIF_PORT = 3000
#: The viewport in a 1280 x 900 window: right of the tool bar, below the header, left of the side panel.
VIEWPORT = (40, 52, 990, 745)


def tissue_fraction(screenshot: Path) -> float:
    """The share of the viewport's pixels in H&E colours: stained (red well above green),
    neither glass (white) nor the viewer's black."""
    rgb = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.int32)
    x0, y0, x1, y1 = VIEWPORT
    r, g, b = (rgb[y0:y1, x0:x1, k] for k in range(3))
    stained = (r - g > 25) & (b > 60) & (r + g + b < 690)
    return float(stained.mean())


def test_ohif_microscopy_viewer_shows_a_served_slide(sample_archive: Path, tmp_path: Path) -> None:
    need_browser()
    dist = ohif.installed()
    if dist is None:
        message = f"OHIF {ohif.VERSION} is not fetched (python -m benchmarks.ohif fetch)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    slides = open_slides([sample_archive], "bicubic", "cpu", workers=2)
    screenshot = tmp_path / "ohif.png"
    with LoggedRequests() as log, ServerThread(build_app(slides), port=SERVE_PORT) as server:
        study = requests.get(f"{server.url}/dicomweb/studies", timeout=60).json()[0]["0020000D"]["Value"][0]
        with ServerThread(ohif.app(dist, f"{server.url}/dicomweb"), port=OHIF_PORT) as viewer:
            with chromium(1280, 900, flags=("--enable-unsafe-swiftshader",)) as driver:
                driver.get(f"{viewer.url}/microscopy?StudyInstanceUIDs={study}")
                deadline, fraction = time.monotonic() + 120, 0.0
                while time.monotonic() < deadline:
                    time.sleep(3)
                    driver.save_screenshot(str(screenshot))
                    frames = [p for p, status in log.seen if "/frames/" in p and status == 200]
                    fraction = tissue_fraction(screenshot)
                    if len(frames) >= 4 and fraction > 0.1:
                        break
                errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    dicomweb = [(p, status) for p, status in log.seen if p.startswith("/dicomweb/")]
    assert [p for p, status in dicomweb if status != 200] == [], dicomweb
    assert any(p.endswith("/metadata") for p, _ in dicomweb)
    assert len([p for p, _ in dicomweb if "/frames/" in p]) >= 4
    assert fraction > 0.1, f"{fraction:.1%} of the viewport is tissue (screenshot {screenshot})"
    assert errors == [], errors
