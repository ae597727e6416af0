"""Restoring compute tiles, and the restored level 0 as a lazy Dask array.

A tile is restored as: LR window (decoded archive chunks, cached; half-sample symmetric
extension past the slide border, as ingest does) -> generator -> HR tile cropped to the
source size, with the HR area of every background chunk painted the glass colour. A tile
whose chunks are all background never reaches the generator.

The same tile loop (:func:`compute_grid`, :func:`upscale_tile`, :func:`assemble`) also
restores an LR image held in memory (:func:`upscale_image`, for the benchmark reports).

:func:`make_restorer` is the one way to get a restorer: a named model's restorers and
generators are made once per process and reused (one model per device), and a
:class:`TileRestorer` pickles as its :class:`RestoreSpec`, so Dask workers elsewhere
(dask.distributed) rebuild their own from the archive URL and model name; a generator
already in memory gets a runner of its own, which :meth:`TileRestorer.close` stops.

An archive that stores a per-slide adaptation (format 1.4) is restored with its base
generator and the adaptation applied, unless a model is named: naming one, even the base,
restores with that model's own weights.

A hybrid archive (format 1.5) stores some level-0 chunks at full resolution: a tile pastes
their decoded pixels, cropped to the slide, over the generator's output, and a tile whose
chunks are all background or full resolution never reaches the generator. The HR chunks are
fixed pixels, so every tile size still gives crops of one whole image.

An archive that chose each chunk's restorer (format 1.7) names the chunks that bicubic
interpolation restores better than the generator: restored with the archive's own generator
(no model named), a tile pastes bicubic over those chunks, computed from the same window, and a
tile with no chunk for the generator never reaches it. Bicubic reaches 2 LR pixels, within
every halo, so the pixels do not depend on the tile either.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
import torch

from wsistore.archive.format import BICUBIC
from wsistore.archive.reader import Archive, ChunkState
from wsistore.degradation import read_window
from wsistore.errors import ArchiveError, InputError
from wsistore.geometry import Box
from wsistore.models import adaptation
from wsistore.models.device import resolve_device
from wsistore.models.weights import LoadedGenerator, default_model, load_generator, shipped_weights
from wsistore.restoration.cache import SingleFlightCache
from wsistore.restoration.grid import ComputeGrid, choose_tile, halo_for
from wsistore.restoration.int8 import DEFAULT_PRECISION
from wsistore.restoration.runner import GeneratorRunner

#: Decoded LR chunks kept, at least (more for wide slides: see ``TileRestorer``).
MIN_LR_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class RestoreSpec:
    """Everything a process needs to build the same restorer: archive, model, device."""

    archive: str
    #: the archive's manifest sha256: a rewritten archive is a different restorer
    manifest_sha256: str
    model: str
    device: str = "auto"
    batch: int | None = None
    compile: bool = False
    #: the archive URL's fsspec storage options, as JSON (hashable)
    storage_options: str = "{}"
    #: sha256 of the archive's adaptation, applied to ``model`` (its base); None: the model as shipped
    adaptation: str | None = None
    #: fp32, int8 or auto (:mod:`wsistore.restoration.int8`)
    precision: str = DEFAULT_PRECISION
    #: restore the chunks the archive chose bicubic for by bicubic (format 1.7): with its own
    #: generator, not with a model named
    restorers: bool = False


class TileRestorer:
    """Restores the compute tiles of one archive with one generator."""

    def __init__(
        self, archive: Archive, runner: GeneratorRunner, spec: RestoreSpec | None = None, owns_runner: bool = False
    ) -> None:
        """``owns_runner``: :meth:`close` stops ``runner`` (one made for this restorer alone)."""
        md = archive.metadata
        if runner.scale != md.scale:
            raise InputError(
                f"model {runner.generator.name} upscales {runner.scale}x but the archive is stored at 1/{md.scale}: "
                "use a generator trained for this scale"
            )
        self.archive = archive
        self.runner = runner
        self.spec = spec
        self.owns_runner = owns_runner
        self.lr = archive.level(0)
        self.grid = compute_grid(runner, self.lr.width, self.lr.height, md.width, md.height)
        self.glass = np.asarray(md.tissue.background_rgb, dtype=np.uint8)
        ch = self.lr.chunk_hw[0]
        chunk_row_bytes = 3 * ch * self.lr.width
        rows = 2 * -(-self.grid.tile // ch) + 3  # two bands of tiles and their halos
        self._chunks: SingleFlightCache[tuple[int, int]] = SingleFlightCache(
            max(MIN_LR_CACHE_BYTES, rows * chunk_row_bytes)
        )
        self.hr = archive.hr
        self._hr_chunks: SingleFlightCache[tuple[int, int]] = SingleFlightCache(MIN_LR_CACHE_BYTES)
        self.bicubic_chunks = archive.bicubic_chunks if spec is not None and spec.restorers else frozenset()
        self.bicubic = runner_for(BICUBIC, spec.device) if self.bicubic_chunks and spec is not None else None

    @property
    def generator(self) -> LoadedGenerator:
        return self.runner.generator

    # -- tiles ---------------------------------------------------------------------------
    def is_background(self, row: int, col: int) -> bool:
        """Whether every archive chunk under the tile's core is background (glass)."""
        core = self.grid.core(row, col)
        return all(self.lr.chunk_state(r, q) == ChunkState.BACKGROUND for r, q in self.lr.chunks_in(core))

    def tile(self, row: int, col: int) -> np.ndarray:
        """The HR pixels of compute tile ``(row, col)``, ``(y, x, 3)`` uint8."""
        g = self.grid
        x0, y0, x1, y1 = g.hr_box(row, col)
        restored = [
            (r, q)
            for r, q in self.lr.chunks_in(g.core(row, col))
            if self.lr.chunk_state(r, q) != ChunkState.BACKGROUND and not self.archive.is_hr(r, q)
        ]
        bicubic = [rq for rq in restored if rq in self.bicubic_chunks]
        if len(bicubic) < len(restored):
            out = upscale_tile(self.runner, g, self.read_lr, row, col)
        else:
            out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
            out[:] = self.glass
        if bicubic and self.bicubic is not None:
            pixels = upscale_tile(self.bicubic, g, self.read_lr, row, col)
            for target in self._chunk_areas(row, col, bicubic):
                out[target] = pixels[target]
        self._paint_background(out, row, col)
        self._paste_hr(out, row, col)
        return out

    def _chunk_areas(self, row: int, col: int, chunks: list[tuple[int, int]]) -> list[tuple[slice, slice]]:
        """Where each level-0 chunk ``(r, q)`` under tile ``(row, col)`` lies in the tile's output."""
        s = self.grid.scale
        tx0, ty0, tx1, ty1 = self.grid.hr_box(row, col)
        ch, cw = self.lr.chunk_hw
        areas = []
        for r, q in chunks:
            x0, y0 = max(q * cw * s, tx0), max(r * ch * s, ty0)
            x1, y1 = min((q + 1) * cw * s, tx1), min((r + 1) * ch * s, ty1)
            areas.append((slice(y0 - ty0, y1 - ty0), slice(x0 - tx0, x1 - tx0)))
        return areas

    def read_lr(self, box: Box) -> np.ndarray:
        """LR level-0 pixels of an in-bounds ``box``, assembled from cached, validated chunks."""
        x0, y0, x1, y1 = box
        ch, cw = self.lr.chunk_hw
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        for r, q in self.lr.chunks_in(box):
            cx0, cy0 = q * cw, r * ch
            chunk = self._chunks.get((r, q), partial(self._read_chunk, r, q))
            ax0, ay0 = max(x0, cx0), max(y0, cy0)
            ax1, ay1 = min(x1, cx0 + chunk.shape[1]), min(y1, cy0 + chunk.shape[0])
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = chunk[ay0 - cy0 : ay1 - cy0, ax0 - cx0 : ax1 - cx0]
        return out

    def _read_chunk(self, r: int, q: int) -> np.ndarray:
        ch, cw = self.lr.chunk_hw
        box = (q * cw, r * ch, min((q + 1) * cw, self.lr.width), min((r + 1) * ch, self.lr.height))
        return self.archive.read_lr(0, box)

    def _paint_background(self, out: np.ndarray, row: int, col: int) -> None:
        chunks = self.lr.chunks_in(self.grid.core(row, col))
        background = [(r, q) for r, q in chunks if self.lr.chunk_state(r, q) == ChunkState.BACKGROUND]
        for target in self._chunk_areas(row, col, background):
            out[target] = self.glass

    def _paste_hr(self, out: np.ndarray, row: int, col: int) -> None:
        """Paste the full-resolution chunks (hybrid archives) under the tile over ``out``."""
        if self.hr is None:
            return
        tx0, ty0, tx1, ty1 = self.grid.hr_box(row, col)
        side = self.hr.chunk
        for r, q in self.lr.chunks_in(self.grid.core(row, col)):
            if not self.archive.is_hr(r, q):
                continue
            pixels = self._hr_chunks.get((r, q), partial(self._read_hr_chunk, r, q))
            x0, y0 = max(q * side, tx0), max(r * side, ty0)
            x1, y1 = min(q * side + pixels.shape[1], tx1), min(r * side + pixels.shape[0], ty1)
            out[y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0] = pixels[
                y0 - r * side : y1 - r * side, x0 - q * side : x1 - q * side
            ]

    def _read_hr_chunk(self, r: int, q: int) -> np.ndarray:
        assert self.hr is not None
        side = self.hr.chunk
        return self.hr.read(
            (q * side, r * side, min((q + 1) * side, self.hr.width), min((r + 1) * side, self.hr.height))
        )

    def close(self) -> None:
        """Stop the runner if this restorer owns it; the process's shared runners (bicubic's
        among them) stay."""
        if self.owns_runner:
            self.runner.close()

    # -- description ---------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """What made the restored pixels (recorded in every output)."""
        g = self.grid
        return {
            "super_resolved": True,
            "generator": self.generator.describe(),
            "scale": g.scale,
            "device": self.runner.device.type,
            "precision": self.runner.precision,
            "runtime": self.runner.runtime,
            "compute_tile_lr": g.tile,
            "halo_lr": g.halo,
            "archive": self.archive.location.url,
            "source": self.archive.metadata.source.file_name,
            "source_sha256": self.archive.metadata.source.sha256,
            # hybrid archives only (format 1.5): some level-0 chunks are stored pixels, not SR
            **({"mode": "hybrid"} if self.hr is not None else {}),
            # format 1.7: the chunks the archive chose bicubic for, restored so
            **({"bicubic_chunks": len(self.bicubic_chunks)} if self.bicubic_chunks else {}),
        }

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        g, url, manifest = self.generator, self.archive.location.url, self.archive.metadata.manifest_sha256
        grid, precision, bicubic = self.grid, self.runner.precision, bool(self.bicubic_chunks)
        return (url, manifest, g.name, g.weights_sha256, g.adaptation_sha256, grid, precision, bicubic)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.spec is None:
            raise TypeError("this restorer was built from an in-memory generator and cannot be sent to another process")
        return (restorer_for, (self.spec,))


