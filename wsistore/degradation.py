"""The one definition of what the archive does to an image: downsample, then code.

Ingest, verify, restore, training-pair preparation and the reports all call this module,
so the generator learns to undo exactly what the archive did.

Downsample (format 1), for an integer factor ``s`` (4 by default):

* kernel: Keys cubic convolution with ``a = -0.5``, stretched by ``s`` (antialiased,
  as PIL's and torch's antialiased bicubic), ``4 s`` taps. Output pixel ``i`` covers
  source pixels ``[s i, s i + s)``; tap ``k`` reads source pixel ``s i - 3s/2 + k``
  (``s i - 6 + k`` for ``s = 4``) with weight ``cubic((k - 2s + 0.5) / s)``, normalised
  to sum to one;
* borders: half-sample symmetric extension (``numpy.pad(mode="symmetric")``, repeated
  as far as needed) on all four sides. A width or height that is not a multiple of ``s``
  is read as if extended the same way: the low-resolution size is ``ceil(size / s)`` and
  restore crops back;
* arithmetic: float32, separable (along y first, then along x), taps accumulated in
  order;
* rounding: half up (``floor(v + 0.5)``), clipped to [0, 255].

Every output pixel depends on a fixed window of ``4 s x 4 s`` source pixels with fixed
weights and a fixed order of operations, so a tiled downsample equals the whole-image one
bit for bit whenever each tile is read with :attr:`Downsample.halo` pixels of context
(:meth:`Downsample.hr_window`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from scipy import sparse

from wsistore.codecs import ImageCodec
from wsistore.geometry import Box
from wsistore.readers import ArraySlide
from wsistore.tissue import detect_tissue

#: Recorded in every archive; bump when any of the rules above changes.
DOWNSAMPLE_VERSION = 1
CUBIC_A = -0.5


@dataclass(frozen=True)
class Downsample:
    """The antialiased cubic downsample by an integer ``scale``."""

    scale: int = 4

    def __post_init__(self) -> None:
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {self.scale}")

    @property
    def taps(self) -> int:
        return 4 * self.scale

    @property
    def halo(self) -> int:
        """Source pixels of context needed on each side of a tile."""
        return (self.taps - self.scale) // 2

    def weights(self) -> np.ndarray:
        """The ``4 s`` normalised tap weights, float32."""
        s = self.scale
        offsets = (np.arange(self.taps) - 2 * s + 0.5) / s
        w = np.array([_keys_cubic(x) for x in offsets], dtype=np.float64)
        return (w / w.sum()).astype(np.float32)

    def lr_size(self, width: int, height: int) -> tuple[int, int]:
        """Low-resolution ``(width, height)`` of a ``width x height`` source."""
        return math.ceil(width / self.scale), math.ceil(height / self.scale)

    def hr_window(self, lr_x0: int, lr_y0: int, lr_x1: int, lr_y1: int) -> Box:
        """Source window ``(x0, y0, x1, y1)`` (may extend past the image) for an LR box."""
        s, h = self.scale, self.halo
        return s * lr_x0 - h, s * lr_y0 - h, s * lr_x1 + h, s * lr_y1 + h

    def describe(self) -> dict[str, Any]:
        """The definition as recorded in archive metadata."""
        return {
            "version": DOWNSAMPLE_VERSION,
            "scale": self.scale,
            "kernel": f"keys-cubic(a={CUBIC_A}) stretched by scale (antialiased), {self.taps} taps",
            "tap_weights": [float(w) for w in self.weights()],
            "phase": "LR pixel i covers source [s*i, s*i+s); tap k reads source s*i - halo + k",
            "halo": self.halo,
            "border": "half-sample symmetric extension (numpy.pad mode=symmetric), all sides",
            "size_rule": "LR size = ceil(source size / scale); restore crops to the source size",
            "arithmetic": "float32, along y then along x, taps accumulated in order",
            "rounding": "floor(v + 0.5) clipped to [0, 255]",
        }

    def reduce_window(self, window: np.ndarray) -> np.ndarray:
        """Downsample a ``(y, x, c)`` uint8 window that already includes the halo.

        The window must be ``s * n + 2 * halo`` pixels along each axis; the result is
        ``n`` pixels along each axis, uint8.
        """
        s, h = self.scale, self.halo
        ny, nx = (window.shape[0] - 2 * h) / s, (window.shape[1] - 2 * h) / s
        if ny < 1 or nx < 1 or ny != int(ny) or nx != int(nx):
            raise ValueError(f"window {window.shape[:2]} is not scale*n + 2*halo")
        taps = list(enumerate(self.weights()))
        x = window if window.dtype == np.uint8 else window.astype(np.float32)
        columns = _filter_rows(x, taps, s, int(ny))  # along y: (ny, x, c)
        out = _filter_rows(_swap_yx(columns), taps, s, int(nx))  # along x: (nx, ny, c)
        out += np.float32(0.5)
        np.clip(np.floor(out, out=out), 0, 255, out=out)
        return _swap_yx(out.astype(np.uint8))

    def reduce_region(self, image: np.ndarray, lr_box: Box | None = None) -> np.ndarray:
        """Downsample an LR box ``(x0, y0, x1, y1)`` of a whole in-memory image.

        Without ``lr_box`` the whole image is reduced. Used for tiles, tests and
        training data; slides go tile by tile through :func:`read_window` and
        :meth:`reduce_window`.
        """
        height, width = image.shape[:2]
        lw, lh = self.lr_size(width, height)
        x0, y0, x1, y1 = lr_box or (0, 0, lw, lh)
        window = extract_window(image, self.hr_window(x0, y0, x1, y1))
        return self.reduce_window(window)


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` folded into ``[0, size)`` by half-sample symmetric
    reflection (``-1 -> 0``, ``size -> size - 1``), repeating as far as needed."""
    i = np.arange(start, stop) % (2 * size)
    return np.where(i >= size, 2 * size - 1 - i, i)


