"""The methods a report compares, at a sweep of settings.

* **archive path**: the LR made by the archive's own downsample, coded chunk by chunk on
  the archive's grid (:mod:`wsistore.degradation`), then rebuilt by each upscaler
  (``nearest`` = the seeds' i-HR, ``bicubic``, and every SR model);
* **full-resolution codecs**: JPEG, JPEG-XL, AVIF, WebP and JPEG 2000 on the original,
  coded in 1024-pixel tiles as a tiled TIFF or archive would store them.

Bytes are the encoded chunk/tile bytes of the base image (pyramid levels and container
overhead excluded for every method alike).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from wsistore.codecs import ImageCodec, parse_codec
from wsistore.degradation import Downsample, encode_on_grid

HR_TILE = 1024

#: Default sweeps: the archive's LR codecs and the full-resolution rivals.
ARCHIVE_SWEEP = (
    "png",
    "jpegxl:distance=0.5",
    "jpegxl:distance=1.0",
    "jpegxl:distance=2.0",
    "jpegxl:distance=3.0",
    "avif:level=90,speed=8",
    "avif:level=75,speed=8",
    "avif:level=60,speed=8",
    "avif:level=45,speed=8",
)
HR_SWEEP = (
    "jpeg:level=95",
    "jpeg:level=85",
    "jpeg:level=70",
    "jpeg:level=50",
    "jpeg:level=30",
    "jpeg:level=15",
    "jpeg:level=8",
    "jpegxl:distance=1.0",
    "jpegxl:distance=2.0",
    "jpegxl:distance=4.0",
    "jpegxl:distance=8.0",
    "jpegxl:distance=15.0",
    "jpegxl:distance=25.0",
    "avif:level=60,speed=6",
    "avif:level=45,speed=6",
    "avif:level=30,speed=6",
    "avif:level=20,speed=6",
    "avif:level=12,speed=6",
    "avif:level=5,speed=6",
    "avif:level=0,speed=6",
    "webp:level=90",
    "webp:level=70",
    "webp:level=40",
    "webp:level=15",
    "webp:level=2",
    "jpeg2k:level=44",
    "jpeg2k:level=38",
    "jpeg2k:level=34",
    "jpeg2k:level=30",
    "jpeg2k:level=27",
    "jpeg2k:level=24",
    "jpeg2k:level=21",
)
QUICK_ARCHIVE_SWEEP = ("png", "jpegxl:distance=1.0", "jpegxl:distance=3.0", "avif:level=75,speed=8")
QUICK_HR_SWEEP = (
    "jpeg:level=50",
    "jpeg:level=10",
    "jpegxl:distance=4.0",
    "jpegxl:distance=20.0",
    "avif:level=30,speed=8",
    "avif:level=8,speed=8",
    "webp:level=40",
    "webp:level=2",
    "jpeg2k:level=30",
    "jpeg2k:level=24",
)


@dataclass
class CodedLR:
    """LR coded as the archive stores it."""

    codec: ImageCodec
    setting: str
    lr: np.ndarray
    nbytes: int
    encode_seconds: float


def code_archive_lr(
    hr: np.ndarray, setting: str, chunk: int, fill: int, origin: tuple[int, int] = (0, 0), scale: int = 4
) -> CodedLR:
    """Downsample and code ``hr`` exactly as ingest would (timed); ``fill`` is the
    archive's fill value, which pads edge chunks."""
    codec = parse_codec(setting)
    start = time.perf_counter()
    lr = Downsample(scale).reduce_region(hr)
    coded, nbytes = encode_on_grid(lr, codec, chunk, fill, origin)
    return CodedLR(codec, setting, coded, nbytes, time.perf_counter() - start)


@dataclass
class CodedHR:
    """The original coded by a standard codec."""

    codec: ImageCodec
    setting: str
    image: np.ndarray
    nbytes: int
    encode_seconds: float
    decode_seconds: float


def code_full_resolution(hr: np.ndarray, setting: str) -> CodedHR:
    """Code ``hr`` in :data:`HR_TILE` tiles with a standard codec (timed)."""
    codec = parse_codec(setting)
    start = time.perf_counter()
    encoded = []
    for y in range(0, hr.shape[0], HR_TILE):
        for x in range(0, hr.shape[1], HR_TILE):
            encoded.append((y, x, codec.encode_image(np.ascontiguousarray(hr[y : y + HR_TILE, x : x + HR_TILE]))))
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    out = np.empty_like(hr)
    for y, x, data in encoded:
        tile = codec.decode_image(data)
        out[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return CodedHR(codec, setting, out, sum(len(d) for *_, d in encoded), encode_s, time.perf_counter() - start)