def compute_grid(runner: GeneratorRunner, lr_width: int, lr_height: int, width: int, height: int) -> ComputeGrid:
    """The canonical compute grid of ``runner`` over an LR image restored to ``width`` x ``height``."""
    halo = halo_for(runner.receptive_field)
    return ComputeGrid(lr_width, lr_height, width, height, runner.scale, choose_tile(halo, runner.device.type), halo)


def bicubic_runner(device: torch.device) -> GeneratorRunner:
    """A runner of plain bicubic interpolation (fp32), for the chunks an archive restores by
    bicubic: run on the generator's compute grid, its windows give the same pixels as any
    other (bicubic reaches 2 LR pixels, every halo is wider)."""
    return GeneratorRunner(load_generator(BICUBIC, device), device)


def upscale_tile(
    runner: GeneratorRunner, grid: ComputeGrid, read_lr: Callable[[Box], np.ndarray], row: int, col: int
) -> np.ndarray:
    """The generator's HR pixels of compute tile ``(row, col)``; ``read_lr`` reads in-bounds LR
    boxes, and past the border the window is extended as ingest does."""
    window = read_window(read_lr, grid.window(row, col), grid.lr_width, grid.lr_height)
    return runner.upscale(window, grid.hr_crop(row, col))


def assemble(
    grid: ComputeGrid, box: Box, tile: Callable[[tuple[int, int]], np.ndarray], pool: Executor | None = None
) -> np.ndarray:
    """The HR pixels of ``box`` pasted from the compute tiles under it, ``tile((row, col))``
    each, computed on ``pool`` when there are several."""
    x0, y0, x1, y1 = box
    tiles = grid.tiles_in(box)
    out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    arrays = pool.map(tile, tiles) if pool is not None and len(tiles) > 1 else map(tile, tiles)
    for (r, c), pixels in zip(tiles, arrays, strict=True):
        tx0, ty0, _, _ = grid.hr_box(r, c)
        ax0, ay0 = max(x0, tx0), max(y0, ty0)
        ax1, ay1 = min(x1, tx0 + pixels.shape[1]), min(y1, ty0 + pixels.shape[0])
        out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = pixels[ay0 - ty0 : ay1 - ty0, ax0 - tx0 : ax1 - tx0]
    return out


