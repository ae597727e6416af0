"""The viewer page of ``wsistore serve`` in a real headless Chromium (Debian's, never a
downloaded one) over the real sample archive and the default model: it opens, zooms to full
resolution, draws super-resolved tissue, swipes against bicubic and overlays the loss map;
its address keeps the view, so a copied address opens the same view; a slide without mpp
shows a note in place of the scale bar; a hybrid archive's chunks stored at full resolution
are an overlay too, kept in the address. Also: the viewer's assets come from this server
only, the loss-map heat map and the chunk-modes picture."""

from __future__ import annotations

import io
import json
import re
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from benchmarks.browser import chromium
from benchmarks.viewer_screenshots import serve_and_capture
from tests.serve.conftest import fetch, need_browser, running, wait_for
from wsistore.reports.loss_map import heat_map

STATIC = Path(__file__).parents[2] / "wsistore" / "serve" / "static"
HEADER_PX = 100  # the page's header above the viewer in a screenshot


def _viewer_pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)[HEADER_PX:]


def _sharpness(rgb: np.ndarray) -> float:
    return float(ndimage.laplace(rgb.mean(axis=2)).var())


def test_viewer_in_chromium_shows_super_resolved_tissue(sample_archive: Path, tmp_path: Path) -> None:
    need_browser()
    result = serve_and_capture(sample_archive, tmp_path)
    assert result["model"] == "compact-l1-gpu" and result["browser_errors"] == []
    assert result["image_zoom"] == pytest.approx(1.0)  # one screen pixel per source pixel

    # the page asked for super-resolved tiles of the finest DeepZoom level, by versioned URL
    finest = f"/slides/sample/{result['version']}/12/"
    model_tiles = [p for p in result["requests"] if p.startswith(finest) and "method=" not in p]
    bicubic_tiles = [p for p in result["requests"] if p.startswith(finest) and p.endswith("?method=bicubic")]
    assert len(model_tiles) >= 12 and len(bicubic_tiles) >= 12
    assert "/slides/sample/loss-map.png" in result["requests"]
    assert result["tiles_loaded"]["model"] >= len(model_tiles)

    model = _viewer_pixels(tmp_path / "viewer-model.png")
    bicubic = _viewer_pixels(tmp_path / "viewer-bicubic.png")
    swipe = _viewer_pixels(tmp_path / "viewer-swipe.png")
    # tissue was drawn: H&E colours (red above green), far from a blank or white canvas
    assert model.std() > 25 and model[..., 0].mean() > model[..., 1].mean() + 10
    # the model is not bicubic: sharper, on the same tissue
    assert _sharpness(model) > 1.2 * _sharpness(bicubic)
    assert np.abs(model.mean(axis=(0, 1)) - bicubic.mean(axis=(0, 1))).max() < 6
    # swipe: bicubic left of the line, the model right of it (labels and line left out)
    h, w = swipe.shape[:2]
    left, right = slice(w // 8, w // 2 - 20), slice(w // 2 + 20, w - w // 8)
    rows = slice(150, h - 60)
    assert np.abs(swipe[rows, left] - bicubic[rows, left]).mean() < 1.0
    assert np.abs(swipe[rows, right] - model[rows, right]).mean() < 1.0
    assert np.abs(swipe[rows, left] - model[rows, left]).mean() > 2.0
    # loss map: the whole slide, tinted by the overlay
    loss = _viewer_pixels(tmp_path / "viewer-loss-map.png")
    assert loss.std() > 15


def test_viewer_assets_come_from_this_server_only(sample_archive: Path) -> None:
    package = json.loads((STATIC / "openseadragon" / "package.json").read_text())
    assert package["name"] == "openseadragon" and package["version"] == "6.1.1"
    assert "BSD" in package["license"] and (STATIC / "openseadragon" / "LICENSE.txt").is_file()
    with running(sample_archive, "bicubic") as srv:
        page = srv.get("/slides/sample")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        html = page.body.decode()
        assert "/static/openseadragon/openseadragon.min.js" in html and 'data-summary="/slides/sample.json"' in html
        for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not re.match(r"[a-z]+://", ref), ref  # no CDN: every asset from this server
            if ref.startswith("/static/"):
                asset = srv.get(ref)
                assert asset.status == 200 and asset.body, ref
        script = srv.get("/static/viewer.js").body.decode()
        assert "://" not in script.replace("http://www.w3.org", "")
        assert srv.get("/static/openseadragon/images/zoomin_rest.png").status == 200
        assert srv.get("/static/nothing.js").status == 404
        assert srv.get("/slides/nothing").status == 404
        assert "/slides/sample" in srv.get("/").body.decode()


def test_loss_map_heat_map_and_its_place(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic") as srv:
        summary = json.loads(srv.get("/slides/sample.json").body)["loss_map"]
        reply = srv.get("/slides/sample/loss-map.png")
        assert reply.status == 200 and reply.headers["content-type"] == "image/png"
        again = srv.get("/slides/sample/loss-map.png", {"If-None-Match": reply.headers["etag"]})
        assert again.status == 304
        loss = srv.slide.archive.loss_map()
    assert loss is not None
    picture = np.asarray(Image.open(io.BytesIO(reply.body)))
    cell, per_cell = summary["cell"], summary["cell_px"]
    assert cell == 1024 and per_cell == 16  # 256-pixel LR chunks at scale 4
    # the heat map covers the slide (2220 x 2967) and no more than one heat-map pixel past it
    assert picture.shape == (-(-2967 * per_cell // cell), -(-2220 * per_cell // cell), 4)
    assert summary["world_width"] * 2220 == pytest.approx(picture.shape[1] * cell / per_cell)
    assert np.array_equal(picture, heat_map(loss, cell_px=per_cell)[: picture.shape[0], : picture.shape[1]])
    assert summary["values"][1][1] == pytest.approx(float(loss[1, 1]), abs=0.01)
    assert len(summary["legend"]) >= 2 and summary["vmax"] > 0


def test_an_archive_without_a_loss_map_is_served_without_one(archive_copy: Path, tmp_path: Path) -> None:
    from tests.archive.test_loss_map import _as_format_1_1
    from wsistore.cli import main

    _as_format_1_1(archive_copy)
    with running(archive_copy, "bicubic") as srv:
        name = srv.slide.name
        assert json.loads(srv.get(f"/slides/{name}.json").body)["loss_map"] is None
        missing = srv.get(f"/slides/{name}/loss-map.png")
        assert missing.status == 404 and b"no loss map" in missing.body
        assert srv.get(f"/slides/{name}").status == 200
    assert main(["info", str(archive_copy), "--loss-map", str(tmp_path / "loss.png")]) == 2
    assert not (tmp_path / "loss.png").exists()


_VIEW = (
    "const s = window.wsistore, v = s.viewer, it = v.world.getItemAt(0);"
    "const c = it.viewportToImageCoordinates(v.viewport.getCenter(true));"
    "return {x: c.x, y: c.y, zoom: it.viewportToImageZoom(v.viewport.getZoom(true)), mode: s.mode,"
    " checked: document.querySelector('input[name=method]:checked').value, swipe: s.swipe,"
    " loss: document.getElementById('loss-toggle').checked, href: location.href};"
)


def _hash(href: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(href).fragment))


def test_the_address_keeps_the_view_and_opens_it_again(sample_archive: Path) -> None:
    need_browser()
    with running(sample_archive, "bicubic") as srv, chromium() as driver:
        driver.get(f"{srv.url}/slides/sample")
        wait_for(driver, "return window.wsistore && window.wsistore.ready")
        home = _hash(wait_for(driver, "return location.hash.length > 1 && location.href"))
        assert home["mode"] == "model" and float(home["zoom"]) < 0.5  # the whole slide, written on open
        # pan and zoom through OpenSeadragon, compare and overlay through the page's controls
        driver.execute_script(
            "const v = window.wsistore.viewer, it = v.world.getItemAt(0);"
            "v.viewport.zoomTo(it.imageToViewportZoom(0.75));"
            "v.viewport.panTo(it.imageToViewportCoordinates(1250, 1900));"
        )
        driver.find_element("css selector", "input[value=swipe]").click()
        driver.execute_script(
            "const r = document.getElementById('swipe-position'); r.value = 30; r.dispatchEvent(new Event('input'));"
        )
        driver.find_element("id", "loss-toggle").click()
        shared = wait_for(
            driver,
            "const vp = window.wsistore.viewer.viewport;"  # the animation over, and the address written
            "return vp.getZoom(true) === vp.getZoom(false) && vp.getCenter(true).equals(vp.getCenter(false))"
            " && /loss=1/.test(location.hash) && /x=1250\\.0/.test(location.hash) && location.href",
        )
        before = driver.execute_script(_VIEW)
        assert before["href"] == shared and before["x"] == pytest.approx(1250) and before["zoom"] == pytest.approx(0.75)
        view = _hash(shared)
        assert view["mode"] == "swipe" and view["swipe"] == "30" and view["loss"] == "1"
        assert (float(view["x"]), float(view["y"])) == (1250.0, 1900.0)
        assert float(view["zoom"]) == pytest.approx(0.75, rel=1e-4)

        driver.switch_to.new_window("tab")  # a fresh page, as from a link someone sent
        driver.get(shared)
        wait_for(driver, "return window.wsistore && window.wsistore.ready")
        after = driver.execute_script(_VIEW)
        assert after["x"] == pytest.approx(before["x"], abs=0.5) and after["y"] == pytest.approx(before["y"], abs=0.5)
        assert after["zoom"] == pytest.approx(before["zoom"], rel=1e-3)
        assert after["mode"] == after["checked"] == "swipe" and after["swipe"] == pytest.approx(0.3)
        assert after["loss"] is True
        wait_for(driver, "const w = window.wsistore.viewer.world; return w.getItemCount() == 3")  # bicubic, loss map

        # a hand-written address, and one pasted into an open page
        driver.get(f"{srv.url}/slides/sample#x=500&y=600&zoom=2&mode=bicubic")
        wait_for(driver, "return window.wsistore && window.wsistore.ready")
        typed = driver.execute_script(_VIEW)
        assert (typed["x"], typed["y"], typed["zoom"], typed["mode"]) == (
            pytest.approx(500, abs=0.5),
            pytest.approx(600, abs=0.5),
            pytest.approx(2, rel=1e-3),
            "bicubic",
        )
        # pasted while the page's own rewrite of the address is pending: the pasted view wins
        driver.execute_script(
            "window.wsistore.viewer.viewport.panBy(new OpenSeadragon.Point(0.01, 0), true);"
            "const t = performance.now(); while (performance.now() - t < 400) {}"
            "location.hash = 'x=100&y=200&zoom=0.5&mode=model';"
        )
        wait_for(driver, "return window.wsistore.mode == 'model'")
        pasted = driver.execute_script(_VIEW)
        assert pasted["x"] == pytest.approx(100, abs=0.5) and pasted["zoom"] == pytest.approx(0.5, rel=1e-3)


def test_a_slide_without_mpp_shows_a_note_not_a_scale_bar(tmp_path: Path) -> None:
    from tests.data import TILES
    from wsistore.archive.writer import IngestOptions, ingest

    archive = tmp_path / "nompp.zarr"
    ingest(TILES / "lung_monuseg_18-5592.png", archive, IngestOptions(progress=False))
    with running(archive, "bicubic") as srv:
        page = fetch(f"{srv.url}/slides/nompp").body.decode()
        assert '<div id="scale-bar" hidden>' in page and "no mpp: no scale" in page
        need_browser()
        with chromium() as driver:
            driver.get(f"{srv.url}/slides/nompp")
            wait_for(driver, "return window.wsistore && window.wsistore.ready")
            driver.save_screenshot(str(tmp_path / "no-mpp.png"))
            bar, note = driver.execute_script(
                "return ['scale-bar', 'scale-note'].map(function (id) {"
                " const r = document.getElementById(id).getBoundingClientRect();"
                " return [r.width, r.height, getComputedStyle(document.getElementById(id)).display]; });"
            )
    assert bar == [0, 0, "none"]  # hidden: nothing drawn under the note
    assert note[0] > 50 and note[1] > 5 and note[2] != "none"


def test_chunk_modes_picture_and_its_place(hybrid_pair: tuple[Path, Path]) -> None:
    """A hybrid archive's chunks stored at full resolution as an overlay: one cell per level-0
    chunk, HR cells in the mode colour and the rest transparent, on the loss map's grid."""
    from wsistore.serve.app import HR_RGBA

    with running(hybrid_pair[1], "bicubic") as srv:
        summary = json.loads(srv.get("/slides/hybrid.json").body)
        modes, loss = summary["chunk_modes"], summary["loss_map"]
        reply = srv.get("/slides/hybrid/chunk-modes.png")
        assert reply.status == 200 and reply.headers["content-type"] == "image/png"
        assert srv.get("/slides/hybrid/chunk-modes.png", {"If-None-Match": reply.headers["etag"]}).status == 304
        assert reply.headers["etag"] != srv.get("/slides/hybrid/loss-map.png").headers["etag"]
        page = srv.get("/slides/hybrid").body.decode()
        archive = srv.slide.archive
    assert 'id="hr-toggle"' in page and "full resolution (7 of 9 chunks)" in page
    assert modes["url"] == "/slides/hybrid/chunk-modes.png" and modes["chunks"] == {"sr": 2, "hr": 7, "bicubic": 0}
    for key in ("cell", "cell_px", "world_width"):  # the loss map's place
        assert modes[key] == loss[key], key
    assert modes["colour"] == "#00c8ff" and 0 < modes["opacity"] < 1
    base = archive.level(0)
    expected = [
        ["hr" if archive.is_hr(r, q) else "sr" if base.chunk_state(r, q) != "background" else None for q in range(3)]
        for r in range(3)
    ]
    assert modes["values"] == expected and sum(row.count("hr") for row in expected) == 7
    picture = np.asarray(Image.open(io.BytesIO(reply.body)))
    cell = modes["cell_px"]
    assert picture.shape == (-(-2967 * cell // 1024), -(-2220 * cell // 1024), 4)  # the loss map's shape
    for r in range(3):
        for q in range(3):
            block = picture[r * cell : (r + 1) * cell, q * cell : (q + 1) * cell].reshape(-1, 4)
            if expected[r][q] == "hr":
                assert (block == HR_RGBA).all(), (r, q)
            else:
                assert (block[:, 3] == 0).all(), (r, q)  # SR chunks: transparent


def test_an_sr_archive_has_no_chunk_modes(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic") as srv:
        assert json.loads(srv.get("/slides/sample.json").body)["chunk_modes"] is None
        missing = srv.get("/slides/sample/chunk-modes.png")
        assert missing.status == 404 and b"no chunk stored at full resolution nor restored by bicubic" in missing.body
        page = srv.get("/slides/sample").body.decode()
    assert "hr-toggle" not in page and 'id="loss-toggle"' in page


_CELL_CENTRES = (
    "const it = window.wsistore.viewer.world.getItemAt(0), box = document.getElementById('viewer')"
    ".getBoundingClientRect();"
    "return arguments[0].map(function (c) {"
    " const p = it.imageToViewerElementCoordinates(new OpenSeadragon.Point(c[0], c[1]));"
    " return [Math.round(box.left + p.x), Math.round(box.top + p.y)]; });"
)


def _screenshot(driver: object) -> np.ndarray:
    png = driver.get_screenshot_as_png()  # type: ignore[attr-defined]
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def test_the_full_resolution_chunks_in_chromium(hybrid_pair: tuple[Path, Path]) -> None:
    """The toggle tints exactly the HR chunks, keeps ``hr=1`` in the address, and a copied
    address opens with the overlay on."""
    need_browser()
    with running(hybrid_pair[1], "bicubic") as srv, chromium() as driver:
        archive = srv.slide.archive
        hr = archive.hr_map()
        assert hr is not None
        base = archive.level(0)
        cells = [(r, q) for r in range(3) for q in range(3) if base.chunk_state(r, q) != "background"]
        driver.get(f"{srv.url}/slides/hybrid")
        wait_for(driver, "return window.wsistore && window.wsistore.ready")
        drawn = (
            "const w = window.wsistore.viewer.world;return w.getItemCount() > {n} && w.getItemAt({n}).getFullyLoaded()"
        )
        wait_for(driver, drawn.format(n=0))
        time.sleep(0.5)  # the last tiles fade in
        plain = _screenshot(driver)
        driver.find_element("id", "hr-toggle").click()
        wait_for(driver, drawn.format(n=1))
        time.sleep(0.5)
        tinted = _screenshot(driver)
        shared = wait_for(driver, "return /hr=1/.test(location.hash) && location.href")
        assert "loss" not in _hash(shared) and _hash(shared)["hr"] == "1"
        # the centre of each tissue chunk's part of the slide, on the screen
        side = 1024
        centres = [
            ((q * side + min((q + 1) * side, 2220)) / 2, (r * side + min((r + 1) * side, 2967)) / 2) for r, q in cells
        ]
        for (r, q), (x, y) in zip(cells, driver.execute_script(_CELL_CENTRES, centres), strict=True):
            before, after = plain[y - 10 : y + 11, x - 10 : x + 11], tinted[y - 10 : y + 11, x - 10 : x + 11]
            change = (after - before).mean(axis=(0, 1))
            if hr[r, q]:  # towards the mode colour (0, 200, 255): much less red, blue kept or more
                assert change[0] < -20 and change[2] > -2, (r, q, change)
            else:
                assert np.abs(change).max() < 1.5, (r, q, change)

        driver.switch_to.new_window("tab")  # the copied address: the overlay on again
        driver.get(shared)
        wait_for(driver, "return window.wsistore && window.wsistore.ready")
        assert driver.execute_script("return document.getElementById('hr-toggle').checked") is True
        wait_for(driver, drawn.format(n=1))
        driver.find_element("id", "hr-toggle").click()  # and off
        unshared = wait_for(driver, "return !/hr=1/.test(location.hash) && location.href")
        assert "hr" not in _hash(unshared)
        assert driver.execute_script("return window.wsistore.viewer.world.getItemAt(1).getOpacity()") == 0
