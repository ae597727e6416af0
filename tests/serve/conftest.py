"""Serve fixtures: a generator that counts the windows it upscales, and the real server on
127.0.0.1 and a free port in a thread, over the sample archive; the requests it logged; and
the headless Chromium of the browser tests."""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import BaseRoute

from tests.generators import CountingGenerator
from wsistore.models.weights import LoadedGenerator
from wsistore.serve.app import ServedSlide, build_app, open_slides
from wsistore.serve.server import ServerThread


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(url: str, headers: dict[str, str] | None = None) -> Reply:
    """GET ``url``; a 4xx/5xx is a reply too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@dataclass
class Running:
    url: str
    slide: ServedSlide
    counting: CountingGenerator | None

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return fetch(self.url + path, headers)

    def tile(self, level: int, col: int, row: int, ext: str = "jpeg", query: str = "") -> str:
        return f"/slides/{self.slide.name}/{self.slide.version}/{level}/{col}_{row}.{ext}{query}"


Serve = Callable[..., Iterator[Running]]


@contextmanager
def running(
    archive: Path, model: str | LoadedGenerator, max_tiles: int | None = None, routes: Sequence[BaseRoute] = ()
) -> Iterator[Running]:
    """The app over ``archive`` served on 127.0.0.1; ``routes`` (a test's own pages) go first."""
    slides = open_slides([archive], model, "cpu", workers=2)
    app = build_app(slides, max_tiles)
    app.router.routes[0:0] = routes
    with ServerThread(app) as server:
        assert server.host == "127.0.0.1"
        gen = model.model if isinstance(model, LoadedGenerator) else None
        yield Running(server.url, slides[0], gen if isinstance(gen, CountingGenerator) else None)


def need_browser() -> None:
    """Skip without Debian's chromium and chromium-driver (fail under CI, which installs them)."""
    from benchmarks.browser import available

    missing = available()
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must install the browser: {missing}")
    if missing:
        pytest.skip(missing)


def wait_for(driver: Any, script: str, timeout: float = 120.0) -> Any:
    """Poll ``script`` (a JavaScript function body) in the page until it returns a true value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"the page did not get there in {timeout:.0f} s: {script}")


class LoggedRequests(logging.Handler):
    """``(path, status)`` of each request the server logs, while in a ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int]] = []
        self._log = logging.getLogger("wsistore.serve")

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and len(record.args) >= 4:
            self.seen.append((str(record.args[2]), int(record.args[3])))  # type: ignore[call-overload]

    def __enter__(self) -> LoggedRequests:
        self._level = self._log.level
        self._log.addHandler(self)
        self._log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._log.removeHandler(self)
        self._log.setLevel(self._level)
