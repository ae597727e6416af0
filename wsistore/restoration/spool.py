"""The level-0 tile spool of the outputs assembled at the end (BigTIFF, DICOM).

Level 0 arrives row by row; each row's tiles are encoded at once and written to one file
in the work directory, and the row is journalled with its tiles' lengths, so ``--resume``
skips rows already spooled. At the end the writer reads the encoded tiles back, in order,
and assembles its file(s) from them: no tile is encoded twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from wsistore.archive.partial import PartialOutput
from wsistore.errors import WsistoreError
from wsistore.restoration.levels import OutputLevel

ROW_KIND = "tiff-level0-row"
SPOOL_DIR = "level0-tiles"


class TileEncoder(Protocol):
    """Compresses one full-size ``(t, t, 3)`` tile."""

    def encode(self, tile: np.ndarray) -> bytes: ...

    def describe(self) -> str: ...


C = TypeVar("C", bound=TileEncoder)


class SpooledLevel0(Generic[C]):
    """The spool half of a writer: ``open`` and ``write_rows`` of :class:`OutputWriter`,
    and the spooled tiles read back by ``finish``."""

    def __init__(self, tile: int, workers: int, codec: C) -> None:
        self.tile = tile
        self.workers = workers
        self.codec = codec
        self.row_height = tile

    def describe(self) -> str:
        return self.codec.describe()

    def open(self, output: PartialOutput, level0: OutputLevel) -> set[int]:
        """Start (or resume) the spool in ``output``; returns the level-0 rows already spooled."""
        self.output = output
        done = output.done(ROW_KIND)
        return {int(k) for k, lengths in done.items() if self._spooled(int(k), lengths)}

    def write_rows(self, rows: Iterator[tuple[int, np.ndarray]]) -> None:
        """Encode and journal level-0 rows as they arrive."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="wsistore-encode") as pool:
            for k, row in rows:
                encoded = list(pool.map(self.codec.encode, cut_tiles(row, self.tile)))
                self.output.work.write_bytes(self._row_key(k), b"".join(encoded))
                self.output.journal(ROW_KIND, k, [len(d) for d in encoded])

    def spooled_lengths(self, level0: OutputLevel) -> dict[int, list[int]]:
        """Row -> its tiles' encoded lengths, refusing a level 0 with rows missing."""
        lengths = {int(k): v for k, v in self.output.done(ROW_KIND).items()}
        rows = -(-level0.height // self.tile)
        missing = [k for k in range(rows) if k not in lengths or not self._spooled(k, lengths[k])]
        if missing:  # never assemble (and land) a level 0 with holes
            raise WsistoreError(f"{self.output.work.path}: level-0 rows {missing} are not spooled; rerun with --resume")
        return lengths

    def _spooled(self, k: int, lengths: list[int]) -> bool:
        path = self._row_path(k)
        return path.is_file() and path.stat().st_size == sum(lengths)

    def _row_key(self, k: int) -> str:
        return f"{SPOOL_DIR}/row-{k:06d}.bin"

    def _row_path(self, k: int) -> Path:
        return self.output.work.path / self._row_key(k)

    def _spooled_tiles(self, level: OutputLevel, lengths: dict[int, list[int]]) -> Iterator[bytes]:
        for k in range(-(-level.height // self.tile)):
            data = self._row_path(k).read_bytes()
            offset = 0
            for n in lengths[k]:
                yield data[offset : offset + n]
                offset += n


def cut_tiles(row: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """Full-size tiles of a row, edge tiles padded by repeating their last pixels."""
    for x in range(0, row.shape[1], tile):
        part = row[:, x : x + tile]
        if part.shape[0] != tile or part.shape[1] != tile:
            part = np.pad(part, ((0, tile - part.shape[0]), (0, tile - part.shape[1]), (0, 0)), mode="edge")
        yield np.ascontiguousarray(part)
