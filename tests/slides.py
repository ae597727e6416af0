"""Build real-data test slides: pyramidal tiled TIFFs whose tissue is real H&E tiles
from ``../shared/data/tiles`` laid on glass, streamed tile by tile (never whole in memory).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from tests.data import TILES

GLASS = (238, 236, 240)


@lru_cache(maxsize=32)
def load_tile(name: str, downsample: int = 1) -> np.ndarray:
    """A real tile as RGB uint8, optionally reduced by ``downsample`` (box filter)."""
    image = Image.open(TILES / f"{name}.png").convert("RGB")
    if downsample > 1:
        image = image.resize((image.width // downsample, image.height // downsample), Image.BOX)
    return np.asarray(image)


@lru_cache(maxsize=1)
def _glass_tile() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (np.asarray(GLASS) + rng.integers(-2, 3, size=(509, 509, 3))).astype(np.uint8)


def glass(height: int, width: int, seed: int) -> np.ndarray:
    """Slide glass: a flat colour with a little sensor noise (a repeated noise tile)."""
    tile = _glass_tile()
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    offset = seed % tile.shape[0]
    return np.tile(np.roll(tile, offset, axis=0), reps)[:height, :width].copy()


def render(
    layout: Sequence[Sequence[str | None]], cell: int, downsample: int, y0: int, y1: int, width: int
) -> np.ndarray:
    """Rows ``y0:y1`` (at this level) of a mosaic: ``layout[i][j]`` names a tile or is glass."""
    c = cell // downsample
    strip = glass(y1 - y0, width, seed=y0 * 7 + downsample)
    for i in range(y0 // c, -(-y1 // c)):
        for j, name in enumerate(layout[i] if i < len(layout) else []):
            if name is None:
                continue
            tile = load_tile(name, downsample)[:c, :c]
            ty0, tx0 = i * c, j * c
            ys = slice(max(ty0, y0), min(ty0 + tile.shape[0], y1))
            xs = slice(tx0, min(tx0 + tile.shape[1], width))
            if ys.start < ys.stop and xs.start < xs.stop:
                strip[ys.start - y0 : ys.stop - y0, xs] = tile[ys.start - ty0 : ys.stop - ty0, : xs.stop - tx0]
    return strip


def write_mosaic_slide(
    path: Path,
    layout: Sequence[Sequence[str | None]],
    cell: int = 1024,
    size: tuple[int, int] | None = None,
    downsamples: Sequence[int] = (1, 4, 16),
    mpp: float | None = 0.25,
    icc: bytes | None = None,
    tile: int = 512,
) -> Path:
    """A pyramidal JPEG-tiled BigTIFF of the mosaic; returns ``path``."""
    width, height = size or (cell * max(len(r) for r in layout), cell * len(layout))
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k, d in enumerate(downsamples):
            w, h = -(-width // d), -(-height // d)
            extra: dict = {}
            if k == 0:
                if mpp:
                    extra.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
                if icc:
                    extra["iccprofile"] = icc
            else:
                extra["subfiletype"] = 1
            tif.write(
                _tiles(layout, cell, d, w, h, tile),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                metadata=None,
                **extra,
            )
    return path


def _tiles(
    layout: Sequence[Sequence[str | None]], cell: int, d: int, w: int, h: int, tile: int
) -> Iterator[np.ndarray]:
    for y0 in range(0, h, tile):
        strip = render(layout, cell, d, y0, min(y0 + tile, h), w)
        for x0 in range(0, w, tile):
            out = np.zeros((tile, tile, 3), np.uint8)
            part = strip[:, x0 : x0 + tile]
            out[: part.shape[0], : part.shape[1]] = part
            yield out


def real_image(width: int = 1000, height: int = 744, name: str = "kidney_monuseg_B0-5710") -> np.ndarray:
    """A real H&E tile cropped to ``width`` x ``height`` (a truth image for crafted files)."""
    return np.ascontiguousarray(load_tile(name)[:height, :width])


def _jpeg(frame: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=95)
    return out.getvalue()


def write_dicom_frames(
    path: Path,
    image: np.ndarray,
    tile: int = 250,
    order: str = "column",
    positions: bool = False,
    shuffle_seed: int | None = None,
    organisation: str | None = "TILED_SPARSE",
) -> Path:
    """A DICOM WSI of ``image`` in JPEG frames of ``tile`` px, stored ``order`` (``row`` or
    ``column``) with no Dimension Organization Type, or with ``positions`` a Plane Position
    (Slide) per frame (Dimension Organization Type ``organisation``, None: not stated), the
    frames shuffled by ``shuffle_seed``. The
    header is the shared DICOM's (its quirks included: no Image Type, no Pixel Spacing)."""
    import warnings

    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    from tests.data import DICOM_SLIDE

    height, width = image.shape[:2]
    across, down = -(-width // tile), -(-height // tile)
    padded = np.zeros((down * tile, across * tile, 3), np.uint8)
    padded[:height, :width] = image
    cells = (
        [(r, c) for c in range(across) for r in range(down)]
        if order == "column"
        else [(r, c) for r in range(down) for c in range(across)]
    )
    if shuffle_seed is not None:
        cells = [cells[i] for i in np.random.default_rng(shuffle_seed).permutation(len(cells))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(DICOM_SLIDE)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = tile
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = width, height
    ds.NumberOfFrames = len(cells)
    ds.PixelData = encapsulate([_jpeg(padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]) for r, c in cells])
    if positions:
        if organisation is not None:
            ds.DimensionOrganizationType = organisation
        items = []
        for r, c in cells:
            position = Dataset()
            position.ColumnPositionInTotalImagePixelMatrix = c * tile + 1
            position.RowPositionInTotalImagePixelMatrix = r * tile + 1
            item = Dataset()
            item.PlanePositionSlideSequence = [position]
            items.append(item)
        ds.PerFrameFunctionalGroupsSequence = items
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path)
    return path


def write_thumbnail_first_tiff(path: Path, image: np.ndarray) -> Path:
    """A tiled pyramidal TIFF of ``image`` whose first page is an 8x smaller stripped thumbnail."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.ascontiguousarray(image[::8, ::8]), photometric="rgb")
        tif.write(image, photometric="rgb", tile=(256, 256), compression="jpeg", subifds=1)
        tif.write(np.ascontiguousarray(image[::2, ::2]), photometric="rgb", tile=(256, 256), subfiletype=1)
    return path


def write_multi_series_ome_tiff(path: Path, image: np.ndarray, mpp: float = 0.25) -> Path:
    """An OME-TIFF of two series: a small unnamed overview first, then ``image`` as a tiled
    pyramid with its own physical pixel size."""
    overview = np.ascontiguousarray(image[::6, ::6])
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(overview, photometric="rgb", metadata={"Name": "Image0", "PhysicalSizeX": 6 * mpp * 4})
        tif.write(
            image,
            photometric="rgb",
            tile=(256, 256),
            compression="jpeg",
            subifds=1,
            metadata={"Name": "Image1", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp},
        )
        tif.write(np.ascontiguousarray(image[::2, ::2]), photometric="rgb", tile=(256, 256), subfiletype=1)
    return path
