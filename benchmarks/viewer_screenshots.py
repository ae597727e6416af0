"""Screenshots of ``wsistore serve``'s viewer in headless Chromium, for the README.

Ingests the embedded sample slide, serves it on 127.0.0.1 with the default model on the CPU,
opens the viewer, zooms to full resolution (the super-resolved DeepZoom level) and takes
(PNG; the README's copies of the swipe and the loss map are JPEG, in ``--out``):

* ``viewer-swipe.png``: full resolution, swipe between bicubic (left) and the model (right);
* ``viewer-model.png`` and ``viewer-bicubic.png``: the same view with one method each;
* ``viewer-loss-map.png``: the whole slide with the loss map over it.

    python -m benchmarks.viewer_screenshots [--out docs]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.browser import chromium

#: Where the screenshots look, in source pixels of the sample slide (epidermis and dermis).
FOCUS = (1250, 1900)

_ITEM_LOADED = (
    "const s = window.wsistore, w = s && s.viewer.world;"
    "return !!w && w.getItemCount() > {n} && w.getItemAt({n}).getFullyLoaded() && {extra};"
)


class _Requests(logging.Handler):
    """The paths the server logs, one per request."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.paths.append(str(record.args[2]) if isinstance(record.args, tuple) else "")


def _wait(driver: Any, script: str, timeout: float = 180.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if driver.execute_script(script):
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"the viewer did not get there in {timeout:.0f} s: {script}")


def _loaded(driver: Any, method: str) -> int:
    return int(driver.execute_script(f"return window.wsistore.loaded.{method}"))


def _wait_drawn(driver: Any, n: int, method: str | None = None, before: int = 0) -> float:
    """Wait until world item ``n`` has every tile of the view, and (``method``) more tiles
    of it than ``before`` were loaded: the view moved and its new tiles came."""
    extra = f"s.loaded.{method} > {before}" if method else "true"
    return _wait(driver, _ITEM_LOADED.format(n=n, extra=extra))


def capture(base_url: str, slide: str, out: Path) -> dict[str, Any]:
    """Drive the viewer of ``slide`` at ``base_url``; write the screenshots to ``out`` and
    return what happened (seconds to each state, tiles the page loaded, browser errors)."""
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    with chromium() as driver:
        driver.get(f"{base_url}/slides/{slide}")
        result["home_s"] = _wait_drawn(driver, 0, "model")
        before = _loaded(driver, "model")
        driver.execute_script(
            "const v = window.wsistore.viewer, it = v.world.getItemAt(0);"
            "v.viewport.zoomTo(it.imageToViewportZoom(1.0), null, true);"
            "v.viewport.panTo(it.imageToViewportCoordinates(arguments[0], arguments[1]), true);",
            *FOCUS,
        )
        result["full_resolution_s"] = _wait_drawn(driver, 0, "model", before)
        result["image_zoom"] = driver.execute_script(
            "const v = window.wsistore.viewer;"
            "return v.world.getItemAt(0).viewportToImageZoom(v.viewport.getZoom(true));"
        )
        time.sleep(0.5)  # the last tiles fade in
        driver.save_screenshot(str(out / "viewer-model.png"))
        for mode in ("bicubic", "swipe"):
            driver.find_element("css selector", f"input[value={mode}]").click()
            result[f"{mode}_s"] = _wait_drawn(driver, 1, "bicubic")
            time.sleep(0.5)
            driver.save_screenshot(str(out / f"viewer-{mode}.png"))
        driver.find_element("css selector", "input[value=model]").click()
        driver.find_element("id", "loss-toggle").click()
        driver.execute_script("window.wsistore.viewer.viewport.goHome(true)")
        result["loss_map_s"] = _wait_drawn(driver, 2)
        _wait_drawn(driver, 0)
        time.sleep(0.5)
        driver.save_screenshot(str(out / "viewer-loss-map.png"))
        result["tiles_loaded"] = driver.execute_script("return window.wsistore.loaded")
        result["browser_errors"] = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return result


def serve_and_capture(archive: Path, out: Path, model: str | None = None) -> dict[str, Any]:
    """Serve ``archive`` on 127.0.0.1 (``model``: the default one), capture the screenshots,
    and add the requests the server logged to the result."""
    from wsistore.serve.app import build_app, open_slides
    from wsistore.serve.server import ServerThread

    requests = _Requests()
    log = logging.getLogger("wsistore.serve")
    log.addHandler(requests)
    log.setLevel(logging.INFO)
    try:
        slides = open_slides([archive], model, "cpu")
        with ServerThread(build_app(slides)) as server:
            result = capture(server.url, slides[0].name, out)
            result["version"] = slides[0].version
            result["model"] = slides[0].model_name
    finally:
        log.removeHandler(requests)
    result["requests"] = requests.paths
    return result


def main() -> None:
    import wsistore
    from wsistore.sample import sample_slide_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "sample.zarr"
        wsistore.ingest(sample_slide_path(), archive)
        result = serve_and_capture(archive, Path(tmp) / "shots")
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("viewer-swipe", "viewer-loss-map"):
            Image.open(Path(tmp) / "shots" / f"{name}.png").convert("RGB").save(args.out / f"{name}.jpg", quality=88)
    result["requests"] = len(result["requests"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
