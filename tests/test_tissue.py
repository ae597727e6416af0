"""The tissue mask's pooling kernel against a plain numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsistore import tissue
from wsistore.readers import open_slide
from wsistore.tissue import _box_mean, _luma, _pool, detect_tissue


def _reference_pool(
    tile: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    mean: np.ndarray,
    count: np.ndarray,
    darkest: np.ndarray,
    saturation: np.ndarray,
) -> None:
    """The pooling as plain numpy: per-cell sums by ``reduceat`` along y then x, min luma, max
    saturation."""
    tile = tile.astype(np.float32)
    ry = np.flatnonzero(np.r_[True, cy[1:] != cy[:-1]])
    rx = np.flatnonzero(np.r_[True, cx[1:] != cx[:-1]])
    sums = np.add.reduceat(np.add.reduceat(tile, ry, axis=0), rx, axis=1)
    r, g, b = tile[..., 0], tile[..., 1], tile[..., 2]
    sat = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    low = np.minimum.reduceat(np.minimum.reduceat(_luma(tile), ry, axis=0), rx, axis=1)
    high = np.maximum.reduceat(np.maximum.reduceat(sat, ry, axis=0), rx, axis=1)
    n = np.outer(np.diff(np.r_[ry, len(cy)]), np.diff(np.r_[rx, len(cx)]))
    grid = np.ix_(cy[ry], cx[rx])
    mean[grid] += sums
    count[grid] += n.astype(np.uint16)
    darkest[grid] = np.minimum(darkest[grid], low)
    saturation[grid] = np.maximum(saturation[grid], high)


@pytest.mark.parametrize(("factor", "step"), [(1, 4.0), (2, 2.0), (4, 1.0), (1, 3.99)])
def test_pool_equals_the_numpy_reference_bit_for_bit(tile: np.ndarray, factor: int, step: float) -> None:
    pooled = _box_mean(tile[:, :-3], factor)
    cy = ((7 + np.arange(pooled.shape[0])) * step * factor // 32).astype(int)
    cx = ((5 + np.arange(pooled.shape[1])) * step * factor // 32).astype(int)
    rows, cols = int(cy[-1]) + 1, int(cx[-1]) + 1

    def state() -> list[np.ndarray]:
        rng = np.random.default_rng(1)  # cells that already hold the pooling of other tiles
        return [
            rng.integers(0, 4000, (rows, cols, 3)).astype(np.float32),
            rng.integers(0, 99, (rows, cols)).astype(np.uint16),
            rng.uniform(0, 255, (rows, cols)).astype(np.float32),
            rng.uniform(0, 255, (rows, cols)).astype(np.float32),
        ]

    fast, slow = state(), state()
    _pool(pooled, cy, cx, *fast)
    _reference_pool(pooled, cy, cx, *slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_mask_of_a_real_slide_equals_the_reference_one(slide_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_slide(slide_path) as slide:
        fast = detect_tissue(slide)
        monkeypatch.setattr(tissue, "_pool", _reference_pool)
        slow = detect_tissue(slide)
    assert np.array_equal(fast.tissue, slow.tissue) and fast.background_rgb == slow.background_rgb
    assert 0.2 < fast.fraction < 0.9


def test_reading_ahead_on_threads_gives_the_same_mask(mosaic_slide: Path) -> None:
    with open_slide(mosaic_slide) as slide:
        serial, threaded = detect_tissue(slide), detect_tissue(slide, workers=2)
    assert np.array_equal(serial.tissue, threaded.tissue) and serial.background_rgb == threaded.background_rgb