def read_window(
    read: Callable[[Box], np.ndarray],
    box: Box,
    width: int,
    height: int,
) -> np.ndarray:
    """The pixels of ``box = (x0, y0, x1, y1)`` of a ``width x height`` image, extended
    past its borders by symmetric reflection. ``read(x0, y0, x1, y1)`` returns an
    in-bounds region; only the pixels the window needs are read."""
    x0, y0, x1, y1 = box
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return read(box)
    ix, iy = reflect_indices(x0, x1, width), reflect_indices(y0, y1, height)
    bx0, by0 = int(ix.min()), int(iy.min())
    region = read((bx0, by0, int(ix.max()) + 1, int(iy.max()) + 1))
    return region[np.ix_(iy - by0, ix - bx0)]


def extract_window(image: np.ndarray, box: Box) -> np.ndarray:
    """Crop ``box`` from an in-memory ``(y, x, ...)`` image, reflecting past its borders."""
    height, width = image.shape[:2]
    return read_window(lambda b: image[b[1] : b[3], b[0] : b[2]], box, width, height)


def code_on_grid(
    lr: np.ndarray, codec: ImageCodec, chunk: int, fill: int, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Code an LR image chunk by chunk on the archive's grid, exactly as ingest stores it.

    ``origin`` is the LR position ``(y, x)`` of ``lr[0, 0]`` in the archive's global grid;
    chunks are cut at multiples of ``chunk``. A chunk that ``lr`` covers only in part (the
    slide's right and bottom edge) is padded to the full chunk with ``fill`` before coding,
    as zarr does with the array's fill value, and cropped after decoding. Coding chunk by
    chunk raises the error at chunk borders, so training pairs must see the same grid.
    """
    if codec.lossless:
        return lr.copy()
    return encode_on_grid(lr, codec, chunk, fill, origin)[0]


def encode_on_grid(
    lr: np.ndarray, codec: ImageCodec, chunk: int, fill: int, origin: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, dict[tuple[int, int], int]]:
    """:func:`code_on_grid` that also returns each chunk's encoded bytes (what the archive
    stores, less its crc32c), by the ``(y, x)`` of its first pixel inside ``lr``."""
    out = np.empty_like(lr)
    sizes: dict[tuple[int, int], int] = {}
    height, width = lr.shape[:2]
    oy, ox = origin
    for y0 in range(-(oy % chunk), height, chunk):
        for x0 in range(-(ox % chunk), width, chunk):
            ys, xs = slice(max(y0, 0), min(y0 + chunk, height)), slice(max(x0, 0), min(x0 + chunk, width))
            part = lr[ys, xs]
            padded = np.full((chunk, chunk, 3), fill, dtype=np.uint8)
            py, px = ys.start - y0, xs.start - x0
            padded[py : py + part.shape[0], px : px + part.shape[1]] = part
            data = codec.encode_image(padded)
            sizes[ys.start, xs.start] = len(data)
            if codec.lossless:
                out[ys, xs] = part
            else:
                out[ys, xs] = codec.decode_image(data)[py : py + part.shape[0], px : px + part.shape[1]]
    return out, sizes


def degrade(
    hr: np.ndarray, codec: ImageCodec | None, chunk: int = 256, scale: int = 4, fill: int | None = None
) -> np.ndarray:
    """HR image -> LR exactly as an archive of it would store it: downsample, then code on
    the chunk grid. ``fill`` defaults to the fill value ingest would choose for ``hr``."""
    lr = Downsample(scale).reduce_region(hr)
    if codec is None:
        return lr
    if fill is None:
        fill = detect_tissue(ArraySlide(hr)).fill_value
    return code_on_grid(lr, codec, chunk, fill)


def _keys_cubic(x: float, a: float = CUBIC_A) -> float:
    x = abs(x)
    if x <= 1.0:
        return (a + 2.0) * x**3 - (a + 3.0) * x**2 + 1.0
    if x < 2.0:
        return a * x**3 - 5.0 * a * x**2 + 8.0 * a * x - 4.0 * a
    return 0.0


def _filter_rows(
    x: np.ndarray, taps: Sequence[tuple[int, np.float32]], step: int, n: int, shift: float = 0.0
) -> np.ndarray:
    """``out[i] = sum_j w_j * (x[step * i + o_j] - shift)`` along axis 0 for the taps ``(o_j, w_j)``,
    float32: each product rounded to float32, then added in the taps' order (compiled, no fused
    multiply-add, so the same bits as the plain numpy loops in the tests); rows outside ``x``
    count as zero."""
    rows = np.ascontiguousarray(x).reshape(x.shape[0], -1)
    out = np.empty((n, rows.shape[1]), dtype=np.float32)
    offsets = np.array([offset for offset, _ in taps], dtype=np.int64)
    weights = np.array([weight for _, weight in taps], dtype=np.float32)
    _taps_kernel(rows, offsets, weights, step, np.float32(shift), out)
    return out.reshape(n, *x.shape[1:])


@numba.njit(nogil=True, cache=True)
def _taps_kernel(
    x: np.ndarray, offsets: np.ndarray, weights: np.ndarray, step: int, shift: np.float32, out: np.ndarray
) -> None:
    """:func:`_filter_rows` on 2-D ``x`` (uint8 or float32) into ``out``, without the GIL. A row
    outside ``x`` is left out: its products are zero, and adding zero changes no sum."""
    for j in range(out.shape[0]):
        row = out[j]
        row[:] = 0
        for t in range(offsets.shape[0]):
            r = step * j + offsets[t]
            if r < 0 or r >= x.shape[0]:
                continue
            source, weight = x[r], weights[t]
            for i in range(row.shape[0]):
                row[i] += (np.float32(source[i]) - shift) * weight


def _swap_yx(image: np.ndarray) -> np.ndarray:
    """``(y, x, c)`` -> C-contiguous ``(x, y, c)``, moving each pixel's ``c`` values as one item
    (several times faster than numpy's transpose copy with a short last axis)."""
    image = np.ascontiguousarray(image)
    height, width, c = image.shape
    pixels = image.view(np.dtype((np.void, c * image.itemsize)))[..., 0]
    return np.ascontiguousarray(pixels.T).view(image.dtype).reshape(width, height, c)


# -- what the archive loses: the loss map ----------------------------------------------------
#: The cubic constant of torch's bicubic (``F.interpolate(mode="bicubic", align_corners=False)``),
#: the restore's bicubic baseline (:func:`wsistore.models.layers.bicubic_up`).
BICUBIC_A = -0.75
#: Grey level both images are shifted by before the loss sums (the bicubic of a constant is
#: that constant), which keeps the float64 sums small.
LOSS_OFFSET = 128.0


@functools.lru_cache(maxsize=64)
def bicubic_matrix(n: int, scale: int) -> sparse.csr_matrix:
    """The ``(scale * n, n)`` matrix of torch's bicubic upscaling along one axis: half-pixel
    centres (``src = (dst + 0.5) / scale - 0.5``), ``a = -0.75``, the four taps
    ``floor(src) - 1 .. floor(src) + 2`` clamped to the edge. ``M @ x`` upscales ``x``
    exactly as ``bicubic_up`` does (separable, so rows then columns), up to float32 rounding."""
    a = BICUBIC_A
    dst = np.arange(scale * n)
    src = (dst + 0.5) / scale - 0.5
    x0 = np.floor(src).astype(np.int64)
    t = src - x0

    def near(x: np.ndarray) -> np.ndarray:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x: np.ndarray) -> np.ndarray:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    weights = np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=1)
    taps = np.clip(x0[:, None] + np.arange(-1, 3), 0, n - 1)
    rows = np.repeat(dst, 4)
    return sparse.csr_matrix((weights.ravel(), (rows, taps.ravel())), shape=(scale * n, n))  # clamped taps add up


