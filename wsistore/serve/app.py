"""The HTTP application of ``wsistore serve`` (Starlette).

Routes (every error is a 4xx with a one-line ``text/plain`` body, never a traceback):

- ``/``: an HTML index of every archive (source, dimensions, mpp, base-image bytes and ratio
  against the source, codec, tissue fraction, the model in use).
- ``/slides/{name}``: the viewer page (OpenSeadragon, shipped in ``static/openseadragon``): a
  scale bar from the mpp, a navigator, a switch or swipe between the model and plain bicubic of
  the same stored pixels, the loss map as a heat map and, for a hybrid archive, its chunks
  stored at full resolution.
- ``/slides/{name}/loss-map.png``: the loss map as an RGBA heat map, one 16-pixel cell per
  level-0 chunk (:mod:`wsistore.reports.loss_map`); 404 for an archive without one.
- ``/slides/{name}/chunk-modes.png``: the same grid with each chunk stored at full resolution
  (format 1.5, ``--mode hybrid``) in :data:`HR_RGBA`, each chunk the archive restores by bicubic
  (format 1.7) in :data:`BICUBIC_RGBA`, and every other cell transparent; 404 for an archive with
  neither. Both are :class:`Overlay` pictures, summarised in the slide's JSON.
- ``/static/...``: the viewer's script, style and OpenSeadragon.
- ``/slides/{name}.dzi``: the DeepZoom descriptor (XML, as OpenSlide's DeepZoom server gives).
- ``/slides/{name}.json``: the slide's summary, its version, the tile URL template and its
  DICOMweb study and series.
- ``/slides/{name}/{version}/{level}/{col}_{row}.{jpeg|png}[?method=bicubic]``: a DeepZoom
  tile. ``version`` is ``{manifest sha256[:16]}-{model sha256[:16]}`` (the model's name when it
  has no weights); a tile URL names one immutable image, so it is served
  ``Cache-Control: public, max-age=31536000, immutable`` with an ETag, and ``If-None-Match``
  gets a 304. A stale or wrong version is a 404 whose body names the current one (not a
  redirect: a cached redirect would outlive the next model). ``method=bicubic`` serves the same
  tile upscaled with plain bicubic interpolation of the same LR, to compare with the model.
- ``/slides/{name}_files/{level}/{col}_{row}.{jpeg|png}[?method=bicubic]``: the same tile at
  the path a DeepZoom client derives from ``/slides/{name}.dzi`` (the layout OpenSeadragon
  asks for, and OpenSlide's and libvips' DeepZoom output use), always the current version. Unversioned, so served
  ``Cache-Control: no-cache`` with the same version-bearing ETag: a client revalidates (a 304
  while the archive and model are unchanged) and never keeps a tile past a model change.
- ``/slides/{name}/associated/{image}.png``: label, macro ... unless stripped at ingest.
- ``/dicomweb/...``: every archive as a DICOM series over DICOMweb (QIDO-RS, WADO-RS metadata,
  frames and retrieve; :mod:`wsistore.serve.dicomweb`), its frames made under the same bound
  and through the same restored-tile cache as the DeepZoom tiles.

At most ``max_tiles`` tiles are made at once (a capacity limiter: a burst of requests waits
instead of holding every tile in memory); concurrent requests for one compute tile compute it
once (the single-flight cache of :class:`~wsistore.restoration.ondemand.RestoredSlide`).
One log line per request on the ``wsistore.serve`` logger.
"""

from __future__ import annotations

import contextlib
import html
import io
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsistore.archive.reader import Archive, ChunkState
from wsistore.errors import InputError, WsistoreError, first_line
from wsistore.models.weights import LoadedGenerator
from wsistore.reports.loss_map import LOSS_VMAX, cell_size, cells_picture, heat_map, legend
from wsistore.restoration.int8 import DEFAULT_PRECISION
from wsistore.restoration.ondemand import DEFAULT_CACHE_BYTES, RestoredSlide, open_restored
from wsistore.serve import dicomweb

