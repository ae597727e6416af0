"""Image codecs for the archive: zarr v3 ArrayBytesCodecs over imagecodecs.

Each codec is a frozen dataclass named and configured like the zarr v3 codecs of
newer imagecodecs releases (``imagecodecs_jpegxl`` with ``distance``/``effort``...),
so an archive written here stays readable by stock zarr + imagecodecs later.
Every setting that changes the encoded bytes is pinned and written to the array
metadata; nothing is left to a library default that could change between releases.

A chunk reaches these codecs as an RGB image ``(y, x, 3)`` uint8: arrays are stored
``(c, y, x)`` as OME-NGFF requires, and a standard ``transpose`` codec in front of the
image codec turns each chunk into ``(y, x, c)``.

The same classes serve the benchmarks, which code full-resolution images directly
with :meth:`ImageCodec.encode_image` / :meth:`ImageCodec.decode_image`.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from wsistore.errors import InputError

#: The archive's default LR codec (its settings are the codec class's defaults), chosen by
#: measurement (benchmarks/reports/validation): AVIF-coded LR beats JPEG-XL-coded LR at
#: every matched rate, and AVIF quality 75, speed 6, 4:4:4 matches the earlier JPEG-XL
#: d=1 default's fidelity for 18 % fewer bytes. See README "Codec choice".
DEFAULT_CODEC = "avif"

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.common import JSON


@dataclass(frozen=True)
class ImageCodec(ArrayBytesCodec):
    """Base class: an RGB uint8 image codec usable inside zarr and on its own."""

    is_fixed_size = False
    short_name: ClassVar[str] = ""
    #: the setting ``--quality`` maps to, e.g. ``distance`` for JPEG-XL
    quality_key: ClassVar[str | None] = None

    # -- codec-specific -----------------------------------------------------------
    def encode_image(self, image: np.ndarray) -> bytes:
        """Encode one ``(y, x, 3)`` uint8 image."""
        raise NotImplementedError  # abstract

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        """Decode bytes into a ``(y, x, 3)`` uint8 image."""
        raise NotImplementedError  # abstract

    @property
    def lossless(self) -> bool:
        """Whether decoding returns the exact encoded pixels."""
        raise NotImplementedError  # abstract

    # -- zarr glue ---------------------------------------------------------------------
    @property
    def zarr_name(self) -> str:
        return f"imagecodecs_{self.short_name}"

    def config(self) -> dict[str, Any]:
        """Every encoder setting, as recorded in the archive."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, JSON]:
        return {"name": self.zarr_name, "configuration": self.config()}

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, config = parse_named_configuration(
            data, f"imagecodecs_{cls.short_name}", require_configuration=False
        )
        return cls(**(config or {}))  # type: ignore[arg-type]

    def describe(self) -> str:
        """Short human label, e.g. ``jpegxl(distance=1.0, effort=7)``."""
        inner = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{self.short_name}({inner})"

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size codec: zarr never calls this

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        image = np.ascontiguousarray(chunk_array.as_numpy_array())
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"{self.zarr_name} expects (y, x, 3) uint8 chunks, got {image.shape} {image.dtype}"
            )
        return chunk_spec.prototype.buffer.from_bytes(self.encode_image(image))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        image = self.decode_image(chunk_bytes.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


def _as_rgb(decoded: np.ndarray) -> np.ndarray:
    if decoded.ndim == 2:
        decoded = np.repeat(decoded[:, :, None], 3, axis=2)
    return decoded[:, :, :3]


@dataclass(frozen=True)
class PngCodec(ImageCodec):
    """Lossless PNG (zlib level 6 by default)."""

    short_name: ClassVar[str] = "png"
    level: int = 6

    def __post_init__(self) -> None:
        _check_range(self, "level", 0, 9)

    @property
    def lossless(self) -> bool:
        return True

    def encode_image(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.png_encode(image, level=self.level))

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        return _as_rgb(imagecodecs.png_decode(data))


@dataclass(frozen=True)
class JpegXlCodec(ImageCodec):
    """JPEG-XL; ``distance`` is the Butteraugli distance (1.0 ~ visually lossless)."""

    short_name: ClassVar[str] = "jpegxl"
    quality_key: ClassVar[str | None] = "distance"
    distance: float = 1.0
    effort: int = 7
    lossless: bool = False  # type: ignore[assignment]  # a recorded field here
    decodingspeed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "distance", float(self.distance))
        if self.lossless:
            object.__setattr__(self, "distance", 0.0)
        elif not 0.0 < self.distance <= 25.0:
            raise InputError(f"jpegxl distance must be in (0, 25], got {self.distance}")
        _check_range(self, "effort", 1, 10)
        _check_range(self, "decodingspeed", 0, 4)

    def encode_image(self, image: np.ndarray) -> bytes:
        if self.lossless:
            return bytes(imagecodecs.jpegxl_encode(image, lossless=True, effort=self.effort))
        return bytes(
            imagecodecs.jpegxl_encode(
                image,
                lossless=False,
                distance=self.distance,
                effort=self.effort,
                decodingspeed=self.decodingspeed,
            )
        )

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        return _as_rgb(imagecodecs.jpegxl_decode(data))


