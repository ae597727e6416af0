"""Regions on demand through OpenSlide's API: ``wsistore.open(ARCHIVE, model=...)``.

Level 0 is the super-resolved full resolution, computed tile by tile on the canonical
compute grid (so it equals the same region of a full restore) and kept in a thread-safe
LRU cache that computes each tile once however many threads ask for it. Levels 1, 2 ...
are the archive's stored LR pyramid (4x, 8x ... downsample): thumbnails and DeepZoom
overviews never run the generator. Calls share nothing mutable but that cache.

:meth:`RestoredSlide.to_dask` gives each level as a lazy Dask array for any dask-aware tool
(napari, xarray, scikit-image): level 0 one block per compute tile through the same cache,
the stored levels one block per archive chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.array as da
import numpy as np
from openslide import PROPERTY_NAME_BACKGROUND_COLOR, AbstractSlide
from PIL import Image

from wsistore.archive.reader import Archive
from wsistore.errors import WsistoreError
from wsistore.geometry import Box
from wsistore.models.weights import LoadedGenerator
from wsistore.restoration.engine import CachedTiles, TileRestorer, assemble, level0_array, make_restorer
from wsistore.restoration.grid import ComputeGrid
from wsistore.restoration.int8 import DEFAULT_PRECISION

DEFAULT_CACHE_BYTES = 512 << 20
VENDOR = "wsistore"


class RestoredSlide(AbstractSlide):
    """A wsistore archive seen as a full-resolution slide (OpenSlide's API)."""

    def __init__(
        self, restorer: TileRestorer, cache_bytes: int = DEFAULT_CACHE_BYTES, workers: int | None = None
    ) -> None:
        super().__init__()
        self._restorer = restorer
        self._archive = restorer.archive
        self._profile = self._archive.icc_profile
        self._tiles = CachedTiles(restorer, cache_bytes)
        self._pool = ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="wsistore-ondemand")
        self._closed = False
        md = self._archive.metadata
        self._dimensions = ((md.width, md.height), *((lv.width, lv.height) for lv in md.levels))
        self._downsamples = (1.0, *(float(lv.downsample) for lv in md.levels))
        self._properties = self._make_properties()

    @classmethod
    def detect_format(cls, filename: str | os.PathLike[str]) -> str | None:  # type: ignore[override]
        """``"wsistore"`` for a complete wsistore archive, else None."""
        try:
            Archive.open(filename)
        except WsistoreError:
            return None
        return VENDOR

    # -- geometry and metadata -------------------------------------------------------------
    @property
    def level_count(self) -> int:
        return len(self._dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return _AssociatedImages(self._archive)

    @property
    def archive(self) -> Archive:
        """The archive this slide restores."""
        return self._archive

    @property
    def grid(self) -> ComputeGrid:
        """Level 0's compute grid: the tiles :meth:`tile` restores (``grid.tiles_in(box)``)."""
        return self._restorer.grid

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (OpenSlide's rule)."""
        best = 0
        for level, d in enumerate(self._downsamples):
            if d <= downsample:
                best = level
        return best

    # -- pixels ----------------------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGBA pixels of ``size`` at ``level``, ``location`` in level-0 pixels; transparent
        outside the slide, as OpenSlide returns them."""
        self._check_open()
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} outside 0..{self.level_count - 1}")
        w, h = (int(v) for v in size)
        if w < 0 or h < 0:
            raise ValueError(f"negative region size {size}")
        out = np.zeros((h, w, 4), dtype=np.uint8)
        d = int(self._downsamples[level])
        x0, y0 = int(location[0]) // d, int(location[1]) // d
        width, height = self._dimensions[level]
        box = (max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height))
        if box[0] < box[2] and box[1] < box[3]:
            pixels = self._level0(box) if level == 0 else self._archive.read_lr(level - 1, box)
            out[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0, :3] = pixels
            out[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0, 3] = 255
        image = Image.fromarray(out, "RGBA")
        if self._profile is not None:
            image.info["icc_profile"] = self._profile
        return image

    def provenance(self) -> dict[str, Any]:
        """What makes level 0's pixels: generator (name, weights and adaptation sha256),
        precision, device, compute grid, archive and source (recorded in every restore)."""
        return self._restorer.provenance()

    def tile(self, row: int, col: int) -> np.ndarray:
        """Compute tile ``(row, col)`` of level 0, ``(y, x, 3)`` uint8 (read-only), restored once
        and cached; its place is ``grid.hr_box(row, col)``."""
        self._check_open()
        return self._tiles.tile(row, col)

    def cached_tile(self, row: int, col: int) -> np.ndarray | None:
        """Compute tile ``(row, col)`` if it is in the cache, else None: never restores, never waits."""
        return self._tiles.cached(row, col)

    def to_dask(self, level: int = 0) -> da.Array:
        """Level ``level`` as a lazy ``(y, x, 3)`` uint8 Dask array, the pixels :meth:`read_region`
        returns there (without alpha). Level 0 is restored on demand, one block per compute tile,
        through this slide's cache: computed in full it equals ``wsistore restore``'s level 0.
        Levels 1, 2 ... are the stored pyramid, one block per archive chunk, read and checked
        when computed (a damaged chunk raises its :class:`~wsistore.errors.ArchiveError`). The
        array pickles (dask.distributed): a worker opens the archive and loads the model itself."""
        self._check_open()
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} outside 0..{self.level_count - 1}")
        return level0_array(self._tiles) if level == 0 else stored_array(self._restorer, level - 1)

    def get_thumbnail(self, size: tuple[int, int]) -> Image.Image:
        """An RGB thumbnail from the stored LR pyramid (never super-resolved)."""
        downsample = max(dim / thumb for dim, thumb in zip(self.dimensions, size, strict=True))
        level = max(1, self.get_best_level_for_downsample(downsample)) if self.level_count > 1 else 0
        tile = self.read_region((0, 0), level, self.level_dimensions[level])
        thumb = Image.new("RGB", tile.size, "#" + self._properties[PROPERTY_NAME_BACKGROUND_COLOR])
        thumb.paste(tile, None, tile)
        thumb.thumbnail(size, Image.Resampling.LANCZOS)
        if self._profile is not None:
            thumb.info["icc_profile"] = self._profile
        return thumb

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._tiles.clear()
        self._restorer.close()

    def __repr__(self) -> str:
        return f"RestoredSlide({self._archive.location.url!r}, generator={self._restorer.generator.name!r})"

    # -- internals -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the slide is closed")

    def _tile(self, rc: tuple[int, int]) -> np.ndarray:
        return self._tiles.tile(*rc)

    def _level0(self, box: Box) -> np.ndarray:
        return assemble(self._restorer.grid, box, self._tile, self._pool)

    def _make_properties(self) -> Mapping[str, str]:
        md = self._archive.metadata
        prov = self._restorer.provenance()
        gen = prov["generator"]
        props = {
            k: v for k, v in md.source.properties.items() if not k.startswith(("openslide.", "tiff.", "tiffslide."))
        }
        props |= {
            "openslide.vendor": VENDOR,
            "openslide.comment": f"super-resolved by {gen['name']} from a 1/{md.scale} wsistore archive "
            f"of {md.source.file_name}",
            "openslide.level-count": str(self.level_count),
            PROPERTY_NAME_BACKGROUND_COLOR: "".join(f"{v:02X}" for v in md.tissue.background_rgb),
            "wsistore.super-resolved": "true",
            "wsistore.generator": gen["name"],
            "wsistore.architecture": str(gen["architecture"]),
            "wsistore.weights-sha256": gen["weights_sha256"] or "",
            "wsistore.adaptation-sha256": gen.get("adaptation_sha256") or "",
            "wsistore.precision": prov["precision"],
            "wsistore.compute-tile": str(prov["compute_tile_lr"]),
            "wsistore.halo": str(prov["halo_lr"]),
            "wsistore.archive": self._archive.location.url,
            "wsistore.source-sha256": md.source.sha256,
        }
        if md.mpp:
            props["openslide.mpp-x"], props["openslide.mpp-y"] = (str(m) for m in md.mpp)
        if md.source.objective_power:
            props["openslide.objective-power"] = f"{md.source.objective_power:g}"
        if self._profile is not None:
            props["openslide.icc-size"] = str(len(self._profile))
        chunk = self._archive.level(0).chunk
        for level, ((w, h), d) in enumerate(zip(self._dimensions, self._downsamples, strict=True)):
            side = self._restorer.grid.hr_tile if level == 0 else chunk
            props |= {
                f"openslide.level[{level}].width": str(w),
                f"openslide.level[{level}].height": str(h),
                f"openslide.level[{level}].downsample": f"{d:g}",
                f"openslide.level[{level}].tile-width": str(side),
                f"openslide.level[{level}].tile-height": str(side),
            }
        return dict(sorted(props.items()))


def stored_array(restorer: TileRestorer, index: int) -> da.Array:
    """Stored pyramid level ``index`` (0 = the LR base) of ``restorer``'s archive as a lazy
    ``(y, x, 3)`` uint8 Dask array, one block per archive chunk; the restorer carries the
    archive to other processes (it pickles as its archive URL and model)."""
    lr = restorer.archive.level(index)
    ch, cw = lr.chunk_hw
    rows = tuple(min(ch, lr.height - y) for y in range(0, lr.height, ch))
    cols = tuple(min(cw, lr.width - x) for x in range(0, lr.width, cw))
    md = restorer.archive.metadata
    return da.map_blocks(
        _stored_block,
        restorer,
        index,
        chunks=(rows, cols, (3,)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
        name=f"wsistore-stored-{index}-" + da.core.tokenize(restorer.archive.location.url, md.manifest_sha256),
    )


def _stored_block(restorer: TileRestorer, index: int, block_id: tuple[int, int, int]) -> np.ndarray:
    lr = restorer.archive.level(index)
    ch, cw = lr.chunk_hw
    y0, x0 = block_id[0] * ch, block_id[1] * cw
    return restorer.archive.read_lr(index, (x0, y0, min(x0 + cw, lr.width), min(y0 + ch, lr.height)))


class _AssociatedImages(Mapping[str, Image.Image]):
    """Label, macro, thumbnail ... as RGBA images, read when asked for."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def __getitem__(self, name: str) -> Image.Image:
        return Image.fromarray(self._archive.associated_image(name), "RGB").convert("RGBA")

    def __iter__(self) -> Iterator[str]:
        return iter(self._archive.associated_image_names)

    def __len__(self) -> int:
        return len(self._archive.associated_image_names)


def open_restored(
    archive: str | os.PathLike[str],
    model: str | LoadedGenerator | None = None,
    device: str = "auto",
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    workers: int | None = None,
    storage_options: dict[str, Any] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> RestoredSlide:
    """Open ``archive`` as a full-resolution slide restored by ``model`` (a shipped name,
    ``bicubic``, a weights path, or a generator in memory; default: the best shipped);
    ``storage_options`` configure the filesystem of an archive URL; ``precision``: fp32, int8
    (CPU) or auto (:mod:`wsistore.restoration.int8`)."""
    opened = Archive.open(archive, storage_options=storage_options)
    return RestoredSlide(make_restorer(opened, model, device, precision=precision), cache_bytes, workers)
