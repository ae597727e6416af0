"""napari on a virtual X display (Debian's Xvfb), for the napari tests, screenshot and benchmark.

Qt's ``offscreen`` platform has no OpenGL, which napari's canvas needs, so napari runs on the
``xcb`` platform against an Xvfb display of its own (Mesa's llvmpipe renders): nothing reaches
a real screen, and nothing is downloaded. napari's settings go to a temporary file, never the
user's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

XVFB = "/usr/bin/Xvfb"


def available() -> str | None:
    """None when Xvfb is installed, else what is missing."""
    return None if Path(XVFB).exists() else f"missing {XVFB} (apt-get install xvfb)"


@contextlib.contextmanager
def virtual_display(width: int = 1600, height: int = 1200) -> Iterator[str]:
    """An Xvfb display as ``DISPLAY`` (and napari's settings in a temporary file) until exit."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        [XVFB, "-displayfd", str(write), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    config = tempfile.mkdtemp(prefix="wsistore-napari-")
    saved = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM", "NAPARI_CONFIG")}
    try:
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        os.environ |= {
            "DISPLAY": f":{number}",
            "QT_QPA_PLATFORM": "xcb",
            "NAPARI_CONFIG": os.path.join(config, "settings.yaml"),
        }
        yield os.environ["DISPLAY"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        xvfb.terminate()
        xvfb.wait(10)
        shutil.rmtree(config, ignore_errors=True)


def spin(seconds: float = 0.0, until: Callable[[], bool] | None = None, timeout: float = 120.0) -> float:
    """Run Qt's event loop for ``seconds``, or until ``until()`` (checked after each event and at
    least every 10 ms; at most ``timeout``); the seconds it ran. Between events it sleeps as
    napari's own loop does, leaving the CPU to other threads. Raises TimeoutError if ``until``
    never held."""
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    assert app is not None
    wake = QTimer()
    wake.start(10)
    start = time.monotonic()
    try:
        while True:
            app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
            elapsed = time.monotonic() - start
            if until is not None and until():
                return elapsed
            if until is None and elapsed >= seconds:
                return elapsed
            if elapsed > timeout:
                raise TimeoutError(f"not done in {timeout} s")
    finally:
        wake.stop()


def set_canvas(viewer: Any, width: int, height: int) -> None:
    """Make napari's canvas ``width`` x ``height`` screen pixels (napari has no public call for
    it: the window is sized around the canvas)."""
    canvas = viewer.window._qt_viewer.canvas
    window = viewer.window._qt_window
    for _ in range(5):
        h, w = canvas.size
        if (w, h) == (width, height):
            return
        window.resize(window.width() + width - w, window.height() + height - h)
        spin(0.2)
    raise RuntimeError(f"the canvas is {canvas.size[::-1]}, not {width} x {height}")


def look_at(viewer: Any, layer: Any, x: float, y: float, zoom: float = 1.0) -> None:
    """Centre the view on level-0 pixel ``(x, y)`` of ``layer`` at ``zoom`` screen pixels per
    level-0 pixel."""
    sy, sx = layer.scale[-2:]
    viewer.scene.camera.zoom = zoom / sx
    viewer.scene.camera.center = (y * sy, x * sx)
