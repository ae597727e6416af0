"""Slide readers: one small OpenSlide-style interface over openslide-python, tiffslide and
wsidicom (DICOM), and the rule for what an input path is (archive, folder, tile or slide) and
how to open it.

The backends answer in OpenSlide's vocabulary (``dimensions``, ``level_dimensions``,
``read_region(location, level, size)``, properties named ``openslide.*``), return
numpy RGB arrays, and raise :class:`~wsistore.errors.InputError` with one line that
names the file when it cannot be read. Tiles (PNG, JPEG, BMP) are read whole and seen
as one-level slides (:class:`ArraySlide`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from wsistore.checksums import sha256_files
from wsistore.dicom import is_dicom_input
from wsistore.errors import InputError, first_line, held_back

#: TIFF ResolutionUnit spellings (openslide and tiffslide differ) -> micrometres per unit.
_UM_PER_UNIT = {"centimeter": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}
_UM_PER_OME_UNIT = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}
#: Image files read whole into memory (with PIL): tiles. Every other file is a slide.
TILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: The slide files a folder of inputs contributes (a slide named directly may have any suffix).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".dcm")
#: What an input path is: see :func:`input_kind`.
InputKind = Literal["archive", "folder", "tile", "slide"]


class SlideReader(ABC):
    """A whole-slide image opened for reading."""

    name: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- geometry -------------------------------------------------------------------------
    @property
    @abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each pyramid level, level 0 first."""

    @property
    @abstractmethod
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of each level relative to level 0."""

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def tile_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of level 0's stored tiles (``openslide.level[0].tile-width``), or None."""
        width = _float(self.properties.get("openslide.level[0].tile-width"))
        height = _float(self.properties.get("openslide.level[0].tile-height"))
        return (int(width), int(height)) if width and height else None

    # -- metadata -------------------------------------------------------------------------
    @property
    @abstractmethod
    def properties(self) -> Mapping[str, str]:
        """All properties, with OpenSlide's names (``openslide.mpp-x``, ``aperio.AppMag``...)."""

    @property
    @abstractmethod
    def icc_profile(self) -> bytes | None:
        """The embedded ICC profile, raw bytes, or None."""

    @property
    @abstractmethod
    def associated_image_names(self) -> tuple[str, ...]:
        """Names of label, macro, thumbnail... images stored beside the pyramid."""

    @abstractmethod
    def associated_image(self, name: str) -> np.ndarray:
        """One associated image as ``(y, x, 3)`` uint8 RGB."""

    @property
    def files(self) -> tuple[Path, ...]:
        """The files the slide is read from (their sha256s are its fingerprint); the slide file
        itself, or a DICOM slide's instances."""
        return (self.path,)

    def fingerprint(self) -> tuple[str, dict[str, str]]:
        """The source's sha256 (:func:`~wsistore.checksums.sha256_files` of :attr:`files`) and
        each file's, by its name relative to the slide's folder (a folder slide's own)."""
        return sha256_files(self.files, self.path if self.path.is_dir() else self.path.parent)

    @property
    def vendor(self) -> str | None:
        return self.properties.get("openslide.vendor")

    @property
    def objective_power(self) -> float | None:
        return _float(self.properties.get("openslide.objective-power"))

    @cached_property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per pixel at level 0: vendor metadata first, then TIFF resolution tags.

        Never guessed from the objective power: None when neither says.
        """
        return resolve_mpp(self.properties)[0]

    @cached_property
    def mpp_source(self) -> str | None:
        return resolve_mpp(self.properties)[1]

    # -- pixels -----------------------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size = (w, h)`` pixels at ``level``; ``location`` is in level-0 pixels.

        Returns ``(h, w, 3)`` uint8 RGB; transparent areas are composited on white.
        """
        if not 0 <= level < self.level_count:
            raise InputError(f"{self.path.name}: level {level} out of range 0..{self.level_count - 1}")
        try:
            region = self._read_region(location, level, size)
        except InputError:
            raise
        except Exception as exc:  # backends raise many types for corrupt data
            raise InputError(
                f"{self.path.name}: cannot decode region {size} at {location} level {level} "
                f"({type(exc).__name__}: {first_line(exc)}); the file may be truncated or corrupt"
            ) from exc
        return _to_rgb(region)

    @abstractmethod
    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray: ...

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The highest level whose downsample is at most ``downsample``."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample + 1e-6:
                best = i
        return best

    # -- lifetime ----------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


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
        return _decoded(self.path, name, lambda: self._slide.associated_images[name])

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.read_region(location, level, size, **self.region_options))

    def close(self) -> None:
        self._slide.close()