log = logging.getLogger("wsistore.serve")

TILE_SIZE = 254
OVERLAP = 1
JPEG_QUALITY = 75
#: Pixels per level-0 chunk of an overlay's picture (loss map, chunk modes).
OVERLAY_CELL_PX = 16
LOSS_OPACITY = 0.5
#: The colour of a chunk stored at full resolution in the chunk-modes overlay, and its opacity.
HR_RGBA = (0, 200, 255, 255)
HR_OPACITY = 0.45
#: The colour of a chunk the archive restores by bicubic (format 1.7) in the same overlay.
BICUBIC_RGBA = (255, 60, 200, 255)
IMMUTABLE = "public, max-age=31536000, immutable"
METHODS = ("model", "bicubic")
FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png")}
_TILE = re.compile(r"(\d+)_(\d+)\.([a-z]+)")
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class HttpError(Exception):
    """A request the server refuses: ``status`` and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Overlay:
    """A per-chunk overlay of the viewer: an RGBA colour per level-0 chunk (``colours``, rows x
    cols x 4; alpha 0 where nothing is drawn), drawn at ``opacity``, and what else the viewer
    reads about it (``fields``: its cell ``values``, legend ...)."""

    colours: np.ndarray
    opacity: float
    fields: dict[str, Any]


#: The viewer's overlays: the name of each (its picture is ``/slides/{name}/{overlay}.png``) and
#: why an archive has none.
OVERLAYS = {
    "loss-map": "has no loss map (archive format before 1.2)",
    "chunk-modes": "has no chunk stored at full resolution nor restored by bicubic",
}


@dataclass
class ServedSlide:
    """One archive: its restored slide, the bicubic one for comparison (opened when first
    asked for), their DeepZoom generators and the version its tile URLs carry."""

    name: str
    archive: Archive
    slide: RestoredSlide
    device: str
    tile_size: int = TILE_SIZE
    overlap: int = OVERLAP
    _bicubic: RestoredSlide | None = None
    _zooms: dict[str, DeepZoomGenerator] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def info(self) -> dict[str, Any]:
        """``Archive.info()``, read once (the archive does not change while it is served)."""
        return self.archive.info()

    @cached_property
    def loss(self) -> np.ndarray | None:
        """The archive's loss map, read once; None for an archive without one."""
        return self.archive.loss_map()

    @cached_property
    def overlays(self) -> dict[str, Overlay]:
        """The overlays (:data:`OVERLAYS`) this archive has, made once."""
        loss, hr, bicubic = self.loss, self.archive.hr_map(), self.archive.bicubic_chunks
        made = {
            "loss-map": _loss_overlay(loss) if loss is not None else None,
            "chunk-modes": _modes_overlay(self.archive, hr, bicubic) if hr is not None or bicubic else None,
        }
        return {kind: overlay for kind, overlay in made.items() if overlay is not None}

    @property
    def model_name(self) -> str:
        return self.slide.properties["wsistore.generator"]

    @property
    def model_sha256(self) -> str:
        return self.slide.properties["wsistore.weights-sha256"]

    @property
    def adaptation_sha256(self) -> str:
        return self.slide.properties["wsistore.adaptation-sha256"]

    @property
    def version(self) -> str:
        model = self.model_sha256[:16] or _NAME.sub("_", self.model_name)
        adapted = f"-{self.adaptation_sha256[:8]}" if self.adaptation_sha256 else ""
        return f"{self.archive.metadata.manifest_sha256[:16]}-{model}{adapted}"

    def zoom(self, method: str = "model") -> DeepZoomGenerator:
        """The DeepZoom generator of ``method`` (``model`` or ``bicubic``)."""
        with self._lock:
            if method not in self._zooms:
                slide = self.slide
                if method == "bicubic":
                    location = self.archive.location
                    slide = self._bicubic = open_restored(
                        location.url, "bicubic", self.device, storage_options=location.storage_options
                    )
                self._zooms[method] = DeepZoomGenerator(slide, self.tile_size, self.overlap)
            return self._zooms[method]

    def close(self) -> None:
        self.slide.close()
        if self._bicubic is not None:
            self._bicubic.close()