@dataclass(frozen=True)
class AvifCodec(ImageCodec):
    """AVIF through libavif + libaom; ``level`` is quality 0-100, ``speed`` 0-10."""

    short_name: ClassVar[str] = "avif"
    quality_key: ClassVar[str | None] = "level"
    level: int = 75
    speed: int = 6
    pixelformat: str = "YUV444"
    bitspersample: int = 8
    codec: str = "AOM"

    def __post_init__(self) -> None:
        _check_range(self, "level", 0, 100)
        _check_range(self, "speed", 0, 10)
        if self.pixelformat not in ("YUV444", "YUV422", "YUV420"):
            raise InputError(f"avif pixelformat must be YUV444, YUV422 or YUV420, got {self.pixelformat}")
        if self.bitspersample != 8 or self.codec != "AOM":
            raise InputError("avif: only 8-bit samples with the AOM encoder are supported")

    @property
    def lossless(self) -> bool:
        return self.level == 100 and self.pixelformat == "YUV444"

    def encode_image(self, image: np.ndarray) -> bytes:
        return bytes(
            imagecodecs.avif_encode(
                image,
                level=self.level,
                speed=self.speed,
                pixelformat=imagecodecs.AVIF.PIXEL_FORMAT[self.pixelformat],
                bitspersample=self.bitspersample,
                codec=imagecodecs.AVIF.CODEC_CHOICE[self.codec],
                numthreads=1,
            )
        )

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        return _as_rgb(imagecodecs.avif_decode(data, numthreads=1))


@dataclass(frozen=True)
class WebpCodec(ImageCodec):
    """WebP; ``level`` is quality 0-100, ``method`` the effort 0-6."""

    short_name: ClassVar[str] = "webp"
    quality_key: ClassVar[str | None] = "level"
    level: float = 90.0
    lossless: bool = False  # type: ignore[assignment]
    method: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", float(self.level))
        _check_range(self, "level", 0, 100)
        _check_range(self, "method", 0, 6)

    def encode_image(self, image: np.ndarray) -> bytes:
        return bytes(
            imagecodecs.webp_encode(image, level=self.level, lossless=self.lossless, method=self.method)
        )

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        return _as_rgb(imagecodecs.webp_decode(data))


@dataclass(frozen=True)
class JpegCodec(ImageCodec):
    """Baseline JPEG through libjpeg-turbo; ``level`` is quality 1-100."""

    short_name: ClassVar[str] = "jpeg"
    quality_key: ClassVar[str | None] = "level"
    level: int = 90
    subsampling: str = "444"
    optimize: bool = True

    def __post_init__(self) -> None:
        _check_range(self, "level", 1, 100)
        if self.subsampling not in ("444", "422", "420"):
            raise InputError(f"jpeg subsampling must be 444, 422 or 420, got {self.subsampling}")

    @property
    def lossless(self) -> bool:
        return False

    def encode_image(self, image: np.ndarray) -> bytes:
        return bytes(
            imagecodecs.jpeg8_encode(
                image, level=self.level, subsampling=self.subsampling, optimize=self.optimize
            )
        )

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        return _as_rgb(imagecodecs.jpeg8_decode(data))