def upscale_image(lr: np.ndarray, runner: GeneratorRunner, size: tuple[int, int]) -> np.ndarray:
    """``size = (h, w)`` HR pixels rebuilt from an LR image in memory exactly as restore does:
    the same compute tiles, halo and border rule, through the same runner."""
    h, w = size
    grid = compute_grid(runner, lr.shape[1], lr.shape[0], w, h)

    def tile(rc: tuple[int, int]) -> np.ndarray:
        return upscale_tile(runner, grid, lambda b: lr[b[1] : b[3], b[0] : b[2]], *rc)

    return assemble(grid, (0, 0, w, h), tile)


class CachedTiles:
    """A restorer's compute tiles, each restored once and kept in a byte-bounded LRU cache
    (thread-safe: concurrent requests for a tile wait for one computation). Pickles as the
    restorer and the capacity, so another process gets its own, empty, cache."""

    def __init__(self, restorer: TileRestorer, capacity_bytes: int) -> None:
        self.restorer = restorer
        self.grid = restorer.grid
        self._cache: SingleFlightCache[tuple[int, int]] = SingleFlightCache(capacity_bytes)

    def tile(self, row: int, col: int) -> np.ndarray:
        """The HR pixels of compute tile ``(row, col)`` (read-only), restored on first use."""
        return self._cache.get((row, col), partial(self.restorer.tile, row, col))

    def cached(self, row: int, col: int) -> np.ndarray | None:
        """The tile's pixels if they are cached, else None; never restores."""
        return self._cache.peek((row, col))

    def clear(self) -> None:
        self._cache.clear()

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return self.restorer.__dask_tokenize__()  # the same pixels as the restorer's

    def __reduce__(self) -> tuple[Any, ...]:
        return (CachedTiles, (self.restorer, self._cache.capacity_bytes))