def _decoded(path: Path, name: str, read: Callable[[], Any]) -> np.ndarray:
    """The associated image ``name`` that ``read`` decodes, as RGB; a decoding error is one line."""
    try:
        with _quiet():
            image = np.asarray(read())
    except Exception as exc:  # backends raise many types for corrupt data
        raise InputError(
            f"{path.name}: cannot decode the {name} image ({type(exc).__name__}: {first_line(exc)}); "
            "the file may be truncated or corrupt"
        ) from exc
    return _to_rgb(image)


class OpenSlideReader(BackendReader):
    """openslide-python with the openslide-bin wheel (no system library needed)."""

    name = "openslide"
    slide_class = "OpenSlide"

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
        page = self._slide.ts_tifffile.pages.first
        tag = page.tags.get(34675)  # InterColorProfile
        return None if tag is None else bytes(tag.value)


class DicomReader(SlideReader):
    """wsidicom over a DICOM WSI: one instance file, a folder of instances, or a DICOMDIR
    (:mod:`wsistore.dicom` checks and, where needed, repairs the instances first).

    The levels are the stored ones of the first pyramid, read at their own resolution (never
    resampled). Properties: the base instance's attributes as ``dicom.*``, the mpp from its
    Pixel Spacing, the objective power from its optical path; its label, overview and
    thumbnail instances are the ``label``, ``macro`` and ``thumbnail`` images.
    """

    name = "dicom"

    def __init__(self, path: Path) -> None:
        from upath import UPath
        from wsidicom import WsiDicom
        from wsidicom.file.io.wsidicom_io import WsiDicomReadIO
        from wsidicom.file.wsidicom_file_source import WsiDicomFileSource

        from wsistore import dicom

        super().__init__(path)
        self._instances = list(dicom.iter_instances(path))
        volumes = [i for i in self._instances if i.flavour == "VOLUME"]
        if not volumes:
            raise InputError(f"{path}: no DICOM whole-slide volume (pyramid level) instance")
        self._base = max(volumes, key=lambda i: i.pixels)
        streams = [WsiDicomReadIO(i.open(), filepath=UPath(i.path)) for i in self._instances]
        try:
            with _quiet():
                self._slide = WsiDicom(WsiDicomFileSource(streams), True)
                self._levels = list(self._slide.levels)
        except Exception as exc:
            for stream in streams:
                stream.close()
            raise InputError(f"{path}: DICOM slide that wsidicom cannot read ({first_line(exc)})") from None

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(i.path for i in self._instances)

    @cached_property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((level.size.width, level.size.height) for level in self._levels)

    @cached_property
    def level_downsamples(self) -> tuple[float, ...]:
        (w0, h0), *_ = self.level_dimensions
        return tuple((w0 / w + h0 / h) / 2 for w, h in self.level_dimensions)

    @cached_property
    def properties(self) -> Mapping[str, str]:
        from wsistore import dicom

        header = self._base.header
        props = dicom.properties(header)
        props["openslide.vendor"] = "dicom"
        props["openslide.level-count"] = str(self.level_count)
        props["openslide.level[0].tile-width"] = str(int(header.Columns))
        props["openslide.level[0].tile-height"] = str(int(header.Rows))
        for i, ((w, h), d) in enumerate(zip(self.level_dimensions, self.level_downsamples, strict=True)):
            props |= {f"openslide.level[{i}].width": str(w), f"openslide.level[{i}].height": str(h)}
            props[f"openslide.level[{i}].downsample"] = repr(d)
        spacing = dicom.pixel_spacing(header)
        if spacing:
            props["openslide.mpp-x"], props["openslide.mpp-y"] = (repr(v * 1000) for v in spacing)
        power = props.get("dicom.OpticalPathSequence[0].ObjectiveLensPower")
        if _float(power):
            props["openslide.objective-power"] = str(power)
        fixed = [f"{i.path.name}: {r}" for i in self._instances for r in i.repairs]
        if fixed:
            props["wsistore.dicom-repairs"] = "; ".join(fixed)
        return props

    @cached_property
    def icc_profile(self) -> bytes | None:
        try:
            profile = self._base.header.OpticalPathSequence[0].ICCProfile
        except (AttributeError, IndexError):
            return None
        return bytes(profile) if profile else None

    @cached_property
    def _associated(self) -> dict[str, Any]:
        """Associated image name -> its wsidicom group (the first label and overview, the
        largest thumbnail)."""
        found: dict[str, Any] = {}
        for name, series in (("label", self._slide.labels), ("macro", self._slide.overviews)):
            if series is not None and len(series):
                found[name] = series.get(0)
        thumbnails = self._slide.pyramid.thumbnails
        if thumbnails is not None and len(thumbnails):
            found["thumbnail"] = max(thumbnails.groups, key=lambda g: g.size.width * g.size.height)
        return found

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._associated))

    def associated_image(self, name: str) -> np.ndarray:
        from wsidicom.thread import ReadExecutor

        group = self._associated[name]

        def read() -> Any:
            with ReadExecutor() as executor:
                return group.get_default_full(executor=executor)

        return _decoded(self.path, name, read)

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """The stored level's pixels; past its border white, as openslide's transparent is."""
        downsample = self.level_downsamples[level]
        (width, height), (w, h) = self.level_dimensions[level], size
        x, y = int(location[0] / downsample), int(location[1] / downsample)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if (x0, y0, x1, y1) == (x, y, x + w, y + h):
            return self._read(level, (x, y), size)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        if x0 < x1 and y0 < y1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = _to_rgb(self._read(level, (x0, y0), (x1 - x0, y1 - y0)))
        return out

    def _read(self, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.read_region(location, self._levels[level].level, size, threads=1, as_array=True))

    def close(self) -> None:
        self._slide.close()


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


