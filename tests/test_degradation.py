"""The one downsample definition: kernel, borders, exact tiling, coding on the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsistore.codecs import make_codec
from wsistore.degradation import Downsample, code_on_grid, degrade, encode_on_grid, extract_window, reflect_indices


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
    lr = Downsample(4).reduce_region(tile)  # 250 x 250
    codec = make_codec("jpegxl", 2.0)
    coded = code_on_grid(lr, codec, chunk=128, fill=240)
    alone = codec.decode_image(codec.encode_image(np.ascontiguousarray(lr[:128, :128])))
    assert np.array_equal(coded[:128, :128], alone)
    assert not np.array_equal(coded, lr)
    # a partial edge chunk is padded with the fill value to the full chunk, as zarr does
    edge = np.full((128, 128, 3), 240, np.uint8)
    edge[:122, :122] = lr[128:, 128:]
    expected = codec.decode_image(codec.encode_image(edge))[:122, :122]
    assert np.array_equal(coded[128:, 128:], expected)
    # an origin shifts the grid: the chunk starting at LR (0, 0) now ends at 64
    shifted = code_on_grid(lr, codec, chunk=128, fill=240, origin=(64, 64))
    corner = np.full((128, 128, 3), 240, np.uint8)
    corner[64:, 64:] = lr[:64, :64]
    assert np.array_equal(shifted[:64, :64], codec.decode_image(codec.encode_image(corner))[64:, 64:])


def test_bytes_are_the_encoded_chunks(tile: np.ndarray) -> None:
    lr = Downsample(4).reduce_region(tile)
    codec = make_codec("avif", 50)
    _, sizes = encode_on_grid(lr, codec, 128, fill=240)
    padded = np.full((256, 256, 3), 240, np.uint8)
    padded[:250, :250] = lr
    chunks = {(y, x): np.ascontiguousarray(padded[y : y + 128, x : x + 128]) for y in (0, 128) for x in (0, 128)}
    assert sizes == {yx: len(codec.encode_image(chunk)) for yx, chunk in chunks.items()}


def test_degrade_is_downsample_then_grid_coding(tile: np.ndarray) -> None:
    codec = make_codec("jpegxl", 1.0)
    lr = Downsample(4).reduce_region(tile)
    assert np.array_equal(degrade(tile, codec, chunk=256, fill=238), code_on_grid(lr, codec, 256, fill=238))
    assert np.array_equal(degrade(tile, None), lr)


def test_grid_coding_equals_what_the_archive_stores(sample_archive: Path, slide_path: Path) -> None:
    """The real slide's archived LR (JPEG-XL, edge chunks included) equals downsample +
    code_on_grid with the archive's fill value, bit for bit: training sees exactly this."""
    from wsistore.archive.reader import Archive
    from wsistore.readers import open_slide

    archive = Archive.open(sample_archive)
    md = archive.metadata
    with open_slide(slide_path) as slide:
        lr = Downsample(4).reduce_region(slide.read_region((0, 0), 0, slide.dimensions))
    coded = code_on_grid(lr, archive.codec, md.chunk, md.fill_value)
    assert np.array_equal(coded, archive.read_lr(0, (0, 0, md.levels[0].width, md.levels[0].height)))


def _reference_reduce(window: np.ndarray, scale: int) -> np.ndarray:
    """The downsample as format 1 defines it, written plainly (slow): float32, along y then x,
    each tap's product rounded and added in order, rounded half up."""
    d = Downsample(scale)
    h = d.halo
    ny, nx = (window.shape[0] - 2 * h) // scale, (window.shape[1] - 2 * h) // scale
    x = window.astype(np.float32)
    w = d.weights()
    columns = x[0 : scale * ny : scale] * w[0]
    for k in range(1, d.taps):
        columns = columns + x[k : k + scale * ny : scale] * w[k]
    out = columns[:, 0 : scale * nx : scale] * w[0]
    for k in range(1, d.taps):
        out = out + columns[:, k : k + scale * nx : scale] * w[k]
    return np.clip(np.floor(out + np.float32(0.5)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("lr_size", [(1, 1), (17, 3), (40, 64), (256, 259)])
def test_downsample_equals_the_reference_bit_for_bit(tile: np.ndarray, scale: int, lr_size: tuple[int, int]) -> None:
    d = Downsample(scale)
    ny, nx = lr_size
    window = extract_window(tile, (-d.halo, -d.halo, scale * nx + d.halo, scale * ny + d.halo))
    assert np.array_equal(d.reduce_window(window), _reference_reduce(window, scale))
    noise = np.random.default_rng(scale).integers(0, 256, window.shape, dtype=np.uint8)
    assert np.array_equal(d.reduce_window(noise), _reference_reduce(noise, scale))
