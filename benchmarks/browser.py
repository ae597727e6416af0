"""Headless Debian Chromium driven by selenium, for the viewer tests and screenshots.

Only Debian's ``chromium`` and ``chromium-driver`` are used (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); nothing is downloaded. The flags keep Chromium from reaching any
outside host, and each browser gets a fresh profile directory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def available() -> str | None:
    """None when the browser and its driver are installed, else what is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    return None if not missing else f"missing {', '.join(missing)} (apt-get install chromium chromium-driver)"


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900, flags: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile (and ``flags`` beyond :data:`FLAGS`),
    closed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="wsistore-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, *flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