class ArraySlide(SlideReader):
    """An in-memory RGB image seen as a one-level slide (tiles, crops, tests)."""

    name = "array"

    def __init__(self, image: np.ndarray, name: str = "array", mpp: float | None = None) -> None:
        super().__init__(Path(name))
        self._image = _to_rgb(np.asarray(image))
        self._mpp = mpp

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((self._image.shape[1], self._image.shape[0]),)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return (1.0,)

    @cached_property
    def properties(self) -> Mapping[str, str]:
        if self._mpp is None:
            return {}
        return {"openslide.mpp-x": str(self._mpp), "openslide.mpp-y": str(self._mpp), "openslide.vendor": "array"}

    @property
    def icc_profile(self) -> bytes | None:
        return None

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return ()

    def associated_image(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        (x, y), (w, h) = location, size
        return self._image[y : y + h, x : x + w]

    def close(self) -> None:
        pass


class PlainImageReader(ArraySlide):
    """A plain image file (PNG, JPEG, BMP, or a TIFF that is no slide) decoded once, whole, and
    kept: one level, no associated images, and no mpp (a plain image does not say its scale).

    Its vendor is ``plain image (FORMAT)`` so that an archive records what its source was.
    """

    name = "image"

    def __init__(self, path: Path) -> None:
        image, self.format = read_image(path)
        super().__init__(image, name=path.name)
        self.path = path

    @cached_property
    def properties(self) -> Mapping[str, str]:
        height, width = self._image.shape[:2]
        return {
            "openslide.vendor": f"plain image ({self.format})",
            "openslide.level-count": "1",
            "openslide.level[0].width": str(width),
            "openslide.level[0].height": str(height),
        }


#: Explicit registry of reader backends.
READERS: dict[str, Callable[[Path], SlideReader]] = {
    "openslide": OpenSlideReader,
    "tiffslide": TiffSlideReader,
    "image": PlainImageReader,
    "dicom": DicomReader,
}


def open_slide(path: str | os.PathLike[str], reader: str = "auto") -> SlideReader:
    """Open a slide with ``reader`` (``auto``, ``openslide``, ``tiffslide``, ``image`` or ``dicom``).

    ``auto`` prefers tiffslide for TIFF-based formats it reads natively (Aperio SVS,
    generic and OME-TIFF: it decodes faster) and openslide for every other vendor
    format, then falls back to the other backend, and last to :class:`PlainImageReader`
    (PNG, JPEG, BMP, or a TIFF that is an image but no slide). A PNG, JPEG or BMP file
    goes straight to the plain-image reader, DICOM (a file, a folder of instances, a
    DICOMDIR) to :class:`DicomReader`: the only reader that opens a folder.

    A TIFF-based file is checked first (:func:`check_tiff`): cut short, without image
    data, or not 8-bit RGB/grey brightfield, it is refused by name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if reader != "auto" and reader not in READERS:
        raise InputError(f"unknown reader {reader!r}; choose auto, {', '.join(READERS)}")
    if path.is_dir() and not (reader in ("auto", "dicom") and is_dicom_input(path)):
        raise InputError(f"{path} is a directory, not a slide file (nor a folder of DICOM instances)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied (not readable)")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    channels = check_tiff(path) if path.is_file() and _is_tiff(path) else None
    order = [reader] if reader != "auto" else _auto_order(path)
    if channels == _PALETTE:  # the slide readers return palette indices as grey
        if reader not in ("auto", "image"):
            raise InputError(f"{path}: palette-colour TIFF: {reader} reads its indices as grey; use --reader image")
        order = ["image"]
    failures = []
    for name in order:
        try:
            with _quiet():
                slide = READERS[name](path)
                width, height = slide.dimensions  # backends open lazily: probe now
        except InputError as exc:
            if len(order) == 1:
                raise
            failures.append(f"{name}: {first_line(exc).removeprefix(f'{path}: ')}")
            continue
        except Exception as exc:
            failures.append(f"{name}: {_clean(exc)}")
            continue
        if width <= 0 or height <= 0:
            slide.close()
            raise InputError(f"{path}: slide has no pixels ({width} x {height})")
        if channels and not isinstance(slide, ArraySlide):
            slide.properties["wsistore.source-channels"] = channels  # type: ignore[index]
        return slide
    what = "a slide or image" if "image" in order else "a slide"
    raise InputError(f"{path}: not {what} that {' or '.join(order)} can open ({'; '.join(failures)})")


def _auto_order(path: Path) -> list[str]:
    if is_dicom_input(path):
        return ["dicom"]
    if _image_format(path) in _PLAIN_FORMATS:
        return ["image"]
    import openslide

    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        vendor = None
    if vendor in (None, "aperio", "generic-tiff") and _is_tiff(path):
        return ["tiffslide", "openslide", "image"]
    return ["openslide", "tiffslide"]


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
    with _quiet(errors):
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise InputError(f"{path}: damaged or truncated TIFF ({_truncation(path, size) or _clean(exc)})") from None
        try:
            series = tif.series[0]
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
            errors.append(_clean(exc))
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


def _clean(error: BaseException | str) -> str:
    """tifffile's message without its ``<tifffile.TiffPage @123>`` object names."""
    text = first_line(error) if isinstance(error, BaseException) else error.strip().splitlines()[0]
    text = re.sub(r"<[^<>]*>\s*", "", text).strip(" :")
    return text or (type(error).__name__ if isinstance(error, BaseException) else "unreadable")


_BRIGHTFIELD = "wsistore archives 8-bit RGB brightfield"
_PALETTE = "palette colour, read as RGB"


def _channel_layout(path: Path, axes: str, shape: tuple[int, ...], dtype: Any, page: Any) -> str:
    dims = dict(zip(axes, shape, strict=False))
    height, width = dims.get("Y", 0), dims.get("X", 0)
    samples, channels = dims.get("S", 1), dims.get("C", 1)
    photometric = page.photometric.name
    if np.dtype(dtype) != np.uint8:
        bits = np.dtype(dtype).itemsize * 8
        raise InputError(
            f"{path}: {bits}-bit {np.dtype(dtype).name} samples ({width} x {height}) are not supported; {_BRIGHTFIELD}"
        )
    if channels > 1 or samples > 4:
        raise InputError(
            f"{path}: multichannel image ({max(channels, samples)} channels, axes {axes}), e.g. fluorescence, "
            f"is not supported; {_BRIGHTFIELD}"
        )
    if samples in (3, 4) and photometric in ("RGB", "YCBCR"):
        return "RGB" if samples == 3 else "RGBA, read as RGB on white"
    if samples == 1 and photometric == "MINISBLACK":
        return "greyscale (1 channel), read as RGB"
    if samples == 1 and photometric == "PALETTE":
        return _PALETTE
    raise InputError(f"{path}: {samples}-sample {photometric} images are not supported; {_BRIGHTFIELD}")


def _shape(page: Any) -> str:
    shape = getattr(page, "shape", None)
    return f"{shape[1]} x {shape[0]} pixels" if shape and len(shape) >= 2 else "no shape"


#: The loggers of the libraries the readers call: their lines are held back (errors are one line).
_LOGGERS = ("tifffile", "pydicom", "wsidicom")


def _quiet(errors: list[str] | None = None) -> contextlib.AbstractContextManager[None]:
    """The backends' log lines and warnings held back (errors are one line); with ``errors``,
    their error messages are collected there."""
    return held_back(_LOGGERS, errors, _clean)


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def source_files(slide: str | os.PathLike[str]) -> list[Path]:
    """The files and folders a slide is read from: the slide itself and the companion folder
    of formats that keep their data beside it (MIRAX ``NAME/``, Olympus VSI ``_NAME_/``)."""
    path = Path(slide)
    found = [path]
    companion = {".mrxs": path.stem, ".vsi": f"_{path.stem}_"}.get(path.suffix.lower())
    if companion and (path.parent / companion).is_dir():
        found.append(path.parent / companion)
    return found


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a Zarr folder (what :mod:`wsistore.archive` reads)."""
    return path.is_dir() and (path / "zarr.json").is_file()


def input_kind(path: Path) -> InputKind:
    """What ``path`` is: an archive (a Zarr folder), a slide (a folder of one DICOM slide's
    instances: :func:`~wsistore.dicom.is_dicom_input`), another folder, a tile (a file with
    one of :data:`TILE_SUFFIXES`) or a slide (any other file)."""
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if is_archive(path):
        return "archive"
    if path.is_dir():
        return "slide" if is_dicom_input(path) else "folder"
    return "tile" if path.suffix.lower() in TILE_SUFFIXES else "slide"


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The tile and slide files in ``folder`` (with ``recursive``, in every folder below it too), sorted."""
    suffixes = TILE_SUFFIXES + SLIDE_SUFFIXES
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in suffixes)


