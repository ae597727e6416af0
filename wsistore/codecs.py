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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from wsistore.errors import InputError

#: The archive's default LR codec (its settings are the codec class's defaults), chosen by
#: measurement (benchmarks/reports/validation): AVIF-coded LR beats JPEG-XL-coded LR at
#: every matched rate, and AVIF quality 75, 4:4:4 matches the earlier JPEG-XL d=1 default's
#: fidelity for 18 % fewer bytes. Speed 8 (the default was 6) encodes twice as fast for 0.9 %
#: fewer bytes and 0.036 dB less after the default generator (benchmarks/reports/codec-speed).
#: See README "Codec choice".
DEFAULT_CODEC = "avif"

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.common import JSON


def _number(default: float, low: float, high: float) -> Any:
    """A numeric setting with its default and the inclusive range it takes."""
    return field(default=default, metadata={"range": (low, high)})


def _choice(default: Any, *others: Any) -> Any:
    """A setting that takes ``default`` or one of ``others``."""
    return field(default=default, metadata={"choices": (default, *others)})


@dataclass(frozen=True)
class ImageCodec(ArrayBytesCodec):
    """Base class: an RGB uint8 image codec usable inside zarr and on its own.

    A codec class is its settings (dataclass fields, each recorded in the archive, declared
    with :func:`_number` or :func:`_choice` when only some values are valid: those are
    checked on construction) plus class-level facts: the imagecodecs functions it calls and
    how the settings reach the encoder.
    """

    is_fixed_size = False
    short_name: ClassVar[str] = ""
    #: the setting a single quality number maps to, e.g. ``distance`` for JPEG-XL
    quality_key: ClassVar[str | None] = None
    #: imagecodecs' name for the format (``{name}_encode``, ``{name}_decode``) when not ``short_name``
    library_name: ClassVar[str] = ""
    #: keyword arguments for the decoder
    decode_options: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        """Whole floats for float settings, then every setting checked (see :meth:`_settle`)."""
        for f in fields(self):
            if f.type in ("float", float):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        self._settle()
        for f in fields(self):
            value = getattr(self, f.name)
            if "range" in f.metadata:
                _check_range(self, f.name, *f.metadata["range"])
            if "choices" in f.metadata and value not in f.metadata["choices"]:
                raise InputError(f"{self.short_name} {f.name} must be {_either(f.metadata['choices'])}, got {value}")

    def _settle(self) -> None:
        """Check or set what ranges and choices cannot say (settings implied by others)."""

    # -- codec-specific -----------------------------------------------------------
    def encode_settings(self) -> dict[str, Any]:
        """The encoder's keyword arguments: the recorded settings unless a codec says otherwise."""
        return self.config()

    def encode_image(self, image: np.ndarray) -> bytes:
        """Encode one ``(y, x, 3)`` uint8 image."""
        return bytes(self._function("encode")(image, **self.encode_settings()))

    def decode_image(self, data: bytes | np.ndarray) -> np.ndarray:
        """Decode bytes into a ``(y, x, 3)`` uint8 image."""
        decoded = self._function("decode")(data, **self.decode_options)
        if decoded.ndim == 2:
            decoded = np.repeat(decoded[:, :, None], 3, axis=2)
        return decoded[:, :, :3]

    def _function(self, kind: str) -> Callable[..., Any]:
        function: Callable[..., Any] = getattr(imagecodecs, f"{self.library_name or self.short_name}_{kind}")
        return function

    @property
    def lossless(self) -> bool:
        """Whether decoding returns the exact encoded pixels: by default, when there is no quality to set."""
        return self.quality_key is None

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
        _, config = parse_named_configuration(data, f"imagecodecs_{cls.short_name}", require_configuration=False)
        return cls(**(config or {}))

    def describe(self) -> str:
        """Short human label, e.g. ``jpegxl(distance=1.0, effort=7)``."""
        inner = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{self.short_name}({inner})"

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size codec: zarr never calls this

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        image = np.ascontiguousarray(chunk_array.as_numpy_array())
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{self.zarr_name} expects (y, x, 3) uint8 chunks, got {image.shape} {image.dtype}")
        return chunk_spec.prototype.buffer.from_bytes(self.encode_image(image))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        image = self.decode_image(chunk_bytes.as_numpy_array())
        h, w = chunk_spec.shape[:2]
        if image.shape[0] < h or image.shape[1] < w:
            # an edge chunk coded at its extent inside the array (hybrid HR chunks, format 1.8):
            # the rest, outside the array, is never read
            full = np.full((h, w, 3), chunk_spec.fill_value, dtype=np.uint8)
            full[: image.shape[0], : image.shape[1]] = image
            image = full
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


