"""What ``wsistore bench`` scores: tiles, slide regions, and archives beside their source.

Every input becomes an in-memory full-resolution reference image (slides: a region of
level 0, by default the most tissue-rich square of at most ``crop`` pixels) with its
tissue mask, mpp and, for slides, the bytes the source file spends on those pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsistore.errors import InputError
from wsistore.geometry import Region
from wsistore.readers import (
    SLIDE_SUFFIXES,
    TILE_SUFFIXES,
    ArraySlide,
    SlideReader,
    image_files,
    input_kind,
    open_slide,
    read_tile,
    stored_associated_bytes,
)
from wsistore.tissue import TissueMask, detect_tissue, tissue_pixels


@dataclass
class BenchInput:
    """One reference image and what is known about it."""

    name: str
    kind: str  # "tile" | "slide" | "archive"
    hr: np.ndarray
    mask: np.ndarray
    mpp: float | None
    #: the fill value an archive of the source uses (pads edge chunks)
    fill: int
    #: LR position (y, x) of this image in the archive's chunk grid
    lr_origin: tuple[int, int] = (0, 0)
    #: bits per pixel the source file spends (slides: file bytes / level-0 pixels)
    source_bpp: float | None = None
    archive_bpp: float | None = None  # a real archive's total bits per source pixel

    @property
    def pixels(self) -> int:
        return int(self.hr.shape[0] * self.hr.shape[1])


def load_inputs(paths: list[Path], crop: int, region: Region | None = None) -> Iterator[BenchInput]:
    """Open archives, tiles and slides, and the tiles and slides directly in folders (see
    :func:`~wsistore.readers.input_kind`); raise InputError for anything unusable."""
    for path in paths:
        kind = input_kind(path)
        if kind == "archive":
            yield _archive_input(path, crop, region)
            continue
        files = image_files(path) if kind == "folder" else [path]
        if not files:
            raise InputError(f"{path}: no image tiles or slides ({', '.join(TILE_SUFFIXES + SLIDE_SUFFIXES)})")
        for file in files:
            yield _tile_input(file) if input_kind(file) == "tile" else _slide_input(file, crop, region)


def _tile_input(path: Path) -> BenchInput:
    hr = read_tile(path)
    tissue = detect_tissue(ArraySlide(hr))
    return BenchInput(
        name=path.stem, kind="tile", hr=hr, mask=tissue.pixels(*hr.shape[:2]), mpp=None, fill=tissue.fill_value
    )


def _slide_input(path: Path, crop: int, region: Region | None) -> BenchInput:
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
        box = region or _densest_square(slide, tissue, crop)
        x, y, w, h = box[0] // 64 * 64, box[1] // 64 * 64, box[2], box[3]  # on the archive's 16-LR-pixel grid
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > slide.dimensions[0] or y + h > slide.dimensions[1]:
            raise InputError(f"region {box} is outside {path.name} {slide.dimensions}")
        hr = slide.read_region((x, y), 0, (w, h))
        mpp = slide.mpp[0] if slide.mpp else None
        # the source's image data only: its label, macro and thumbnail are not what is compared
        image_bytes = path.stat().st_size - sum(stored_associated_bytes(path).values())
        source_bpp = 8 * image_bytes / (slide.dimensions[0] * slide.dimensions[1])
    return BenchInput(
        name=f"{path.stem}[{x},{y},{w},{h}]",
        kind="slide",
        hr=hr,
        mask=tissue_pixels(hr),
        mpp=mpp,
        fill=tissue.fill_value,
        lr_origin=(y // 4, x // 4),
        source_bpp=source_bpp,
    )


def _archive_input(path: Path, crop: int, region: Region | None) -> BenchInput:
    from wsistore.archive.reader import Archive

    archive = Archive.open(path)
    source = path.parent / archive.metadata.source.file_name
    if not source.is_file():
        raise InputError(
            f"{path}: quality needs the original; put {archive.metadata.source.file_name} beside the archive "
            "or pass the slide"
        )
    item = _slide_input(source, crop, region)
    item.kind = "archive"
    item.archive_bpp = float(archive.info()["bits_per_source_pixel"])
    return item


def _densest_square(slide: SlideReader, mask: TissueMask, crop: int) -> Region:
    """The ``crop``-sided square (aligned to 64 source pixels = 16 LR) with the most tissue."""
    width, height = slide.dimensions
    side = min(crop, width, height) // 64 * 64
    cells = max(1, side // mask.cell)
    tissue = mask.tissue.astype(np.float64)
    best, best_score = (0, 0), -1.0
    step = max(1, cells // 8)
    for cy in range(0, max(1, tissue.shape[0] - cells + 1), step):
        for cx in range(0, max(1, tissue.shape[1] - cells + 1), step):
            score = tissue[cy : cy + cells, cx : cx + cells].sum()
            if score > best_score:
                best, best_score = (cy, cx), score
    y, x = best[0] * mask.cell, best[1] * mask.cell
    x, y = min(x, width - side) // 64 * 64, min(y, height - side) // 64 * 64
    return x, y, side, side