def read_tile(path: Path) -> np.ndarray:
    """A tile image read whole, as ``(y, x, 3)`` uint8 RGB."""
    return read_image(path)[0]


#: The most pixels a plain image may have: it is decoded whole (3 bytes a pixel, ~0.8 GB).
PLAIN_IMAGE_MAX_PIXELS = 2**28
#: PIL formats that are plain images (a TIFF is one only when no slide reader opens it).
_PLAIN_FORMATS = ("PNG", "JPEG", "BMP")


def _image_format(path: Path) -> str | None:
    """The plain image format ``path`` starts like (PNG, JPEG, BMP), or None."""
    with path.open("rb") as f:
        head = f.read(8)
    for magic, name in ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP")):
        if head.startswith(magic):
            return name
    return None


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """A plain image file decoded whole: ``(y, x, 3)`` uint8 RGB and its format name.

    PIL reads PNG, JPEG, BMP and simple TIFF; tifffile the TIFFs PIL does not. Anything
    that is not 8-bit RGB, RGBA or grey, or larger than :data:`PLAIN_IMAGE_MAX_PIXELS`,
    is refused with one line.
    """
    try:
        with Image.open(path) as image:
            fmt = str(image.format)
            _check_plain(path, image.size[0], image.size[1], image.mode)
            image.load()
            return np.asarray(image.convert("RGB")), fmt
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: plain image too large to read whole ({first_line(exc)})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        error = f"{type(exc).__name__}: {first_line(exc)}"
        if not _is_tiff(path):
            raise InputError(f"{path}: not a readable image ({error})") from None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            height, width = page.shape[:2]
            photometric = getattr(page.photometric, "name", page.photometric)
            _check_plain(path, width, height, f"{page.dtype} {photometric} x{page.samplesperpixel}")
            return _to_rgb(page.asarray()), "TIFF"
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable image ({error}; tifffile: {first_line(exc)})") from None


