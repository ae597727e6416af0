"""Slide readers: one small OpenSlide-style interface over openslide-python and tiffslide,
and the rule for what an input path is (archive, folder, tile or slide) and how to open it.

Both backends answer in OpenSlide's vocabulary (``dimensions``, ``level_dimensions``,
``read_region(location, level, size)``, properties named ``openslide.*``), return
numpy RGB arrays, and raise :class:`~wsistore.errors.InputError` with one line that
names the file when it cannot be read. Tiles (PNG, JPEG, BMP) are read whole and seen
as one-level slides (:class:`ArraySlide`).
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from wsistore.errors import InputError, first_line

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
        return _to_rgb(np.asarray(self._slide.associated_images[name]))

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.read_region(location, level, size, **self.region_options))

    def close(self) -> None:
        self._slide.close()


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

    @cached_property
    def icc_profile(self) -> bytes | None:
        page = self._slide.ts_tifffile.pages.first
        tag = page.tags.get(34675)  # InterColorProfile
        return None if tag is None else bytes(tag.value)


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


#: Explicit registry of reader backends.
READERS: dict[str, Callable[[Path], SlideReader]] = {
    "openslide": OpenSlideReader,
    "tiffslide": TiffSlideReader,
}


def open_slide(path: str | os.PathLike[str], reader: str = "auto") -> SlideReader:
    """Open a slide with ``reader`` (``auto``, ``openslide`` or ``tiffslide``).

    ``auto`` prefers tiffslide for TIFF-based formats it reads natively (Aperio SVS,
    generic and OME-TIFF: it decodes faster) and openslide for every other vendor
    format, then falls back to the other backend.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a slide file")
    if reader != "auto" and reader not in READERS:
        raise InputError(f"unknown reader {reader!r}; choose auto, {', '.join(READERS)}")
    order = [reader] if reader != "auto" else _auto_order(path)
    failures = []
    for name in order:
        try:
            slide = READERS[name](path)
            width, height = slide.dimensions  # backends open lazily: probe now
        except Exception as exc:
            failures.append(f"{name}: {first_line(exc)}")
            continue
        if width <= 0 or height <= 0:
            slide.close()
            raise InputError(f"{path}: slide has no pixels ({width} x {height})")
        return slide
    raise InputError(f"{path}: not a slide that {' or '.join(order)} can open ({'; '.join(failures)})")


def _auto_order(path: Path) -> list[str]:
    import openslide

    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        vendor = None
    if vendor in (None, "aperio", "generic-tiff") and _is_tiff(path):
        return ["tiffslide", "openslide"]
    return ["openslide", "tiffslide"]


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a Zarr folder (what :mod:`wsistore.archive` reads)."""
    return path.is_dir() and (path / "zarr.json").is_file()


def input_kind(path: Path) -> InputKind:
    """What ``path`` is: an archive (a Zarr folder), another folder, a tile (a file with one
    of :data:`TILE_SUFFIXES`) or a slide (any other file)."""
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if is_archive(path):
        return "archive"
    if path.is_dir():
        return "folder"
    return "tile" if path.suffix.lower() in TILE_SUFFIXES else "slide"


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The tile and slide files in ``folder`` (with ``recursive``, in every folder below it too), sorted."""
    suffixes = TILE_SUFFIXES + SLIDE_SUFFIXES
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in suffixes)


def read_tile(path: Path) -> np.ndarray:
    """A tile image read whole, as ``(y, x, 3)`` uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def open_input(path: Path, reader: str = "auto") -> SlideReader:
    """Open an image file by its :func:`input_kind`: a tile read whole (an :class:`ArraySlide`
    named after the file), else a slide with :func:`open_slide`."""
    if input_kind(path) == "tile":
        return ArraySlide(read_tile(path), name=path.name)
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
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[:, :, 3:4]
        if alpha.min() == 255:
            return np.ascontiguousarray(array[:, :, :3])
        rgb = array[:, :, :3].astype(np.uint16) * alpha + 255 * (255 - alpha.astype(np.uint16))
        return ((rgb + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(array[:, :, :3])