def level0_array(tiles: TileRestorer | CachedTiles) -> da.Array:
    """The restored level 0 as a lazy ``(y, x, 3)`` uint8 Dask array, one block per compute
    tile, each block ``tiles.tile(row, col)`` (a restorer, or its tiles through a cache)."""
    g = tiles.grid
    t = g.hr_tile
    rows = tuple(min(t, g.height - r * t) for r in range(g.rows))
    cols = tuple(min(t, g.width - c * t) for c in range(g.cols))
    return da.map_blocks(
        _restore_block,
        tiles,
        chunks=(rows, cols, (3,)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
        name="wsistore-restore-" + da.core.tokenize(tiles),
    )


def _restore_block(tiles: TileRestorer | CachedTiles, block_id: tuple[int, int, int]) -> np.ndarray:
    pixels = tiles.tile(block_id[0], block_id[1])
    return pixels if pixels.flags.writeable else pixels.copy()  # a cached tile is shared: blocks are the caller's


# -- one restorer / one model per process ----------------------------------------------------
_LOCK = threading.Lock()
_RUNNERS: dict[tuple[str, str, int | None, bool, str | None, str], GeneratorRunner] = {}
_RESTORERS: OrderedDict[RestoreSpec, TileRestorer] = OrderedDict()
#: Restorers kept per process (each holds an archive and a cache of decoded LR chunks).
MAX_RESTORERS = 4


def runner_for(
    model: str,
    device: str,
    batch: int | None = None,
    compile: bool = False,
    archive: Archive | None = None,
    precision: str = DEFAULT_PRECISION,
) -> GeneratorRunner:
    """The process's runner for a model on a device, loading the model the first time; with
    ``archive``, the model is the base of the archive's adaptation, applied."""
    dev = resolve_device(device)
    record = archive.metadata.stored_adaptation if archive is not None else None
    key = (model, str(dev), batch, compile, record["sha256"] if record else None, precision)
    with _LOCK:
        runner = _RUNNERS.get(key)
        if runner is None:
            generator = load_generator(model, dev)
            if archive is not None and record:
                generator = adaptation.apply(generator, archive.adaptation() or b"", record["base_sha256"])
            runner = _RUNNERS[key] = GeneratorRunner(generator, dev, batch, compile, precision)
        return runner


def make_restorer(
    archive: Archive,
    model: str | LoadedGenerator | None = None,
    device: str = "auto",
    batch: int | None = None,
    compile: bool = False,
    precision: str = DEFAULT_PRECISION,
) -> TileRestorer:
    """A restorer for ``archive`` with ``model``: a generator in memory gets a runner of its own
    (stopped by :meth:`TileRestorer.close`); a model name the process's shared restorer and
    runner. Without a model: the archive's adaptation on its base, else the shipped default
    for the archive's LR codec (:func:`default_model`)."""
    if isinstance(model, LoadedGenerator):
        runner = GeneratorRunner(model, resolve_device(device), batch, compile, precision)
        return TileRestorer(archive, runner, owns_runner=True)
    record = archive.metadata.stored_adaptation if model is None else None
    if record is not None and record["base"] not in shipped_weights():
        raise ArchiveError(
            f"{archive.location.url}: its adaptation was made for generator {record['base']!r}, which this wsistore "
            "does not ship; restore with --model to use another"
        )
    spec = RestoreSpec(
        archive.location.url,
        archive.metadata.manifest_sha256,
        record["base"] if record else model or default_model(archive.codec),
        device,
        batch,
        compile,
        json.dumps(archive.location.storage_options, sort_keys=True),
        record["sha256"] if record else None,
        precision,
        restorers=model is None,
    )
    return restorer_for(spec, archive)


def restorer_for(spec: RestoreSpec, archive: Archive | None = None) -> TileRestorer:
    """The process's restorer for ``spec`` (archive opened and model loaded once);
    ``archive`` is the archive already opened, if the caller has it."""
    with _LOCK:
        restorer = _RESTORERS.get(spec)
        if restorer is not None:
            _RESTORERS.move_to_end(spec)
            return restorer
    opened = archive or Archive.open(spec.archive, storage_options=json.loads(spec.storage_options))
    if opened.metadata.manifest_sha256 != spec.manifest_sha256:
        raise ArchiveError(f"{spec.archive} changed since this restore started (manifest differs)")
    adapted = opened if spec.adaptation else None
    runner = runner_for(spec.model, spec.device, spec.batch, spec.compile, adapted, spec.precision)
    restorer = TileRestorer(opened, runner, spec)
    with _LOCK:
        restorer = _RESTORERS.setdefault(spec, restorer)
        while len(_RESTORERS) > MAX_RESTORERS:
            _RESTORERS.popitem(last=False)
    return restorer