@dataclass(frozen=True)
class PngCodec(ImageCodec):
    """Lossless PNG (zlib level 6 by default)."""

    short_name = "png"
    level: int = _number(6, 0, 9)


@dataclass(frozen=True)
class JpegXlCodec(ImageCodec):
    """JPEG-XL; ``distance`` is the Butteraugli distance (1.0 ~ visually lossless)."""

    short_name = "jpegxl"
    quality_key = "distance"
    distance: float = 1.0
    effort: int = _number(7, 1, 10)
    lossless: bool = False  # a recorded field here
    decodingspeed: int = _number(0, 0, 4)

    def _settle(self) -> None:
        if self.lossless:
            object.__setattr__(self, "distance", 0.0)
        elif not 0.0 < self.distance <= 25.0:
            raise InputError(f"jpegxl distance must be in (0, 25], got {self.distance}")

    def encode_settings(self) -> dict[str, Any]:
        return {"lossless": True, "effort": self.effort} if self.lossless else self.config()


@dataclass(frozen=True)
class AvifCodec(ImageCodec):
    """AVIF through libavif + libaom; ``level`` is quality 0-100, ``speed`` 0-10."""

    short_name = "avif"
    quality_key = "level"
    decode_options = {"numthreads": 1}
    level: int = _number(75, 0, 100)
    speed: int = _number(8, 0, 10)
    pixelformat: str = _choice("YUV444", "YUV422", "YUV420")
    bitspersample: int = _choice(8)
    codec: str = _choice("AOM")

    @property
    def lossless(self) -> bool:
        return self.level == 100 and self.pixelformat == "YUV444"

    def encode_settings(self) -> dict[str, Any]:
        pixelformat, codec = imagecodecs.AVIF.PIXEL_FORMAT[self.pixelformat], imagecodecs.AVIF.CODEC_CHOICE[self.codec]
        return {**self.config(), "pixelformat": pixelformat, "codec": codec, "numthreads": 1}


@dataclass(frozen=True)
class WebpCodec(ImageCodec):
    """WebP; ``level`` is quality 0-100, ``method`` the effort 0-6."""

    short_name = "webp"
    quality_key = "level"
    level: float = _number(90.0, 0, 100)
    lossless: bool = False
    method: int = _number(4, 0, 6)


@dataclass(frozen=True)
class JpegCodec(ImageCodec):
    """Baseline JPEG through libjpeg-turbo; ``level`` is quality 1-100."""

    short_name = "jpeg"
    library_name = "jpeg8"
    quality_key = "level"
    level: int = _number(90, 1, 100)
    subsampling: str = _choice("444", "422", "420")
    optimize: bool = True


@dataclass(frozen=True)
class Jpeg2kCodec(ImageCodec):
    """JPEG 2000 through OpenJPEG; ``level`` is the target PSNR in dB (0 = lossless)."""

    short_name = "jpeg2k"
    quality_key = "level"
    level: int = _number(40, 0, 100)
    reversible: bool = False
    codecformat: str = _choice("J2K", "JP2")

    def _settle(self) -> None:
        if self.level == 0:
            object.__setattr__(self, "reversible", True)

    @property
    def lossless(self) -> bool:
        return self.reversible and self.level == 0

    def encode_settings(self) -> dict[str, Any]:
        codecformat = imagecodecs.JPEG2K.CODEC[self.codecformat]
        return {**self.config(), "codecformat": codecformat, "numthreads": 1}


def _either(values: tuple[Any, ...]) -> str:
    """``a, b or c``."""
    spelled = [str(v) for v in values]
    return spelled[0] if len(spelled) == 1 else f"{', '.join(spelled[:-1])} or {spelled[-1]}"


def _check_range(codec: ImageCodec, key: str, low: float, high: float) -> None:
    value = getattr(codec, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError(f"{codec.short_name} {key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{codec.short_name} {key} must be in [{low}, {high}], got {value}")


#: Explicit registry: short name -> codec class.
CODECS: dict[str, type[ImageCodec]] = {
    cls.short_name: cls for cls in (PngCodec, JpegXlCodec, AvifCodec, WebpCodec, JpegCodec, Jpeg2kCodec)
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
            raise InputError(f"codec {name} is lossless and takes no quality")
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
    if "quality" in settings:  # the generic knob by its generic name: the codec's own quality setting
        if quality is not None:
            raise InputError(f"{text}: the quality is given twice (in the codec text and as --quality)")
        quality = settings.pop("quality")
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
