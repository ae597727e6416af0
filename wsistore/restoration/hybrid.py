"""The SR path that hybrid ingest measures (format 1.5): restore's own output for a level 0 as
stored, so the decision weighs the pixels restore will really give.

:class:`SrPath` is ingest's :class:`wsistore.archive.writer.Upscaler`: it loads the generator
restore uses when no model is named (the stored adaptation on its base, else the shipped default
for the LR codec) and restores boxes through the same compute grid, tiles, halo and border rule
as :class:`wsistore.restoration.engine.TileRestorer` (:func:`upscale_tile`, :func:`assemble`).
It runs on the CPU by default at restore's default precision (int8 on CPUs with VNNI), as restore
does on a machine without a GPU; a restore on a GPU (bf16) or at another precision can differ from
it by a grey level here and there, never enough to matter to the rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wsistore.archive.format import BICUBIC, GENERATOR
from wsistore.archive.reader import ArrayReader
from wsistore.archive.writer import Stored
from wsistore.codecs import ImageCodec
from wsistore.errors import InputError
from wsistore.geometry import Box
from wsistore.models import adaptation
from wsistore.models.device import resolve_device
from wsistore.models.weights import default_model, load_generator
from wsistore.restoration.cache import SingleFlightCache
from wsistore.restoration.engine import assemble, bicubic_runner, compute_grid, upscale_tile
from wsistore.restoration.int8 import DEFAULT_PRECISION
from wsistore.restoration.runner import GeneratorRunner

#: Restored compute tiles kept while the HR shards are decided (a tile can serve two chunks).
TILE_CACHE_BYTES = 128 << 20


@dataclass(frozen=True)
class SrPath:
    """Restore's default generator on ``device`` (``cpu`` by default), for hybrid ingest."""

    device: str = "cpu"

    def settings(self) -> dict[str, Any]:
        """These settings as JSON (what an interrupted ingest's journal must match)."""
        return asdict(self)

    def open(self, level0: ArrayReader, size: tuple[int, int], codec: ImageCodec, stored: Stored) -> RestoredLevel0:
        """The SR path over ``level0`` restored to ``size = (width, height)``: the stored
        adaptation (``stored``: its bytes and record) on its base, else the default generator for
        ``codec``, as restore chooses them."""
        device = resolve_device(self.device)
        if stored is not None:
            payload, record = stored
            generator = adaptation.apply(load_generator(record["base"], device), payload, record["base_sha256"])
        else:
            generator = load_generator(default_model(codec), device)
        runner = GeneratorRunner(generator, device, precision=DEFAULT_PRECISION)
        width, height = size
        if -(-width // runner.scale) != level0.width or -(-height // runner.scale) != level0.height:
            runner.close()
            raise InputError(
                f"ingest measures the SR path with {generator.name}, which upscales {runner.scale}x: use --scale 4"
            )
        return RestoredLevel0(runner, bicubic_runner(device), level0, width, height)


class RestoredLevel0:
    """Restored boxes of one stored level 0, computed tile by tile on the canonical grid: by
    the generator, or by bicubic interpolation over the same windows (as restore pastes a
    chunk whose archive chose bicubic)."""

    def __init__(
        self, runner: GeneratorRunner, bicubic: GeneratorRunner, level0: ArrayReader, width: int, height: int
    ) -> None:
        self.runner = runner
        self.runners = {GENERATOR: runner, BICUBIC: bicubic}
        self.grid = compute_grid(runner, level0.width, level0.height, width, height)
        self._level0 = level0
        self._tiles: SingleFlightCache[tuple[str, int, int]] = SingleFlightCache(TILE_CACHE_BYTES)

    def read(self, box: Box, restorer: str = GENERATOR) -> np.ndarray:
        """The restored ``(y, x, 3)`` uint8 pixels of an in-bounds level-0 ``box``, by ``restorer``
        (:data:`~wsistore.archive.format.RESTORERS`)."""
        return assemble(self.grid, box, lambda rc: self._tile(restorer, *rc))

    def _tile(self, restorer: str, row: int, col: int) -> np.ndarray:
        runner = self.runners[restorer]
        return self._tiles.get(
            (restorer, row, col), lambda: upscale_tile(runner, self.grid, self._level0.read, row, col)
        )

    def describe(self) -> dict[str, Any]:
        """The generator (name, weights and adaptation sha256), device, precision and grid."""
        return {
            "generator": self.runner.generator.describe(),
            "device": self.runner.device.type,
            "precision": self.runner.precision,
            "compute_tile_lr": self.grid.tile,
            "halo_lr": self.grid.halo,
        }

    def close(self) -> None:
        """Stop the runners' threads."""
        for runner in self.runners.values():
            runner.close()
