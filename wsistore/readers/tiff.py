"""TIFF-based slides: OpenSlide (every vendor format it knows) and tiffslide (pure Python over
tifffile: Aperio SVS, NDPI, OME- and generic TIFF), the checks that refuse a TIFF that cannot be
archived faithfully, and a tile decoder that reads in the calling thread.

Both backends read the main image (:func:`wsistore.readers.placement.main_series`): tiffslide is
pointed at it where its own parser would take series 0, and OpenSlide's generic-TIFF reading is
refused where its level 0 is another image.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from wsistore.errors import InputError
from wsistore.readers.base import SlideReader, clean_error, decoded, quiet
from wsistore.readers.placement import ASSOCIATED_NAMES, main_series


class BackendReader(SlideReader):
    """A reader over a backend slide object with OpenSlide's own API (``level_dimensions``,
    ``associated_images``, ``read_region``, ``close()``); subclasses translate what differs.

    The backend is the module named :attr:`name`, imported when the first slide opens.
    """

    #: the backend module's slide class, e.g. ``OpenSlide``
    slide_class: ClassVar[str]
    #: extra keyword arguments for the backend's ``read_region``
    region_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._slide = getattr(importlib.import_module(self.name), self.slide_class)(str(path))

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._slide.associated_images))

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self.associated_image_names:
            raise KeyError(name)
        return decoded(self.path, name, lambda: self._slide.associated_images[name])

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.read_region(location, level, size, **self.region_options))

    def close(self) -> None:
        self._slide.close()


class OpenSlideReader(BackendReader):
    """openslide-python with the openslide-bin wheel (no system library needed).

    OpenSlide knows which image of a vendor format is the slide; a TIFF it reads as generic
    (its level 0: the first tiled page) is refused when that is not the file's main image.
    """

    name = "openslide"
    slide_class = "OpenSlide"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        if self._slide.properties.get("openslide.vendor") == "generic-tiff" and is_tiff(path):
            found, main = self.dimensions, main_image_size(path)
            if main is not None and found != main:
                self.close()
                raise InputError(
                    f"{path}: OpenSlide reads a {found[0]} x {found[1]} image as the slide, but the file's main "
                    f"image is {main[0]} x {main[1]}; use --reader tiffslide"
                )

    @cached_property
    def properties(self) -> Mapping[str, str]:
        return dict(self._slide.properties)

    @cached_property
    def icc_profile(self) -> bytes | None:
        profile = self._slide.color_profile
        return None if profile is None else bytes(profile.tobytes())


class TiffSlideReader(BackendReader):
    """tiffslide: pure Python over tifffile; reads OME-TIFF that openslide does not."""

    name = "tiffslide"
    slide_class = "TiffSlide"
    region_options = {"as_array": True}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        _read_main_series(self._slide)

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._associated))

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self._associated:
            raise KeyError(name)
        return decoded(self.path, name, self._associated[name].asarray)

    @cached_property
    def _associated(self) -> dict[str, Any]:
        """The named pictures beside the main image (label, macro, thumbnail ...), by name."""
        series = self._slide.ts_tifffile.series
        main = int(self._slide.properties["tiffslide.series-index"])
        named = [s for i, s in enumerate(series) if i != main and str(s.name).strip().lower() in ASSOCIATED_NAMES]
        return {str(s.name).strip().lower(): s for s in reversed(named)}  # the first of a name

    @cached_property
    def properties(self) -> Mapping[str, str]:
        props: dict[str, str] = {}
        for key, value in self._slide.properties.items():
            if value is None:
                continue
            if key.startswith("tiffslide."):
                key = "openslide." + key.removeprefix("tiffslide.")
            props[key] = str(value)
        return props

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        tiles = self._tiles[level]
        if tiles is not None:
            region = tiles.read(self._slide._read_region_loc_transform(location, level), size)
            if region is not None:
                return region
        try:
            return super()._read_region(location, level, size)
        except Exception:
            _settle_zarr_reads()  # before the error closes the file under the other tiles' reads
            raise

    @cached_property
    def _tiles(self) -> list[TileDecoder | None]:
        """Per level: read tile by tile in the calling thread, when the level is one plain tiled page."""
        series = self._slide.ts_tifffile.series[int(self._slide.properties["tiffslide.series-index"])]
        if self._slide.properties["tiffslide.series-axes"] != "YXS":
            return [None] * len(self.level_dimensions)
        return [
            TileDecoder.of(level.pages[0], self.path) if len(level.pages) == 1 else None
            for level in series.levels[: len(self.level_dimensions)]
        ]

    def close(self) -> None:
        for tiles in self.__dict__.get("_tiles", []):
            if tiles is not None:
                tiles.close()
        super().close()

    @cached_property
    def icc_profile(self) -> bytes | None:
        page = self._slide.ts_tifffile.series[int(self._slide.properties["tiffslide.series-index"])].pages[0]
        tag = page.tags.get(34675)  # InterColorProfile
        return None if tag is None else bytes(tag.value)


class TileDecoder:
    """Regions of one tiled TIFF page, each tile read with ``os.pread`` and decoded by tifffile
    in the calling thread: the decoder tiffslide's zarr store calls, with the same arguments,
    so the same pixels, but two workers' reads decode in parallel instead of queueing on
    zarr's one event-loop thread. Regions past the page or over a missing tile are left to
    tiffslide (``read`` returns None)."""

    def __init__(self, page: Any, path: Path) -> None:
        self.page = page
        self.decode = page.decode  # built once: tifffile caches it per page shape and codec
        self.options: dict[str, Any] = {"_fullsize": True}
        if page.jpegtables is not None:
            self.options["jpegtables"] = page.jpegtables
        if page.jpegheader is not None:
            self.options["jpegheader"] = page.jpegheader
        self.tile = (int(page.tilelength), int(page.tilewidth))
        self.size = (int(page.imagelength), int(page.imagewidth))
        self.across = -(-self.size[1] // self.tile[1])
        self.fd = os.open(path, os.O_RDONLY)

    @classmethod
    def of(cls, page: Any, path: Path) -> TileDecoder | None:
        """A decoder for ``page``, or None when it is not a plain tiled 8-bit RGB(A) page."""
        plain = (
            hasattr(os, "pread")  # not on Windows
            and page.is_tiled
            and not page.parent.is_ndpi
            and page.planarconfig == 1
            and page.imagedepth == 1
            and page.dtype == np.uint8
            and page.samplesperpixel in (3, 4)
            and len(page.dataoffsets) == -(-page.imagelength // page.tilelength) * -(-page.imagewidth // page.tilewidth)
        )
        return cls(page, path) if plain else None

    def read(self, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray | None:
        """``(h, w, samples)`` pixels of ``size = (w, h)`` at ``location = (x, y)``, or None."""
        (x, y), (w, h) = location, size
        (th, tw), (height, width) = self.tile, self.size
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
            return None
        tiles = [(r, c) for r in range(y // th, -(-(y + h) // th)) for c in range(x // tw, -(-(x + w) // tw))]
        offsets, counts = self.page.dataoffsets, self.page.databytecounts
        if any(not offsets[r * self.across + c] or not counts[r * self.across + c] for r, c in tiles):
            return None
        out = np.empty((h, w, self.page.samplesperpixel), dtype=np.uint8)
        for r, c in tiles:
            index = r * self.across + c
            data = os.pread(self.fd, counts[index], offsets[index])
            if len(data) != counts[index]:
                raise InputError(f"{self.page.parent.filehandle.name}: tile {index} ends beyond the file (truncated)")
            decoded = self.decode(data, index, **self.options)[0]
            y0, y1, x0, x1 = max(y, r * th), min(y + h, (r + 1) * th), max(x, c * tw), min(x + w, (c + 1) * tw)
            out[y0 - y : y1 - y, x0 - x : x1 - x] = decoded[0, y0 - r * th : y1 - r * th, x0 - c * tw : x1 - c * tw]
        return out

    def close(self) -> None:
        os.close(self.fd)


def _settle_zarr_reads(timeout: float = 30.0) -> None:
    """Wait for the tile reads still running on zarr's event loop, their errors taken.

    tiffslide reads a region as a zarr gather of tiles; when one tile fails to decode, the
    error comes back at once while the other tiles are still being read. Closing the file
    then (or leaving the interpreter) fails those reads, and asyncio prints a traceback for
    each at exit: the one-line error would drown. Waiting here keeps it one line.
    """
    from zarr.core import sync

    loop = sync.loop[0]
    if loop is None or not loop.is_running():
        return

    async def settle() -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            if task.done() and not task.cancelled():
                task.exception()  # taken: no "exception was never retrieved" at exit

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(settle(), loop).result(timeout + 5)


def check_tiff(path: Path) -> str | None:
    """Refuse, by name, a TIFF-based file that cannot be archived faithfully; else return
    its channel layout (``RGB``, ``greyscale (1 channel), read as RGB`` ...).

    Refused: a file cut short or damaged (an image directory or a tag's value beyond the
    end of the file, image data that ends beyond it, any page tifffile cannot follow), a
    base image with no stored data (dimensions declared, nothing behind them), samples
    that are not 8-bit (16-bit, float), and more than one channel plane (multichannel
    fluorescence). A truncated file is refused even where its base image is intact: its
    label or macro would be lost without a word.
    """
    import tifffile

    size = path.stat().st_size
    errors: list[str] = []
    with quiet(errors):
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise InputError(
                f"{path}: damaged or truncated TIFF ({_truncation(path, size) or clean_error(exc)})"
            ) from None
        try:
            series = tif.series[main_series(tif.series)]
            pages: list[Any] = [*tif.pages, *(level.pages[0] for level in series.levels[1:])]
            for index, page in enumerate(pages):
                ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
                if ends and max(ends) > size:
                    raise InputError(
                        f"{path}: file is truncated: image {index} ({_shape(page)}) needs {max(ends):,} bytes "
                        f"but the file has {size:,}"
                    )
            base = series.pages[0]
            if base is None or not any(int(n) for n in base.databytecounts):
                raise InputError(f"{path}: the base image ({_shape(base)}) has no stored image data")
            layout = _channel_layout(path, series.axes, series.shape, series.dtype, base)
        except InputError:
            raise
        except Exception as exc:
            errors.append(clean_error(exc))
        finally:
            tif.close()
    if errors:
        raise InputError(f"{path}: damaged or truncated TIFF ({_truncation(path, size) or errors[0]})")
    return layout


def _truncation(path: Path, size: int) -> str | None:
    """Why a TIFF whose first image directory cannot be read is cut short, if it is."""
    with path.open("rb") as f:
        head = f.read(16)
    big = head[2:4] in (b"+\x00", b"\x00+")
    order = "<" if head[:2] == b"II" else ">"
    need = 16 if big else 8
    if len(head) < need:
        return f"file is truncated: {size} bytes, the header alone needs {need}"
    offset = int.from_bytes(head[8:16] if big else head[4:8], "little" if order == "<" else "big")
    if offset >= size:
        return f"file is truncated: the first image directory is at byte {offset:,}, the file has {size:,}"
    return None


BRIGHTFIELD = "wsistore archives 8-bit RGB brightfield"
PALETTE = "palette colour, read as RGB"


def _channel_layout(path: Path, axes: str, shape: tuple[int, ...], dtype: Any, page: Any) -> str:
    dims = dict(zip(axes, shape, strict=False))
    height, width = dims.get("Y", 0), dims.get("X", 0)
    samples, channels = dims.get("S", 1), dims.get("C", 1)
    photometric = page.photometric.name
    if np.dtype(dtype) != np.uint8:
        bits = np.dtype(dtype).itemsize * 8
        raise InputError(
            f"{path}: {bits}-bit {np.dtype(dtype).name} samples ({width} x {height}) are not supported; {BRIGHTFIELD}"
        )
    if channels > 1 or samples > 4:
        raise InputError(
            f"{path}: multichannel image ({max(channels, samples)} channels, axes {axes}), e.g. fluorescence, "
            f"is not supported; {BRIGHTFIELD}"
        )
    if samples in (3, 4) and photometric in ("RGB", "YCBCR"):
        return "RGB" if samples == 3 else "RGBA, read as RGB on white"
    if samples == 1 and photometric == "MINISBLACK":
        return "greyscale (1 channel), read as RGB"
    if samples == 1 and photometric == "PALETTE":
        return PALETTE
    raise InputError(f"{path}: {samples}-sample {photometric} images are not supported; {BRIGHTFIELD}")


def _shape(page: Any) -> str:
    shape = getattr(page, "shape", None)
    return f"{shape[1]} x {shape[0]} pixels" if shape and len(shape) >= 2 else "no shape"


def is_tiff(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def stored_associated_bytes(path: Path) -> dict[str, int]:
    """The bytes a TIFF-based slide file itself spends on each associated image (label,
    macro, thumbnail ...: tifffile's series names, lower-cased); empty for other formats."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            found = {}
            main = main_series(tif.series)
            for index, series in enumerate(tif.series):
                pages = [page for page in series.pages if isinstance(page, tifffile.TiffPage)]
                if index != main and series.name and pages:
                    found[series.name.lower()] = sum(int(n) for page in pages for n in page.databytecounts)
            return found
    except (tifffile.TiffFileError, OSError, ValueError):
        return {}


def main_image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a TIFF file's main image (:func:`main_series`), or None when
    tifffile cannot tell."""
    import tifffile

    try:
        with quiet(), tifffile.TiffFile(path) as tif:
            series = tif.series[main_series(tif.series)]
            dims = dict(zip(series.axes, series.shape, strict=False))
            return int(dims["X"]), int(dims["Y"])
    except Exception:
        return None


def _read_main_series(slide: Any) -> None:
    """Point a tiffslide slide at its file's main image when its parser took another series.

    tiffslide reads the series its ``tiffslide.series-index`` property names, and its parser
    names series 0 for generic TIFF and OME-TIFF (and Aperio, where that is right): a thumbnail
    written first, or a macro first in a multi-series OME-TIFF, would be read as the slide. Its
    level geometry and the resolution tags are then taken from the main series' own pages.
    Leica SCN is left to tiffslide's own parser, which places the scan's images itself.
    """
    properties = slide.properties
    series = slide.ts_tifffile.series
    main = main_series(series)
    if properties.get("tiffslide.vendor") == "leica" or main == properties["tiffslide.series-index"]:
        return
    chosen = series[main]
    for key in [k for k in properties if k.startswith(("tiffslide.level[", "tiffslide.mpp", "tiff.Resolution"))]:
        del properties[key]
    for key in ("tiff.XResolution", "tiff.YResolution", "tiff.ResolutionUnit"):
        properties.pop(key, None)
    properties["tiffslide.series-index"] = main
    properties["tiffslide.series-axes"] = chosen.axes
    dims = dict(zip(chosen.axes, chosen.shape, strict=False))
    w0, h0 = int(dims["X"]), int(dims["Y"])
    for i, level in enumerate(chosen.levels):
        shape = dict(zip(level.axes, level.shape, strict=False))
        width, height = int(shape["X"]), int(shape["Y"])
        page = level.pages[0]
        properties[f"tiffslide.level[{i}].width"] = width
        properties[f"tiffslide.level[{i}].height"] = height
        properties[f"tiffslide.level[{i}].downsample"] = (w0 / width + h0 / height) / 2
        properties[f"tiffslide.level[{i}].tile-width"] = page.tilewidth
        properties[f"tiffslide.level[{i}].tile-height"] = page.tilelength
    tags = chosen.pages[0].tags
    if all(name in tags for name in ("ResolutionUnit", "XResolution", "YResolution")):
        properties["tiff.ResolutionUnit"] = tags["ResolutionUnit"].value.name
        properties["tiff.XResolution"] = _rational(tags["XResolution"].value)
        properties["tiff.YResolution"] = _rational(tags["YResolution"].value)


def _rational(value: Any) -> float:
    """A TIFF RATIONAL tag's value (a ``(numerator, denominator)`` pair) as a float."""
    numerator, denominator = value
    return numerator / denominator if denominator else 0.0