@dataclass(frozen=True)
class Jpeg2kCodec(ImageCodec):
    """JPEG 2000 through OpenJPEG; ``level`` is the target PSNR in dB (0 = lossless)."""

    short_name: ClassVar[str] = "jpeg2k"
    quality_key: ClassVar[str | None] = "level"
    level: int = 40
    reversible: bool = False
    codecformat: str = "J2K"

    def __post_init__(self) -> None:
        _check_range(self, "level", 0, 100)
        if self.level == 0:
            object.__setattr__(self, "reversible", True)
        if self.codecformat not in ("J2K", "JP2"):
            raise InputError(f"jpeg2k codecformat must be J2K or JP2, got {self.codecformat}")

    @property
    def lossless(self) -> bool:
        return self.reversible and self.level == 0

    def encode_image(self, image: np.ndarray) -> bytes:
        return bytes(
            imagecodecs.jpeg2k_encode(
                image,
                level=self.level,
                reversible=self.reversible,
                codecformat=imagecodecs.JPEG2K.CODEC[self.codecformat],
                numthreads=1,
            )
        )

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        return _as_rgb(imagecodecs.jpeg2k_decode(data))


def _check_range(codec: ImageCodec, key: str, low: float, high: float) -> None:
    value = getattr(codec, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError(f"{codec.short_name} {key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{codec.short_name} {key} must be in [{low}, {high}], got {value}")


#: Explicit registry: short name -> codec class.
CODECS: dict[str, type[ImageCodec]] = {
    cls.short_name: cls
    for cls in (PngCodec, JpegXlCodec, AvifCodec, WebpCodec, JpegCodec, Jpeg2kCodec)
}

def make_codec(name: str = DEFAULT_CODEC, quality: float | None = None, **settings: Any) -> ImageCodec:
    """Build a codec from its short name, an optional quality and explicit settings.

    ``quality`` maps to the codec's own knob: JPEG-XL distance (lower is better),
    AVIF/WebP/JPEG quality 0-100 (higher is better), JPEG 2000 target PSNR.
    """
    try:
        cls = CODECS[name]
    except KeyError:
        raise InputError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}") from None
    if quality is not None:
        if cls.quality_key is None:
            raise InputError(f"codec {name} is lossless and takes no --quality")
        settings[cls.quality_key] = quality
    types = {f.name: f.type for f in fields(cls)}
    unknown = set(settings) - set(types)
    if unknown:
        raise InputError(f"codec {name} has no setting {', '.join(sorted(unknown))}; known: {', '.join(sorted(types))}")
    for key, value in settings.items():
        if types[key] in ("int", int) and isinstance(value, float):
            if not value.is_integer():
                raise InputError(f"codec {name} {key} must be a whole number, got {value}")
            settings[key] = int(value)
    try:
        return cls(**settings)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid {name} settings {settings}: {exc}") from None


def parse_codec(text: str, quality: float | None = None) -> ImageCodec:
    """Parse ``NAME`` or ``NAME:key=value,key=value`` as given on the command line."""
    name, _, rest = text.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"codec setting {item!r} is not key=value")
        settings[key.strip()] = _parse_value(value.strip())
    return make_codec(name.strip(), quality, **settings)


def codec_from_config(config: dict[str, Any]) -> ImageCodec:
    """Rebuild a codec from its recorded ``{"name": ..., "configuration": ...}``."""
    name = str(config.get("name", ""))
    short = name.removeprefix("imagecodecs_")
    if short not in CODECS:
        raise InputError(f"archive uses codec {name!r}, which this wsistore cannot decode")
    return CODECS[short](**config.get("configuration", {}))


def _parse_value(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def register_codecs() -> None:
    """Register the codecs with zarr (the ``zarr.codecs`` entry points do the same when
    the package is installed; calling this is harmless and covers source checkouts)."""
    from zarr.registry import register_codec

    for cls in CODECS.values():
        register_codec(f"imagecodecs_{cls.short_name}", cls)
