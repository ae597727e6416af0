"""The methods a report compares, at a sweep of settings.

* **archive path**: the LR made by the archive's own downsample, coded chunk by chunk on
  the archive's grid (:mod:`wsistore.degradation`), then rebuilt by each upscaler
  (``nearest`` = the seeds' i-HR, ``bicubic``, and every SR model);
* **full-resolution codecs**: JPEG, JPEG-XL, AVIF, WebP and JPEG 2000 on the original,
  coded in 1024-pixel tiles as a tiled TIFF or archive would store them;
* **hybrid archive** (format 1.8): the archive path restored as restore does, each level-0
  chunk by the better of the generator and bicubic (the archive's restorer choice), and each
  chunk whose HR chunk at one of the HR settings costs less at the record's lambda
  (:mod:`wsistore.archive.hybrid_choice`, as ingest decides) pasted over it, HR chunks coded as
  ingest codes them (:func:`wsistore.archive.hybrid_choice.code_hr_chunk`), and their LR chunks' bytes
  not counted (the archive does not store them).

Bytes are the encoded chunk/tile bytes of the base image (pyramid levels and container
overhead excluded for every method alike).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from wsistore.archive.hybrid_choice import (
    SR,
    Option,
    code_hr_chunk,
    first_option,
    quality,
    settle,
    sse,
    walk,
)
from wsistore.archive.writer import DEFAULT_HR_CODECS, DEFAULT_HR_LAMBDA
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

#: The hybrid archive's lambdas (ingest's default in the middle) and HR codecs.
HYBRID_LAMBDAS = (DEFAULT_HR_LAMBDA / 3, DEFAULT_HR_LAMBDA, 3 * DEFAULT_HR_LAMBDA)
QUICK_HYBRID_LAMBDAS = (DEFAULT_HR_LAMBDA,)
HYBRID_HR_SWEEP = DEFAULT_HR_CODECS


@dataclass
class CodedLR:
    """LR coded as the archive stores it."""

    codec: ImageCodec
    setting: str
    lr: np.ndarray
    nbytes: int
    encode_seconds: float
    #: each LR chunk's bytes (crc32c not included) by the ``(y, x)`` of its first pixel in ``lr``
    chunk_bytes: dict[tuple[int, int], int]


def code_archive_lr(
    hr: np.ndarray, setting: str, chunk: int, fill: int, origin: tuple[int, int] = (0, 0), scale: int = 4
) -> CodedLR:
    """Downsample and code ``hr`` exactly as ingest would (timed); ``fill`` is the
    archive's fill value, which pads edge chunks."""
    codec = parse_codec(setting)
    start = time.perf_counter()
    lr = Downsample(scale).reduce_region(hr)
    coded, sizes = encode_on_grid(lr, codec, chunk, fill, origin)
    return CodedLR(codec, setting, coded, sum(sizes.values()), time.perf_counter() - start, sizes)


@dataclass
class CodedHR:
    """The original coded by a standard codec."""

    codec: ImageCodec
    setting: str
    image: np.ndarray
    nbytes: int
    encode_seconds: float
    decode_seconds: float


