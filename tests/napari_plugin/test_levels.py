"""The viewer's levels: level 0 never waits for the generator (restored tiles exact, the others
the stored LR upsampled until restored on background threads, stale requests dropped), the
stored levels are the stored pixels, and a damaged chunk is reported by name and painted, never
shown as a guess. No napari or Qt here."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import wsistore
from tests.generators import CountingGenerator
from tests.restoration.test_errors import flip_byte
from wsistore.archive.reader import Archive
from wsistore.models.weights import LoadedGenerator
from wsistore.napari_plugin.levels import DAMAGED_RGB, ProgressiveLevel, StoredLevel


class GatedGenerator(CountingGenerator):
    """Bicubic that holds every window until ``gate`` is set; ``entered`` once one waits."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.gate.wait(120), "the test never opened the gate"
        return super().forward(lr)


def gated() -> tuple[LoadedGenerator, GatedGenerator]:
    model = GatedGenerator()
    return LoadedGenerator(model, "gated", None, {"architecture": "bicubic", "scale": 4}), model


def upsampled(lr: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)


def test_indexing_never_waits_and_the_tiles_fill_in(sample_archive: Path) -> None:
    loaded, model = gated()
    archive = Archive.open(sample_archive)
    ready = threading.Event()
    with wsistore.open(sample_archive, model=loaded, device="cpu") as slide:
        level = ProgressiveLevel(slide, on_ready=lambda _: ready.set())
        assert level.shape == (2967, 2220, 3) and level.dtype == np.uint8
        assert level.chunks == ((1024, 1024, 919), (1024, 1024, 172), (3,))  # the compute grid
        first = level[900:1300, 900:1300]  # four compute tiles, the generator held: returns anyway
        assert model.windows == 0 and level.pending == 4
        assert np.array_equal(first, upsampled(archive.read_lr(0, (225, 225, 325, 325))))

        model.gate.set()
        assert level.wait_idle(120) and ready.is_set()
        assert model.windows == 4
        exact = np.asarray(slide.read_region((900, 900), 0, (400, 400)))[..., :3]
        assert np.array_equal(level[900:1300, 900:1300], exact)

        full = slide.to_dask(0).compute()  # every tile restored: the level indexes as numpy does
        keys = [
            np.s_[100:2000:7, 2219:5:-3],
            np.s_[2966],
            np.s_[-5:, 1000, 1:],
            np.s_[1000:1000, :],
            np.s_[:, 3],
        ]
        for key in keys:
            assert np.array_equal(level[key], full[key]), key
        with pytest.raises(TypeError):
            level[[1, 2]]
        level.close()


def test_requests_no_longer_asked_for_are_dropped(sample_archive: Path) -> None:
    loaded, model = gated()
    with wsistore.open(sample_archive, model=loaded, device="cpu") as slide:
        level = ProgressiveLevel(slide, workers=1)
        level[900:1300, 900:1300]  # four tiles wanted; the one worker starts on one and is held
        assert model.entered.wait(60)
        level[2100:2900, 2100:2200]  # the view moved: only tile (2, 2) is wanted now
        model.gate.set()
        assert level.wait_idle(120)
        restored = [(r, c) for r in range(3) for c in range(3) if slide.cached_tile(r, c) is not None]
        assert len(restored) == 2 and (2, 2) in restored and model.windows == 2
        level.close()


def test_a_damaged_chunk_is_named_and_painted(archive_copy: Path) -> None:
    flip_byte(archive_copy / "0" / "c" / "0" / "0" / "0")  # level 0, chunk row 0 col 0
    errors: list[str] = []
    with wsistore.open(archive_copy, model="bicubic", device="cpu") as slide:
        level = ProgressiveLevel(slide, on_error=errors.append)
        damaged = level[0:100, 0:100]  # the stored chunk under the tile cannot be read
        assert (damaged == DAMAGED_RGB).all()
        assert len(errors) == 1 and "chunk 0 row 0 col 0 is damaged" in errors[0]

        assert (level.stored[0:100, 0:100] == DAMAGED_RGB).all() and len(errors) == 1  # the stored level too

        level[0:100, 1100:1200]  # tile (0, 1): its own chunk reads, its halo reaches the damaged one
        assert level.wait_idle(120)
        assert (level[0:100, 1100:1200] == DAMAGED_RGB).all()
        assert set(level.errors) == {(0, 0), (0, 1)} and len(errors) == 1  # one message, once
        level[2100:2200, 1100:1200]  # the rest of the slide still restores
        assert level.wait_idle(120)
        exact = np.asarray(slide.read_region((1100, 2100), 0, (100, 100)))[..., :3]
        assert np.array_equal(level[2100:2200, 1100:1200], exact)
        level.close()


def test_a_stored_level_is_the_stored_pixels(sample_archive: Path) -> None:
    archive = Archive.open(sample_archive)
    level = StoredLevel(archive, 1)
    assert level.shape == (371, 278, 3) and level.chunks == ((256, 115), (256, 22), (3,))
    assert np.array_equal(level[:, :], archive.read_lr(1, (0, 0, 278, 371)))
    assert np.array_equal(level[300:10:-3, 250], archive.read_lr(1, (250, 0, 251, 371))[300:10:-3, 0])


def test_a_hybrid_archive_shows_its_stored_full_resolution_chunks(hybrid_pair: tuple[Path, Path]) -> None:
    hybrid = hybrid_pair[1]
    archive = Archive.open(hybrid)
    hr = archive.hr_map()
    assert hr is not None and hr.any()
    r, q = (int(v) for v in np.argwhere(hr)[0])
    with wsistore.open(hybrid) as slide:  # the archive's own generator, as the plugin opens it
        level = ProgressiveLevel(slide)
        level[:, :]
        assert level.wait_idle(300) and not level.errors
        restored = level[:, :]
        assert np.array_equal(restored, np.asarray(slide.read_region((0, 0), 0, slide.dimensions))[..., :3])
        box = (q * 1024, r * 1024, min((q + 1) * 1024, slide.dimensions[0]), min((r + 1) * 1024, slide.dimensions[1]))
        assert archive.hr is not None
        assert np.array_equal(restored[box[1] : box[3], box[0] : box[2]], archive.hr.read(box))  # as stored
        level.close()
