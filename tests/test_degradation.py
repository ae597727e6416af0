"""The one downsample definition: kernel, borders, exact tiling, coding on the grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsistore.codecs import make_codec
from wsistore.degradation import Downsample, code_on_grid, degrade, extract_window, reflect_indices


def test_weights_are_the_stretched_keys_kernel() -> None:
    w = Downsample(4).weights()
    assert w.shape == (16,) and abs(float(w.sum()) - 1) < 1e-6
    assert np.allclose(w, w[::-1]) and w.argmax() in (7, 8)


def test_matches_torch_antialiased_bicubic_in_the_interior(tile: np.ndarray) -> None:
    lr = Downsample(4).reduce_region(tile)
    x = torch.from_numpy(tile.copy()).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(x, size=lr.shape[:2], mode="bicubic", antialias=True, align_corners=False)
    ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(int)
    diff = np.abs(lr.astype(int) - ref)[3:-3, 3:-3]
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_sizes_not_multiple_of_scale_round_up(tile: np.ndarray) -> None:
    d = Downsample(4)
    image = tile[:997, :993]
    assert d.lr_size(993, 997) == (249, 250)
    assert d.reduce_region(image).shape == (250, 249, 3)


@pytest.mark.parametrize("tile_size", [(37, 100), (64, 64), (250, 1)])
def test_tiled_equals_whole_image_bit_for_bit(tile: np.ndarray, tile_size: tuple[int, int]) -> None:
    d = Downsample(4)
    image = tile[:993, :1000]
    whole = d.reduce_region(image)
    h, w = whole.shape[:2]
    tiled = np.zeros_like(whole)
    ty, tx = tile_size
    for y in range(0, h, ty):
        for x in range(0, w, tx):
            box = (x, y, min(x + tx, w), min(y + ty, h))
            tiled[box[1] : box[3], box[0] : box[2]] = d.reduce_region(image, box)
    assert np.array_equal(tiled, whole)


def test_reflection_is_half_sample_symmetric() -> None:
    assert reflect_indices(-3, 8, 5).tolist() == [2, 1, 0, 0, 1, 2, 3, 4, 4, 3, 2]
    a = np.arange(35).reshape(7, 5)
    assert np.array_equal(extract_window(a, (-4, -3, 9, 10)), np.pad(a, ((3, 3), (4, 4)), mode="symmetric"))


def test_constant_image_stays_constant() -> None:
    image = np.full((64, 72, 3), 201, np.uint8)
    assert (Downsample(4).reduce_region(image) == 201).all()


def test_code_on_grid_codes_each_chunk_separately(tile: np.ndarray) -> None:
    lr = Downsample(4).reduce_region(tile)
    codec = make_codec("jpegxl", 2.0)
    coded = code_on_grid(lr, codec, chunk=128)
    # the top-left chunk equals coding that chunk alone
    alone = codec.decode_image(codec.encode_image(np.ascontiguousarray(lr[:128, :128])))
    assert np.array_equal(coded[:128, :128], alone)
    assert not np.array_equal(coded, lr)
    # an origin shifts the grid: the chunk starting at LR (0, 0) is now 64 x 64
    shifted = code_on_grid(lr, codec, chunk=128, origin=(64, 64))
    corner = codec.decode_image(codec.encode_image(np.ascontiguousarray(lr[:64, :64])))
    assert np.array_equal(shifted[:64, :64], corner)


def test_degrade_is_downsample_then_grid_coding(tile: np.ndarray) -> None:
    codec = make_codec("jpegxl", 1.0)
    lr = Downsample(4).reduce_region(tile)
    assert np.array_equal(degrade(tile, codec, chunk=256), code_on_grid(lr, codec, 256))
    assert np.array_equal(degrade(tile, None), lr)