def _check_plain(path: Path, width: int, height: int, mode: str) -> None:
    if width * height > PLAIN_IMAGE_MAX_PIXELS:
        raise InputError(
            f"{path}: plain image of {width} x {height} pixels is too large to read whole "
            f"(max {PLAIN_IMAGE_MAX_PIXELS / 1e6:.0f} MP); convert it to a tiled pyramidal TIFF"
        )
    if mode in ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "RGBX"):
        return
    if mode.startswith("uint8 ") and mode.split()[1] in ("RGB", "MINISBLACK", "YCBCR", "PALETTE"):
        return
    raise InputError(
        f"{path}: image mode {mode} ({width} x {height}) is not supported; wsistore archives 8-bit RGB brightfield"
    )


def open_input(path: Path, reader: str = "auto") -> SlideReader:
    """Open an image file by its :func:`input_kind`: a tile read whole (a :class:`PlainImageReader`,
    an :class:`ArraySlide`), else a slide with :func:`open_slide`."""
    if input_kind(path) == "tile":
        return PlainImageReader(path)
    return open_slide(path, reader)


def resolve_mpp(props: Mapping[str, str]) -> tuple[tuple[float, float] | None, str | None]:
    """Microns per pixel and where they came from, or ``(None, None)``.

    Order: a vendor's own metadata, OME-XML physical sizes, TIFF resolution tags with
    a real unit, then whatever the backend derived. Never the objective power.
    """
    x, y = _float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))
    vendor = props.get("openslide.vendor")
    if x and y and vendor not in (None, "generic-tiff"):
        return (x, y), f"vendor metadata ({vendor})"
    ome = _ome_mpp(str(props.get("tiff.ImageDescription", "")))
    if ome:
        return ome, "OME-XML PhysicalSizeX/Y"
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    um = _UM_PER_UNIT.get(unit)
    xres, yres = _float(props.get("tiff.XResolution")), _float(props.get("tiff.YResolution"))
    if um and xres and yres:
        return (um / xres, um / yres), f"TIFF resolution tags ({unit})"
    if x and y:
        return (x, y), "reader (openslide.mpp-x/y)"
    return None, None