def find_archives(paths: Sequence[str | os.PathLike[str]], storage_options: dict[str, Any] | None = None) -> list[str]:
    """Each path that is an archive, and the archives directly inside each local folder that
    is not; a URL (``s3://...``) names one archive, opened with ``storage_options``."""
    found: list[str] = []
    for raw in paths:
        text = os.fspath(raw)
        if "://" in text:
            Archive.open(text, storage_options=storage_options)  # raises the reason it is no archive
            found.append(text)
            continue
        path = Path(text)
        if not path.exists():
            raise InputError(f"{path}: no such archive or folder")
        if _is_archive(path):
            found.append(text)
            continue
        inside = sorted(p for p in path.iterdir() if p.is_dir() and _is_archive(p)) if path.is_dir() else []
        if not inside:
            Archive.open(path)  # raises the reason the path is no archive
            raise InputError(f"{path}: neither a wsistore archive nor a folder of archives")
        found += [str(p) for p in inside]
    return found


def _is_archive(path: Path) -> bool:
    try:
        Archive.open(path)
    except WsistoreError:
        return False
    return True


def open_slides(
    paths: Sequence[str | os.PathLike[str]],
    model: str | LoadedGenerator | None = None,
    device: str = "auto",
    workers: int | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    storage_options: dict[str, Any] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> list[ServedSlide]:
    """Every archive that ``paths`` names (local, or URLs with ``storage_options``), opened as
    a restored slide with ``model`` and a cache of ``cache_bytes`` of restored tiles each; the
    name of each is its folder's name without ``.zarr`` (made unique)."""
    slides: list[ServedSlide] = []
    names: set[str] = set()
    try:
        for url in find_archives(paths, storage_options):
            last = url.rstrip("/").rsplit("/", 1)[-1]
            stem = _NAME.sub("_", last.removesuffix(".zarr")) or "slide"
            name, n = stem, 1
            while name in names:
                n += 1
                name = f"{stem}-{n}"
            names.add(name)
            archive = Archive.open(url, storage_options=storage_options)
            slide = open_restored(
                url,
                model,
                device,
                cache_bytes=cache_bytes,
                workers=workers,
                storage_options=storage_options,
                precision=precision,
            )
            slides.append(ServedSlide(name, archive, slide, device))
    except BaseException:
        for served in slides:
            served.close()
        raise
    return slides


def build_app(slides: Sequence[ServedSlide], max_tiles: int | None = None) -> Starlette:
    """The ASGI application over ``slides``; at most ``max_tiles`` tiles made at once
    (default: the number of cores, at most 8). The slides are closed when it shuts down."""
    by_name = {s.name: s for s in slides}
    limiter = anyio.CapacityLimiter(max_tiles or min(8, os.cpu_count() or 1))

    def slide_of(name: str) -> ServedSlide:
        if name not in by_name:
            raise HttpError(404, f"unknown slide {name!r}")
        return by_name[name]

    async def index(request: Request) -> Response:
        return HTMLResponse(_index_html(slides))

    async def viewer(request: Request) -> Response:
        served = slide_of(request.path_params["name"])
        return HTMLResponse(_viewer_html(served), headers={"Cache-Control": "no-cache"})

    def overlay_picture(kind: str) -> Callable[[Request], Awaitable[Response]]:
        """The route of overlay ``kind``'s picture (:data:`OVERLAYS`)."""

        async def picture(request: Request) -> Response:
            served = slide_of(request.path_params["name"])
            overlay = served.overlays.get(kind)
            if overlay is None:
                raise HttpError(404, f"{served.name} {OVERLAYS[kind]}")
            etag = f'"{served.archive.metadata.manifest_sha256[:16]}.{kind}"'
            headers = {"Cache-Control": "no-cache", "ETag": etag}
            if _matches(request.headers.get("if-none-match"), etag):
                return Response(status_code=304, headers=headers)
            rows, cols = _overlay_shape(served)
            buf = io.BytesIO()
            Image.fromarray(cells_picture(overlay.colours, OVERLAY_CELL_PX)[:rows, :cols], "RGBA").save(buf, "PNG")
            return Response(buf.getvalue(), media_type="image/png", headers=headers)

        return picture

    async def descriptor(request: Request) -> Response:
        served = slide_of(request.path_params["name"])
        dzi = served.zoom().get_dzi("jpeg")
        return Response(dzi, media_type="application/xml", headers={"Cache-Control": "no-cache"})

    async def summary(request: Request) -> Response:
        served = slide_of(request.path_params["name"])
        return JSONResponse(_summary(served), headers={"Cache-Control": "no-cache"})

    async def tile(request: Request) -> Response:
        p = request.path_params
        served = slide_of(p["name"])
        if p["version"] != served.version:
            raise HttpError(404, f"stale or unknown version {p['version']!r}; the current one is {served.version}")
        return await tile_response(request, served, IMMUTABLE)

    async def dzi_tile(request: Request) -> Response:
        # the DeepZoom convention (NAME.dzi -> NAME_files/LEVEL/COL_ROW.FORMAT): the current
        # version, unversioned, so revalidated (no-cache) against the version-bearing ETag
        return await tile_response(request, slide_of(request.path_params["name"]), "no-cache")

    async def tile_response(request: Request, served: ServedSlide, cache_control: str) -> Response:
        p = request.path_params
        level = _integer(p["level"], "level")
        match = _TILE.fullmatch(p["tile"])
        if match is None:
            raise HttpError(400, f"malformed tile {p['tile']!r}: want COL_ROW.jpeg or COL_ROW.png")
        col, row, ext = int(match[1]), int(match[2]), match[3]
        if ext not in FORMATS:
            raise HttpError(400, f"unknown tile format {ext!r}: want jpeg or png")
        method = request.query_params.get("method", "model")
        if method not in METHODS:
            raise HttpError(400, f"unknown method {method!r}: want {' or '.join(METHODS)}")
        zoom = served.zoom(method)
        if not 0 <= level < zoom.level_count:
            raise HttpError(404, f"level {level} outside 0..{zoom.level_count - 1}")
        cols, rows = zoom.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise HttpError(404, f"tile {col}_{row} outside level {level}'s {cols} x {rows} tiles")
        etag = f'"{served.version}.{method}.{level}.{col}_{row}.{ext}"'
        headers = {"Cache-Control": cache_control, "ETag": etag}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        fmt, media = FORMATS[ext]
        body = await anyio.to_thread.run_sync(_encode_tile, zoom, level, col, row, fmt, limiter=limiter)
        return Response(body, media_type=media, headers=headers)

    async def associated(request: Request) -> Response:
        served = slide_of(request.path_params["name"])
        image = request.path_params["image"]
        md = served.archive.metadata
        if image in md.stripped_images:
            raise HttpError(404, f"associated image {image!r} was stripped at ingest")
        if image not in md.associated_images:
            raise HttpError(404, f"no associated image {image!r} (have: {', '.join(md.associated_images) or 'none'})")
        etag = f'"{md.manifest_sha256[:16]}.{image}"'
        headers = {"Cache-Control": "no-cache", "ETag": etag}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        body = await anyio.to_thread.run_sync(_encode_associated, served.archive, image, limiter=limiter)
        return Response(body, media_type="image/png", headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for served in slides:
                served.close()

    routes = [
        Route("/", index),
        Route("/slides/{name}.dzi", descriptor),
        Route("/slides/{name}.json", summary),
        Route("/slides/{name}", viewer),
        *(Route(f"/slides/{{name}}/{kind}.png", overlay_picture(kind)) for kind in OVERLAYS),
        Route("/slides/{name}/associated/{image}.png", associated),
        Route("/slides/{name}/{version}/{level}/{tile}", tile),
        Route("/slides/{name}_files/{level}/{tile}", dzi_tile),
        Mount("/dicomweb", app=dicomweb.build(slides, limiter)),
        Mount("/static", app=StaticFiles(packages=[("wsistore.serve", "static")]), name="static"),
    ]
    exception_handlers: dict[Any, Any] = {HttpError: _http_error, Exception: _internal_error}
    app = Starlette(routes=routes, exception_handlers=exception_handlers, lifespan=lifespan)
    app.add_middleware(RequestLog)
    return app


def _integer(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise HttpError(400, f"malformed {what} {text!r}: want a non-negative integer")
    return int(text)


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _encode_tile(zoom: DeepZoomGenerator, level: int, col: int, row: int, fmt: str) -> bytes:
    image = zoom.get_tile(level, (col, row))
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _encode_associated(archive: Archive, name: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(archive.associated_image(name), "RGB").save(buf, "PNG")
    return buf.getvalue()


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, HttpError) else 400
    return PlainTextResponse(first_line(exc) + "\n", status_code=status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, first_line(exc))
    return PlainTextResponse(f"internal error: {type(exc).__name__}\n", status_code=500)


class RequestLog:
    """One log line per request: method, path and query, status, bytes and milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, size = 500, 0

        async def sending(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            path = scope["path"] + (f"?{query}" if query else "")
            client = scope.get("client") or ("-", 0)
            ms = 1000 * (time.perf_counter() - start)
            log.info("%s %s %s %d %dB %.1fms", client[0], scope["method"], path, status, size, ms)


def _summary(served: ServedSlide) -> dict[str, Any]:
    info = served.info
    zoom = served.zoom()
    return {
        "name": served.name,
        "version": served.version,
        "dzi": f"/slides/{served.name}.dzi",
        "tiles": f"/slides/{served.name}/{served.version}/{{level}}/{{col}}_{{row}}.jpeg",
        "dzi_tiles": f"/slides/{served.name}_files/{{level}}/{{col}}_{{row}}.jpeg",
        "tile_size": served.tile_size,
        "overlap": served.overlap,
        "levels": [list(d) for d in zoom.level_dimensions],
        "super_resolved_levels": [lv for lv, d in enumerate(zoom.level_dimensions) if d[0] > info["lr_dimensions"][0]],
        "model": {
            "name": served.model_name,
            "weights_sha256": served.model_sha256 or None,
            "adaptation_sha256": served.adaptation_sha256 or None,
        },
        "associated": {n: f"/slides/{served.name}/associated/{n}.png" for n in info["associated_images"]},
        "viewer": f"/slides/{served.name}",
        "dicomweb": dict(zip(("study", "series"), dicomweb.DicomWebSeries(served.name, served.slide).uids()))
        | {"root": "/dicomweb"},
        "loss_map": _overlay_summary(served, "loss-map"),
        "chunk_modes": _overlay_summary(served, "chunk-modes"),
        "info": info,
    }


def _overlay_summary(served: ServedSlide, kind: str) -> dict[str, Any] | None:
    """What the viewer needs to draw overlay ``kind``: its URL, its place in the viewer's
    coordinates (a width of 1 is the slide's width), its opacity and its fields (values per
    cell, colours); None when the archive has none."""
    overlay = served.overlays.get(kind)
    if overlay is None:
        return None
    cell = cell_size(served.archive)
    cols = _overlay_shape(served)[1]
    return {
        "url": f"/slides/{served.name}/{kind}.png",
        "cell": cell,
        "cell_px": OVERLAY_CELL_PX,
        "world_width": cols * cell / OVERLAY_CELL_PX / served.info["dimensions"][0],
        "opacity": overlay.opacity,
        **overlay.fields,
    }


def _overlay_shape(served: ServedSlide) -> tuple[int, int]:
    """Rows and columns of an overlay's PNG: the slide's area at ``OVERLAY_CELL_PX`` pixels per
    chunk, so it reaches past the slide's edge by less than one of its pixels."""
    width, height = served.info["dimensions"]
    cell = cell_size(served.archive)
    return -(-height * OVERLAY_CELL_PX // cell), -(-width * OVERLAY_CELL_PX // cell)


def _loss_overlay(loss: np.ndarray) -> Overlay:
    """The loss map as a heat map on its fixed scale, with its values per chunk."""
    values = [[None if np.isnan(v) else round(float(v), 2) for v in row] for row in loss]
    return Overlay(heat_map(loss, cell_px=1), LOSS_OPACITY, {"vmax": LOSS_VMAX, "legend": legend(), "values": values})


def _modes_overlay(archive: Archive, hr: np.ndarray | None, bicubic: frozenset[tuple[int, int]]) -> Overlay:
    """The chunks stored at full resolution (``hr``, :meth:`Archive.hr_map`) in :data:`HR_RGBA`,
    those restored by ``bicubic`` (:attr:`Archive.bicubic_chunks`) in :data:`BICUBIC_RGBA`, the
    rest transparent; each chunk's mode (``hr``, ``sr``: the generator, ``bicubic``, None on
    background) and the counts."""
    base = archive.level(0)
    rows, cols = -(-base.height // base.chunk), -(-base.width // base.chunk)
    full = hr if hr is not None else np.zeros((rows, cols), dtype=bool)

    def mode(r: int, q: int) -> str | None:
        if full[r, q]:
            return "hr"
        if base.chunk_state(r, q) == ChunkState.BACKGROUND:
            return None
        return "bicubic" if (r, q) in bicubic else "sr"

    values = [[mode(r, q) for q in range(cols)] for r in range(rows)]
    colours = np.zeros((rows, cols, 4), dtype=np.uint8)
    for r, row in enumerate(values):
        for q, value in enumerate(row):
            if value in ("hr", "bicubic"):
                colours[r, q] = HR_RGBA if value == "hr" else BICUBIC_RGBA
    fields = {
        "colour": "#{:02x}{:02x}{:02x}".format(*HR_RGBA[:3]),
        "bicubic_colour": "#{:02x}{:02x}{:02x}".format(*BICUBIC_RGBA[:3]),
        "chunks": {m: sum(row.count(m) for row in values) for m in ("sr", "hr", "bicubic")},
        "values": values,
    }
    return Overlay(colours, HR_OPACITY, fields)


def _viewer_html(served: ServedSlide) -> str:
    info = served.info
    e = html.escape
    name = e(served.name)
    width, height = info["dimensions"]
    mpp = info["mpp"]
    facts = f"{width} x {height} px" + (f", {mpp[0]:.4g} &micro;m/px" if mpp else ", mpp unknown")
    facts += f"; model {e(served.model_name)}"
    # without mpp there is no length to draw: a note in place of the bar, never over it
    scale = (
        '<div id="scale"><div id="scale-bar"></div></div>'
        if mpp
        else '<div id="scale" class="no-mpp"><div id="scale-bar" hidden></div>'
        '<span id="scale-note">no mpp: no scale</span></div>'
    )
    modes = served.overlays.get("chunk-modes")
    # the chunks stored at full resolution or restored by bicubic: a toggle where there are any
    hr_toggle = ""
    if modes:
        chunks, total = modes.fields["chunks"], sum(modes.fields["chunks"].values())
        kinds = [
            f'<span class="swatch" style="background:{modes.fields[colour]}"></span> {label} '
            f"({chunks[kind]} of {total} chunks)"
            for kind, colour, label in (
                ("hr", "colour", "full resolution"),
                ("bicubic", "bicubic_colour", "restored by bicubic"),
            )
            if chunks[kind]
        ]
        hr_toggle = f'\n  <label id="hr-label"><input type="checkbox" id="hr-toggle"> {"; ".join(kinds)}</label>'

    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{name} - wsistore</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/viewer.css"></head>
<body>
<header>
  <h1><a href="/">wsistore</a> / {name}</h1><span class="facts">{e(info["source"])}: {facts}</span>
  <fieldset><legend>show</legend>
    <label><input type="radio" name="method" value="model" checked> model</label>
    <label><input type="radio" name="method" value="bicubic"> bicubic</label>
    <label><input type="radio" name="method" value="swipe"> swipe</label>
    <input type="range" id="swipe-position" min="0" max="100" value="50" title="swipe position">
  </fieldset>
  <label id="loss-label"><input type="checkbox" id="loss-toggle"> loss map</label>{hr_toggle}
  <span id="legend"><span>0</span><span id="legend-bar"></span><span id="legend-max"></span> grey levels RMS</span>
  <span id="readout"></span>
</header>
<div id="stage">
  <div id="viewer" data-summary="/slides/{name}.json"></div>
  <div id="swipe" hidden><div id="swipe-line"></div>
    <div id="swipe-labels"><span>bicubic</span><span>model</span></div></div>
  {scale}
</div>
<script src="/static/openseadragon/openseadragon.min.js"></script>
<script src="/static/viewer.js"></script>
</body></html>
"""


def _index_html(slides: Sequence[ServedSlide]) -> str:
    rows = "\n".join(_index_row(s) for s in slides) or '<tr><td colspan="9">no archives</td></tr>'
    heads = "".join(
        f"<th>{h}</th>"
        for h in (
            "slide",
            "source",
            "dimensions",
            "mpp",
            "base image",
            "codec",
            "tissue",
            "model",
            "associated",
        )
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>wsistore serve</title>'
        '<link rel="icon" href="data:,">'
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;text-align:left;border-bottom:1px solid #ddd}"
        "</style></head>\n<body><h1>wsistore archives</h1>\n"
        f"<table><thead><tr>{heads}</tr></thead><tbody>\n{rows}\n</tbody></table>\n</body></html>\n"
    )


def _index_row(served: ServedSlide) -> str:
    info = served.info
    e = html.escape
    width, height = info["dimensions"]
    mpp = info["mpp"]
    ratio = info["pyramid_ratio"]
    codec = info["codec"]
    settings = ", ".join(f"{k}={v}" for k, v in codec.get("configuration", {}).items())
    sha = served.model_sha256
    model = e(served.model_name) + (f' <code title="{e(sha)}">{e(sha[:12])}</code>' if sha else "")
    links = [f'<a href="/slides/{e(served.name)}/associated/{e(n)}.png">{e(n)}</a>' for n in info["associated_images"]]
    if info["stripped_images"]:
        links.append(f"(stripped: {e(', '.join(info['stripped_images']))})")
    name = e(served.name)
    cells = [
        f'<a href="/slides/{name}">{name}</a> (<a href="/slides/{name}.dzi">dzi</a>, '
        f'<a href="/slides/{name}.json">json</a>)',
        e(info["source"]),
        f"{width} x {height} px",
        f"{mpp[0]:.4g} x {mpp[1]:.4g} &micro;m/px" if mpp else "unknown",
        f"{_size(info['pyramid_bytes'])}, "
        + (f"{ratio:.2f}x smaller than {e(info['pyramid_ratio_against'])}" if ratio else "empty"),
        e(f"{codec['name']} ({settings})" if settings else codec["name"]),
        f"{info['tissue_fraction']:.1%}",
        model,
        ", ".join(links) or "none",
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"
