"""Serve fixtures: a generator that counts the windows it upscales, and the real server on
127.0.0.1 and a free port in a thread, over the sample archive."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
def running(archive: Path, model: str | LoadedGenerator, max_tiles: int | None = None) -> Iterator[Running]:
    slides = open_slides([archive], model, "cpu", workers=2)
    with ServerThread(build_app(slides, max_tiles)) as server:
        assert server.host == "127.0.0.1"
        gen = model.model if isinstance(model, LoadedGenerator) else None
        yield Running(server.url, slides[0], gen if isinstance(gen, CountingGenerator) else None)
