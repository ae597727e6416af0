"""Regions on demand: OpenSlide's API over an archive, equal to the full restore, one
computation per tile under concurrency, overviews from the stored pyramid, DeepZoom."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from openslide.deepzoom import DeepZoomGenerator

import wsistore
from wsistore.archive.reader import Archive
from wsistore.models.weights import LoadedGenerator, sha256_file
from wsistore.restoration.runner import GeneratorRunner, _Request


def rgb(image: object) -> np.ndarray:
    array = np.asarray(image)
    assert (array[..., 3] == 255).all()
    return array[..., :3]


def test_region_on_demand_equals_the_full_restore(full_restore: Path, sample_archive: Path, tiny_edsr: Path) -> None:
    with tifffile.TiffFile(full_restore) as tif:
        full = tif.pages[0].asarray()
    with wsistore.open(sample_archive, model=str(tiny_edsr), device="cpu") as slide:
        assert np.array_equal(rgb(slide.read_region((1000, 1200), 0, (700, 500))), full[1200:1700, 1000:1700])
        corner = np.asarray(slide.read_region((2000, 2800), 0, (400, 300)))  # crosses the slide's corner
        assert np.array_equal(corner[:167, :220, :3], full[2800:, 2000:]) and (corner[:167, :220, 3] == 255).all()
        assert (corner[167:] == 0).all() and (corner[:, 220:] == 0).all()  # transparent outside, as OpenSlide
        assert slide.properties["wsistore.weights-sha256"] == sha256_file(tiny_edsr)


def test_openslide_api(sample_archive: Path, counting: LoadedGenerator) -> None:
    archive = Archive.open(sample_archive)
    with wsistore.open(sample_archive, model=counting, device="cpu") as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 4
        assert slide.level_dimensions == ((2220, 2967), (555, 742), (278, 371), (139, 186))
        assert slide.level_downsamples == (1.0, 4.0, 8.0, 16.0)
        assert [slide.get_best_level_for_downsample(d) for d in (0.5, 2, 4, 5.5, 9, 1000)] == [0, 0, 1, 1, 2, 3]
        props = slide.properties
        assert props["openslide.mpp-x"] == props["openslide.mpp-y"] == "0.499"
        assert props["openslide.vendor"] == "wsistore" and props["wsistore.super-resolved"] == "true"
        assert props["openslide.objective-power"] == "20" and props["aperio.AppMag"] == "20"
        assert props["openslide.level[0].tile-width"] == str(4 * 256)
        assert slide.color_profile is None  # the sample has none
        assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
        assert slide.associated_images["label"].mode == "RGBA"
        lr = rgb(slide.read_region((400, 800), 1, (100, 60)))
        assert np.array_equal(lr, archive.read_lr(0, (100, 200, 200, 260)))
        assert slide.get_thumbnail((1024, 1024)).size == (555, 742)  # the 4x level, not level 0
        assert slide.get_thumbnail((100, 100)).size == (75, 100)
        assert counting.model.windows == 0  # overviews and thumbnails never super-resolve
        rgb(slide.read_region((0, 0), 0, (10, 10)))
        assert counting.model.windows == 1
    with pytest.raises(ValueError, match="closed"):
        slide.read_region((0, 0), 0, (10, 10))


def test_concurrent_reads_compute_each_tile_once(sample_archive: Path, counting: LoadedGenerator) -> None:
    with wsistore.open(sample_archive, model=counting, device="cpu") as slide:
        barrier = threading.Barrier(8)

        def read(_: int) -> np.ndarray:
            barrier.wait()
            return rgb(slide.read_region((900, 900), 0, (512, 512)))  # meets four compute tiles

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(read, range(8)))
        assert counting.model.windows == 4
        assert all(np.array_equal(r, results[0]) for r in results)


def test_deepzoom(sample_archive: Path, counting: LoadedGenerator) -> None:
    with wsistore.open(sample_archive, model=counting, device="cpu") as slide:
        dz = DeepZoomGenerator(slide, tile_size=254, overlap=1)
        top = dz.level_count - 1
        assert dz.level_dimensions[top] == (2220, 2967)
        for level in range(top - 1):  # 4x and coarser: the stored pyramid
            dz.get_tile(level, (0, 0))
        assert counting.model.windows == 0
        tile = dz.get_tile(top, (2, 3))
        assert np.array_equal(np.asarray(tile), rgb(slide.read_region((2 * 254 - 1, 3 * 254 - 1), 0, (256, 256))))
        assert counting.model.windows == 1


def test_runner_batches_and_halves_on_out_of_memory() -> None:
    """The GPU path's recovery, driven on the CPU: a batch of four that runs out of
    memory is split in two and the runner keeps the smaller batch."""

    class OutOfMemoryAboveTwo(torch.nn.Module):
        scale, receptive_field = 4, 2
        batches: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.batches.append(x.shape[0])
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    model = OutOfMemoryAboveTwo()
    runner = GeneratorRunner(LoadedGenerator(model, "oom", None, {"architecture": "nearest"}), torch.device("cpu"))  # type: ignore[arg-type]
    runner.batch = 4
    requests = [_Request(np.full((8, 8, 3), i, np.uint8), (0, 0, 32, 32), Future()) for i in range(4)]
    runner._run(requests)
    assert model.batches == [4, 2, 2] and runner.batch == 2
    assert all(
        (r.future.result() == i).all() and r.future.result().shape == (32, 32, 3) for i, r in enumerate(requests)
    )