def _ome_mpp(description: str) -> tuple[float, float] | None:
    """Physical pixel size from OME-XML in an ImageDescription, in micrometres."""
    if "<OME" not in description[:2000]:
        return None
    try:
        root = ElementTree.fromstring(description)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("}Pixels") or element.tag == "Pixels":
            sizes = []
            for axis in ("X", "Y"):
                size = _float(element.get(f"PhysicalSize{axis}"))
                factor = _UM_PER_OME_UNIT.get(element.get(f"PhysicalSize{axis}Unit", "µm"))
                if size is None or factor is None:
                    return None
                sizes.append(size * factor)
            return sizes[0], sizes[1]
    return None


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if np.isfinite(result) and result > 0 else None


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """RGBA/grey/RGB -> RGB uint8, compositing transparency on white."""
    if array.dtype != np.uint8:
        raise InputError(f"unsupported sample type {array.dtype}: only 8-bit RGB slides are supported")
    if array.ndim == 3 and array.shape[2] in (1, 2):  # grey, grey + alpha
        grey = array[:, :, :1]
        array = np.concatenate([grey, grey, grey, array[:, :, 1:]], axis=2) if array.shape[2] == 2 else grey[:, :, 0]
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[:, :, 3:4]
        if alpha.min() == 255:
            return np.ascontiguousarray(array[:, :, :3])
        rgb = array[:, :, :3].astype(np.uint16) * alpha + 255 * (255 - alpha.astype(np.uint16))
        return ((rgb + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(array[:, :, :3])


def stored_associated_bytes(path: Path) -> dict[str, int]:
    """The bytes a TIFF-based slide file itself spends on each associated image (label,
    macro, thumbnail ...: tifffile's series names, lower-cased); empty for other formats."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            found = {}
            for series in tif.series[1:]:
                pages = [page for page in series.pages if isinstance(page, tifffile.TiffPage)]
                if series.name and pages:
                    found[series.name.lower()] = sum(int(n) for page in pages for n in page.databytecounts)
            return found
    except (tifffile.TiffFileError, OSError, ValueError):
        return {}
