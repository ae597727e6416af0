"""Images that are not pyramids: arrays in memory (:class:`ArraySlide`), plain image files
decoded whole by PIL (:class:`PlainImageReader`: PNG, JPEG, BMP, or a TIFF that is no slide),
and the same files decoded by imagecodecs (:class:`ImageCodecsReader`), the second decoder
that ``verify --against`` compares with.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from wsistore.errors import InputError, first_line
from wsistore.readers.base import SingleLevelReader, to_rgb
from wsistore.readers.tiff import is_tiff


class ArraySlide(SingleLevelReader):
    """An in-memory RGB image seen as a one-level slide (tiles, crops, tests)."""

    name = "array"

    def __init__(self, image: np.ndarray, name: str = "array", mpp: float | None = None) -> None:
        super().__init__(Path(name))
        self._image = to_rgb(np.asarray(image))
        self._mpp = mpp

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((self._image.shape[1], self._image.shape[0]),)

    @cached_property
    def properties(self) -> Mapping[str, str]:
        if self._mpp is None:
            return {}
        return {"openslide.mpp-x": str(self._mpp), "openslide.mpp-y": str(self._mpp), "openslide.vendor": "array"}

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


def read_tile(path: Path) -> np.ndarray:
    """A tile image read whole, as ``(y, x, 3)`` uint8 RGB."""
    return read_image(path)[0]


class ImageCodecsReader(ArraySlide):
    """A plain image file decoded whole by imagecodecs (libpng, libjpeg-turbo, libtiff ...), not
    PIL: the independent decoder of what :class:`PlainImageReader` reads."""

    name = "imagecodecs"

    def __init__(self, path: Path) -> None:
        import imagecodecs

        try:
            image = imagecodecs.imread(path)
        except Exception as exc:
            raise InputError(f"{path}: imagecodecs cannot decode it ({first_line(exc)})") from None
        super().__init__(np.asarray(image), name=path.name)
        self.path = path


#: The most pixels a plain image may have: it is decoded whole (3 bytes a pixel, ~0.8 GB).
PLAIN_IMAGE_MAX_PIXELS = 2**28
#: PIL formats that are plain images (a TIFF is one only when no slide reader opens it).
PLAIN_FORMATS = ("PNG", "JPEG", "BMP")


def image_format(path: Path) -> str | None:
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
        if not is_tiff(path):
            raise InputError(f"{path}: not a readable image ({error})") from None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            height, width = page.shape[:2]
            photometric = getattr(page.photometric, "name", page.photometric)
            _check_plain(path, width, height, f"{page.dtype} {photometric} x{page.samplesperpixel}")
            return to_rgb(page.asarray()), "TIFF"
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
