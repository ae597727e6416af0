"""OME-Zarr (NGFF 0.5, Zarr v3) restore output, for napari and other NGFF viewers.

Array ``0`` is the super-resolved level, ``1``, ``2`` ... the archive's LR levels; all
``(c, y, x)`` uint8, losslessly zstd-compressed, sharded so that a slide is a few hundred
files. Physical scale is in micrometres from the source's mpp. Level 0 is written one
row of shards at a time (journalled for ``--resume``); the group metadata, which names
the generator and its weights' sha256, is written last.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from wsistore.archive.format import LevelInfo, ome_multiscales, read_group_attributes
from wsistore.archive.partial import PartialOutput
from wsistore.archive.reader import Archive
from wsistore.restoration.levels import OutputLevel

ROW_KIND = "zarr-level0-row"
RESULT_NAME = "restored.zarr"
#: The group attribute holding the restore's provenance: what marks an OME-Zarr restore wrote.
PROVENANCE_KEY = "wsistore_restore"
ZSTD_LEVEL = 3


class OmeZarrWriter:
    """Writes one restore as OME-Zarr inside a :class:`PartialOutput`."""

    #: Levels step by 2, as NGFF viewers expect.
    level_factor = 2

    def __init__(self, tile: int, compute_tile: int) -> None:
        """``tile``: the chunk side; shards hold whole HR ``compute_tile``s, so level 0,
        arriving in rows one shard high, writes every shard once."""
        self.tile = tile
        self.shard = -(-compute_tile // tile) * tile
        self.row_height = self.shard

    def describe(self) -> str:
        return f"zstd level {ZSTD_LEVEL}"

    def open(self, output: PartialOutput, level0: OutputLevel) -> set[int]:
        """Create (or reopen) the store in ``output``; returns the level-0 rows already written."""
        self.output = output
        self.group = zarr.open_group(output.work.path / RESULT_NAME, mode="a", zarr_format=3)
        done = {int(k) for k in output.done(ROW_KIND)} if "0" in self.group else set()
        self.level0 = self._array("0", level0)
        return done

    def write_rows(self, rows: Iterator[tuple[int, np.ndarray]]) -> None:
        for k, row in rows:
            y0 = k * self.row_height
            self.level0[:, y0 : y0 + row.shape[0], :] = np.moveaxis(row, 2, 0)
            self.output.journal(ROW_KIND, k)

    def finish(self, archive: Archive, levels: list[OutputLevel], provenance: dict[str, Any]) -> str:
        """Copy the LR levels and write the group metadata (last); returns the store's name
        in the work directory."""
        for i, level in enumerate(levels[1:], start=1):
            assert level.archive_level is not None
            array = self._array(str(i), level)
            x0, y0, x1, y1 = level.box
            for ty in range(y0, y1, self.shard):
                band = archive.read_lr(level.archive_level, (x0, ty, x1, min(ty + self.shard, y1)))
                array[:, ty - y0 : ty - y0 + band.shape[0], :] = np.moveaxis(band, 2, 0)
        md = archive.metadata
        infos = [LevelInfo(str(i), lv.width, lv.height, lv.downsample) for i, lv in enumerate(levels)]
        ome = ome_multiscales(infos, md.mpp, f"{md.source.file_name} (super-resolved)")
        px, py = md.mpp if md.mpp else (1.0, 1.0)
        for dataset, level in zip(ome["multiscales"][0]["datasets"], levels, strict=True):
            d = level.downsample
            translation = dataset["coordinateTransformations"][1]["translation"]
            translation[1] = py * (level.box[1] * d + (d - 1) / 2.0)
            translation[2] = px * (level.box[0] * d + (d - 1) / 2.0)
        ome["multiscales"][0]["type"] = "level 0 super-resolved; coarser levels: the archive's stored pyramid"
        self.group.attrs.update({"ome": ome, PROVENANCE_KEY: provenance})
        return RESULT_NAME

    def _array(self, name: str, level: OutputLevel) -> zarr.Array:
        if name in self.group:
            array = self.group[name]
            assert isinstance(array, zarr.Array)
            return array
        side = min(self.shard, max(level.width, level.height))
        shard = -(-side // self.tile) * self.tile
        return self.group.create_array(
            name,
            shape=(3, level.height, level.width),
            dtype="uint8",
            chunks=(3, self.tile, self.tile),
            shards=(3, shard, shard),
            compressors=ZstdCodec(level=ZSTD_LEVEL),
            fill_value=0,
            dimension_names=["c", "y", "x"],
        )


def is_restored_zarr(path: Path) -> bool:
    """Whether ``path`` is an OME-Zarr folder that restore wrote (its provenance attribute)."""
    attrs = read_group_attributes(path) if path.is_dir() else None
    return attrs is not None and PROVENANCE_KEY in attrs
