"""The slide reader interface, in OpenSlide's vocabulary, and what every reader shares: the
conversion to RGB, the mpp rule, and holding back the backends' log lines.

Readers answer with ``dimensions``, ``level_dimensions``, ``read_region(location, level, size)``
and properties named ``openslide.*``, return numpy RGB arrays, and raise
:class:`~wsistore.errors.InputError` with one line that names the file when it cannot be read.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from xml.etree import ElementTree

import numpy as np

from wsistore.checksums import sha256_files
from wsistore.errors import InputError, first_line, held_back

#: TIFF ResolutionUnit spellings (openslide and tiffslide differ) -> micrometres per unit.
_UM_PER_UNIT = {"centimeter": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}
_UM_PER_OME_UNIT = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}


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
        width = positive_float(self.properties.get("openslide.level[0].tile-width"))
        height = positive_float(self.properties.get("openslide.level[0].tile-height"))
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
        return positive_float(self.properties.get("openslide.objective-power"))

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
        return to_rgb(region)

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


class SingleLevelReader(SlideReader):
    """A slide of one level, with no associated images, ICC profile or vendor properties unless a
    subclass says otherwise (arrays, plain images, a DICOM's frames placed by hand)."""

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return (1.0,)

    @property
    def properties(self) -> Mapping[str, str]:
        return {}

    @property
    def icc_profile(self) -> bytes | None:
        return None

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return ()

    def associated_image(self, name: str) -> np.ndarray:
        raise KeyError(name)


def decoded(path: Path, name: str, read: Callable[[], Any]) -> np.ndarray:
    """The associated image ``name`` that ``read`` decodes, as RGB; a decoding error is one line."""
    try:
        with quiet():
            image = np.asarray(read())
    except Exception as exc:  # backends raise many types for corrupt data
        raise InputError(
            f"{path.name}: cannot decode the {name} image ({type(exc).__name__}: {first_line(exc)}); "
            "the file may be truncated or corrupt"
        ) from exc
    return to_rgb(image)


def clean_error(error: BaseException | str) -> str:
    """tifffile's message without its ``<tifffile.TiffPage @123>`` object names."""
    text = first_line(error) if isinstance(error, BaseException) else error.strip().splitlines()[0]
    text = re.sub(r"<[^<>]*>\s*", "", text).strip(" :")
    return text or (type(error).__name__ if isinstance(error, BaseException) else "unreadable")


#: The loggers of the libraries the readers call: their lines are held back (errors are one line).
_LOGGERS = ("tifffile", "pydicom", "wsidicom")


def quiet(errors: list[str] | None = None) -> contextlib.AbstractContextManager[None]:
    """The backends' log lines and warnings held back (errors are one line); with ``errors``,
    their error messages are collected there."""
    return held_back(_LOGGERS, errors, clean_error)


def resolve_mpp(props: Mapping[str, str]) -> tuple[tuple[float, float] | None, str | None]:
    """Microns per pixel and where they came from, or ``(None, None)``.

    Order: a vendor's own metadata, OME-XML physical sizes, TIFF resolution tags with
    a real unit, then whatever the backend derived. Never the objective power.
    """
    x, y = positive_float(props.get("openslide.mpp-x")), positive_float(props.get("openslide.mpp-y"))
    vendor = props.get("openslide.vendor")
    if x and y and vendor not in (None, "generic-tiff"):
        return (x, y), f"vendor metadata ({vendor})"
    series = int(positive_float(props.get("openslide.series-index")) or 0)
    ome = _ome_mpp(str(props.get("tiff.ImageDescription", "")), series)
    if ome:
        return ome, "OME-XML PhysicalSizeX/Y"
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    um = _UM_PER_UNIT.get(unit)
    xres, yres = positive_float(props.get("tiff.XResolution")), positive_float(props.get("tiff.YResolution"))
    if um and xres and yres:
        return (um / xres, um / yres), f"TIFF resolution tags ({unit})"
    if x and y:
        return (x, y), "reader (openslide.mpp-x/y)"
    return None, None


def _ome_mpp(description: str, image: int = 0) -> tuple[float, float] | None:
    """Physical pixel size of OME-XML's ``image``-th image (the slide's series) in an
    ImageDescription, in micrometres."""
    if "<OME" not in description[:2000]:
        return None
    try:
        root = ElementTree.fromstring(description)
    except ElementTree.ParseError:
        return None
    pixels = [e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"]
    if image >= len(pixels):
        return None
    sizes = []
    for axis in ("X", "Y"):
        size = positive_float(pixels[image].get(f"PhysicalSize{axis}"))
        factor = _UM_PER_OME_UNIT.get(pixels[image].get(f"PhysicalSize{axis}Unit", "µm"))
        if size is None or factor is None:
            return None
        sizes.append(size * factor)
    return sizes[0], sizes[1]


def positive_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if np.isfinite(result) and result > 0 else None


def to_rgb(array: np.ndarray) -> np.ndarray:
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


def read_within(
    read: Callable[[tuple[int, int], tuple[int, int]], np.ndarray],
    location: tuple[int, int],
    size: tuple[int, int],
    dimensions: tuple[int, int],
) -> np.ndarray:
    """``size = (w, h)`` pixels at ``location`` of an image of ``dimensions``, ``read`` called for
    the part inside it; past its border white, as OpenSlide's transparent is."""
    (x, y), (w, h), (width, height) = location, size, dimensions
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if (x0, y0, x1, y1) == (x, y, x + w, y + h):
        return read((x, y), size)
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    if x0 < x1 and y0 < y1:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = to_rgb(read((x0, y0), (x1 - x0, y1 - y0)))
    return out