def code_full_resolution(hr: np.ndarray, setting: str, origin: tuple[int, int] = (0, 0)) -> CodedHR:
    """Code ``hr`` with a standard codec in :data:`HR_TILE` tiles on the archive's level-0 grid
    (``hr`` at ``origin = (y, x)`` on it: the tiles are the hybrid archive's HR chunks, each cut
    to ``hr``, so that both are compared on the same blocks), timed."""
    codec = parse_codec(setting)
    start = time.perf_counter()
    encoded = []
    oy, ox = origin
    for y in range(-(oy % HR_TILE), hr.shape[0], HR_TILE):
        for x in range(-(ox % HR_TILE), hr.shape[1], HR_TILE):
            y0, x0 = max(y, 0), max(x, 0)
            tile = np.ascontiguousarray(hr[y0 : y + HR_TILE, x0 : x + HR_TILE])
            encoded.append((y0, x0, codec.encode_image(tile)))
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    out = np.empty_like(hr)
    for y, x, data in encoded:
        tile = codec.decode_image(data)
        out[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return CodedHR(codec, setting, out, sum(len(d) for *_, d in encoded), encode_s, time.perf_counter() - start)


@dataclass(frozen=True)
class HrChunk:
    """One level-0 chunk of a hybrid archive coded at full resolution."""

    decoded: np.ndarray
    nbytes: int  # as stored, crc32c included
    sse: int  # of ``decoded`` against the original


class HrChunks:
    """The original's chunks on a hybrid archive's level-0 grid (``side`` HR pixels, the
    original at ``origin = (y, x)`` on it), each cut to the original (the region is the image:
    a chunk it cuts is coded at its extent, as ingest codes an edge chunk), probed and coded at
    an HR setting as ingest probes and codes it, when a decision first asks (each once, timed:
    several decisions over one original share them)."""

    def __init__(self, hr: np.ndarray, side: int, origin: tuple[int, int] = (0, 0)) -> None:
        self.hr = hr
        height, width = hr.shape[:2]
        oy, ox = origin
        self.boxes = [
            (max(y0, 0), max(x0, 0), min(y0 + side, height), min(x0 + side, width))
            for y0 in range(-(oy % side), height, side)
            for x0 in range(-(ox % side), width, side)
        ]
        self._first: dict[tuple[int, str], tuple[Option, float]] = {}
        self._coded: dict[tuple[int, str], tuple[HrChunk, float]] = {}

    def source(self, i: int) -> np.ndarray:
        """Chunk ``i``'s pixels of the original."""
        y0, x0, y1, x1 = self.boxes[i]
        return self.hr[y0:y1, x0:x1]

    def first(self, i: int, setting: str) -> Option:
        """Chunk ``i``'s option at ``setting`` as a decision first weighs it
        (:func:`~wsistore.archive.hybrid_choice.first_option`: its probe's prediction)."""
        if (i, setting) not in self._first:
            start = time.perf_counter()
            option = first_option(self.source(i), setting, parse_codec(setting))
            self._first[i, setting] = option, time.perf_counter() - start
        return self._first[i, setting][0]

    def coded(self, i: int, setting: str) -> HrChunk:
        """Chunk ``i`` coded at ``setting`` as hybrid ingest stores it."""
        if (i, setting) not in self._coded:
            start = time.perf_counter()
            decoded, stored = code_hr_chunk(self.source(i), parse_codec(setting))
            chunk = HrChunk(decoded, len(stored), sse(decoded, self.source(i)))
            self._coded[i, setting] = chunk, time.perf_counter() - start
        return self._coded[i, setting][0]

    def seconds(self, used: set[tuple[int, str]]) -> float:
        """The time the probes and codings ``used`` (chunk, setting) took."""
        return sum(self._first.get(key, (None, 0.0))[1] + self._coded.get(key, (None, 0.0))[1] for key in used)


@dataclass
class HybridImage:
    """The SR path with the chunks the rule keeps at full resolution pasted over it."""

    image: np.ndarray
    hr_bytes: int
    hr_chunks: int
    #: SR chunks restored by the generator (the others by bicubic): none, and an adaptation is not stored
    generator_chunks: int
    #: the probes and codings the decision weighed, as ingest would run them
    encode_seconds: float


def choose_hybrid(
    hr: np.ndarray,
    sr: np.ndarray,
    chunks: HrChunks,
    settings: Sequence[str],
    lr_bytes: dict[tuple[int, int], int],
    lam: float,
    scale: int = 4,
    bicubic: np.ndarray | None = None,
) -> HybridImage:
    """Per chunk of ``chunks``, the hybrid decision (:func:`wsistore.archive.hybrid_choice.settle`,
    as ingest settles it: each HR setting first weighed by its probe, and coded where chosen)
    among the SR path and the chunk at each HR setting of ``settings``, against the original
    ``hr``, at ``lam``: the SR path is ``sr`` (the generator's output of the archive's LR, whose
    chunks' bytes are ``lr_bytes``, :attr:`CodedLR.chunk_bytes`) or, where it is closer,
    ``bicubic`` of the same LR (the restorer choice, format 1.7); ``hr_bytes`` is the HR chunks'
    bytes less the LR chunks they replace (format 1.6 does not store those)."""
    image, nbytes, count, generator = sr.copy(), 0, 0, 0
    ladder = sorted(((setting, quality(parse_codec(setting))) for setting in settings), key=lambda rung: rung[1])
    used: set[tuple[int, str]] = set()
    options: dict[int, list[Option]] = {}
    by_generator: dict[int, bool] = {}

    def first(i: int, setting: str) -> Option:
        used.add((i, setting))
        return chunks.first(i, setting)

    for i, (y0, x0, y1, x1) in enumerate(chunks.boxes):
        area, truth = (slice(y0, y1), slice(x0, x1)), hr[y0:y1, x0:x1]
        sse_sr, by_generator[i] = sse(sr[area], truth), True
        if bicubic is not None and sse(bicubic[area], truth) < sse_sr:
            image[area], sse_sr, by_generator[i] = bicubic[area], sse(bicubic[area], truth), False
        lr = lr_bytes.get((y0 // scale, x0 // scale), 0)
        hr_options = walk(ladder, partial(first, i), lam)  # the settings ingest would weigh
        options[i] = [Option(SR, sse_sr, lr + 4 if lr else 0), *hr_options]  # the LR's crc32c too

    def measure(pending: dict[int, Option]) -> dict[int, Option]:
        found = {}
        for i, option in pending.items():
            used.add((i, option.path))
            chunk = chunks.coded(i, option.path)
            found[i] = Option(option.path, chunk.sse, chunk.nbytes)
        return found

    _, chosen = settle(options, lambda _: (lam,), measure)
    for i, option in chosen.items():
        y0, x0, y1, x1 = chunks.boxes[i]
        if option.path != SR:
            image[y0:y1, x0:x1] = chunks.coded(i, option.path).decoded
            lr = lr_bytes.get((y0 // scale, x0 // scale), 0)
            nbytes, count = nbytes + option.nbytes - lr, count + 1
        else:
            generator += by_generator[i]
    return HybridImage(image, nbytes, count, generator, chunks.seconds(used))