@functools.lru_cache(maxsize=64)
def _bicubic_pair(n: int, scale: int, size: int, dtype: str) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """The bicubic matrix of ``n`` cropped to ``size`` rows, and its transpose, in ``dtype``."""
    m = bicubic_matrix(n, scale)[:size].astype(dtype)
    return m.tocsr(), m.T.tocsr()


def _separable(image: np.ndarray, my: sparse.csr_matrix, mx: sparse.csr_matrix) -> np.ndarray:
    """``my @ image[..., c] @ mx.T`` for every channel ``c`` of ``image`` (y, x, c)."""
    h, w, c = image.shape
    rows = np.asarray(my @ image.reshape(h, w * c)).reshape(my.shape[0], w, c)
    out = np.asarray(mx @ rows.transpose(1, 0, 2).reshape(w, -1)).reshape(mx.shape[0], my.shape[0], c)
    return out.transpose(1, 0, 2)


@functools.lru_cache(maxsize=8)
def _bicubic_phases(scale: int) -> tuple[tuple[int, np.ndarray], ...]:
    """Per output phase ``p`` (output ``scale * i + p``): the offset ``o`` of its first tap in the
    input padded by 2 edge pixels (taps ``o + i .. o + i + 3``) and the four float32 weights;
    the same definition as :func:`bicubic_matrix`, written as slices."""
    a = BICUBIC_A
    out = []
    for p in range(scale):
        src = (p + 0.5) / scale - 0.5
        f = math.floor(src)
        t = src - f
        near = [((a + 2.0) * x - (a + 3.0)) * x * x + 1.0 for x in (t, 1.0 - t)]
        far = [((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a for x in (t + 1.0, 2.0 - t)]
        out.append((f + 1, np.array([far[0], near[0], near[1], far[1]], dtype=np.float32)))
    return tuple(out)


def bicubic_phase_taps(scale: int) -> np.ndarray:
    """``(scale, 5)`` float64: row ``p`` holds the weights of :func:`bicubic_matrix` for output
    phase ``p`` (output ``scale * i + p``) on inputs ``i - 2 .. i + 2``, so that torch's bicubic
    upscaling is a 5 x 5 convolution to ``scale^2`` phases (their outer products) followed by a
    pixel shuffle, away from the edges."""
    taps = np.zeros((scale, 5))
    for p, (offset, weights) in enumerate(_bicubic_phases(scale)):
        taps[p, offset : offset + 4] = weights
    return taps


def _adjoint_axis0(x: np.ndarray, scale: int, n: int, shift: float) -> np.ndarray:
    """``M^T (x - shift)`` along axis 0, ``M`` the bicubic upscale of ``n`` rows
    (:func:`bicubic_matrix`, edges clamped), for ``x`` (uint8 or float32) holding the upscale's
    rows (fewer when it is cropped; the rest count as zero). Per output row the products are
    added phase by phase, tap by tap, in float32."""
    taps = [
        (p - scale * (o + k), weight)
        for p, (o, weights) in enumerate(_bicubic_phases(scale))
        for k, weight in enumerate(weights)
    ]
    g = _filter_rows(x, taps, scale, n + 4, shift)  # g[j]: the taps of rows that reach padded row j
    out = g[2 : n + 2]
    out[0] += g[0] + g[1]
    out[-1] += g[n + 2] + g[n + 3]
    return out


def bicubic_upscale(lr: np.ndarray, scale: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """``(h, w, c)`` -> ``(scale h, scale w, c)`` float64, torch's bicubic (unclipped, unrounded),
    cropped to ``size = (width, height)`` when given."""
    h, w, _ = lr.shape
    width, height = size or (scale * w, scale * h)
    my, _ = _bicubic_pair(h, scale, height, "float64")
    mx, _ = _bicubic_pair(w, scale, width, "float64")
    return _separable(lr.astype(np.float64), my, mx)


def loss_rms(hr: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """RMS in grey levels of ``hr`` minus the bicubic upscale of ``lr`` (cropped to ``hr``):
    what an archive of ``hr`` storing ``lr`` loses, computed directly."""
    up = bicubic_upscale(lr, scale, (hr.shape[1], hr.shape[0]))
    return float(np.sqrt(np.mean((hr.astype(np.float64) - up) ** 2)))


@dataclass(frozen=True)
class SourceLoss:
    """The source side of :func:`loss_rms` for one chunk, so the loss can be finished once the
    stored LR is decoded without keeping the HR pixels: with ``A = hr - 128``, ``D = lr - 128``
    and ``U`` the (cropped) bicubic upscale, ``|A - U D|^2 = |A|^2 - 2 <U^T A, D> + |U D|^2``.
    ``U^T A`` runs as float32 slices, ``|U D|^2`` as ``<D, U^T U D>`` at LR, the sums in float64.
    """

    sum_sq: float  # |A|^2
    adjoint: np.ndarray  # U^T A, (h, w, c) float32
    width: int  # of hr
    height: int

    @classmethod
    def of(cls, hr: np.ndarray, lr_shape: tuple[int, int], scale: int) -> SourceLoss:
        """``hr`` (the chunk's source pixels, cropped to the slide) for an LR chunk of ``lr_shape = (h, w)``."""
        height, width, c = hr.shape
        h, w = lr_shape
        rows = _adjoint_axis0(hr, scale, h, LOSS_OFFSET)  # (h, width, c)
        adjoint = _swap_yx(_adjoint_axis0(_swap_yx(rows), scale, w, 0.0))
        return cls(float(_centred_sum_sq(np.ascontiguousarray(hr))), adjoint, width, height)

    def rms(self, lr: np.ndarray, scale: int) -> float:
        """The chunk's loss (:func:`loss_rms`) given its stored (decoded) LR pixels."""
        h, w, c = lr.shape
        d = lr.astype(np.float64) - LOSS_OFFSET
        # |U D|^2 = <D, U^T U D>, at LR: U^T U is separable and banded (7 taps per axis)
        gram = _separable(d, _bicubic_gram(h, scale, self.height), _bicubic_gram(w, scale, self.width))
        # products summed by numpy, not BLAS: the same sums whatever the machine's threads
        sse = self.sum_sq - 2.0 * float(np.multiply(self.adjoint, d).sum()) + float(np.multiply(d, gram).sum())
        return math.sqrt(max(sse, 0.0) / (self.height * self.width * c))


@functools.lru_cache(maxsize=64)
def _bicubic_gram(n: int, scale: int, size: int) -> sparse.csr_matrix:
    """``M^T M`` of the bicubic matrix of ``n`` cropped to ``size`` rows (symmetric, banded)."""
    m = bicubic_matrix(n, scale)[:size]
    return (m.T @ m).tocsr()


@numba.njit(nogil=True, cache=True)
def _centred_sum_sq(hr: np.ndarray) -> int:
    """``sum((hr - LOSS_OFFSET)^2)`` of a uint8 array, exactly (in integers)."""
    total = np.int64(0)
    for v in hr.ravel():
        d = np.int64(v) - np.int64(LOSS_OFFSET)
        total += d * d
    return int(total)
