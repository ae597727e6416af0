"""``wsistore.open(ARCHIVE).to_dask(level)``: the public lazy arrays. Level 0 is chunked on the
compute grid and computed in full equals the full restore; the stored levels are the stored
pixels; the arrays pickle for dask.distributed."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

import wsistore
from wsistore.archive.reader import Archive


def test_level0_computed_in_full_is_the_full_restore(full_restore: Path, sample_archive: Path, tiny_edsr: Path) -> None:
    with tifffile.TiffFile(full_restore) as tif:
        full = tif.pages[0].asarray()
    with wsistore.open(sample_archive, model=str(tiny_edsr), device="cpu") as slide:
        level0 = slide.to_dask(0)
        assert level0.dtype == np.uint8 and level0.chunks == ((1024, 1024, 919), (1024, 1024, 172), (3,))
        pixels = level0.compute()
        assert np.array_equal(pixels, full) and pixels.flags.writeable
        region = np.asarray(slide.read_region((1000, 1200), 0, (700, 500)))[..., :3]
        assert np.array_equal(level0[1200:1700, 1000:1700].compute(), region)
        assert slide.cached_tile(1, 1) is not None  # through the slide's cache: read_region reuses it

        shipped = pickle.loads(pickle.dumps(level0[1000:1100, 2000:2100]))  # as dask.distributed sends it
        assert np.array_equal(shipped.compute(), full[1000:1100, 2000:2100])
        with pytest.raises(ValueError, match="outside"):
            slide.to_dask(4)


def test_the_coarser_levels_are_the_stored_pyramid(sample_archive: Path) -> None:
    archive = Archive.open(sample_archive)
    with wsistore.open(sample_archive, model="bicubic", device="cpu") as slide:
        for level in range(1, slide.level_count):
            w, h = slide.level_dimensions[level]
            array = slide.to_dask(level)
            assert array.shape == (h, w, 3) and array.chunksize[:2] == (min(256, h), min(256, w))
            assert np.array_equal(array.compute(), archive.read_lr(level - 1, (0, 0, w, h)))
        shipped = pickle.loads(pickle.dumps(slide.to_dask(2)))
        assert np.array_equal(shipped.compute(), archive.read_lr(1, (0, 0, 278, 371)))
