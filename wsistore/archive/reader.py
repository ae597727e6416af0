"""Reading archives: completeness checks, LR regions, associated images.

Reads never guess: a chunk the manifest lists but the store lacks, or one whose
checksum fails, raises :class:`~wsistore.errors.ArchiveError` naming the chunk. Chunks
that were never written by design read as the slide's glass colour.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from enum import StrEnum
from typing import Any

import numpy as np
import zarr

from wsistore.archive.format import (
    ASSOCIATED_GROUP,
    ICC_ARRAY,
    MANIFEST_KEY,
    MASK_ARRAY,
    ArchiveMetadata,
    LevelInfo,
)
from wsistore.archive.manifest import ArrayRecord, Manifest, chunk_id, read_shard_index, shard_chunks, shard_key
from wsistore.archive.store import PARTIAL_SUFFIX, Location
from wsistore.codecs import ImageCodec, codec_from_config, register_codecs
from wsistore.errors import ArchiveError, first_line
from wsistore.geometry import Box


class ChunkState(StrEnum):
    """How a chunk is stored."""

    WRITTEN = "written"  # stored; decoded on read
    UNIFORM = "uniform"  # every pixel was the fill value, so zarr stored nothing
    BACKGROUND = "background"  # glass, dropped by design; reads as the glass colour


class ArrayReader:
    """Validated reads from one (c, y, x) image array of an archive."""

    def __init__(
        self,
        location: Location,
        path: str,
        array: zarr.Array,
        record: ArrayRecord,
        background_rgb: tuple[int, int, int],
        fill_value: int,
    ) -> None:
        self.location = location
        self.path = path
        self.array = array
        self.record = record
        self.background_rgb = np.asarray(background_rgb, dtype=np.uint8)
        self.fill_value = fill_value
        self._uniform = set(record.uniform)
        self._index_cache: dict[str, list[tuple[int, int] | None]] = {}
        self._lock = threading.Lock()

    @property
    def height(self) -> int:
        return int(self.record.shape[1])

    @property
    def width(self) -> int:
        return int(self.record.shape[2])

    @property
    def chunk(self) -> int:
        """Chunk side (image levels have square chunks)."""
        return int(self.record.chunk_shape[1])

    @property
    def chunk_hw(self) -> tuple[int, int]:
        return int(self.record.chunk_shape[1]), int(self.record.chunk_shape[2])

    def chunk_state(self, row: int, col: int) -> str:
        cid = chunk_id((0, row, col))
        if cid in self.record.chunks:
            return ChunkState.WRITTEN
        return ChunkState.UNIFORM if cid in self._uniform else ChunkState.BACKGROUND

    def chunks_in(self, box: Box) -> list[tuple[int, int]]:
        x0, y0, x1, y1 = box
        ch, cw = self.chunk_hw
        return [(r, q) for r in range(y0 // ch, math.ceil(y1 / ch)) for q in range(x0 // cw, math.ceil(x1 / cw))]

    def read(self, box: Box) -> np.ndarray:
        """``(y, x, 3)`` uint8 pixels of ``box = (x0, y0, x1, y1)``, inside the array."""
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ValueError(f"box {box} outside {self.path} ({self.width} x {self.height})")
        chunks = self.chunks_in(box)
        states = {rc: self.chunk_state(*rc) for rc in chunks}
        written = [rc for rc, s in states.items() if s == ChunkState.WRITTEN]
        self._check_present(written)
        if written:
            try:
                data = self.array[:, y0:y1, x0:x1]
            except Exception as exc:
                raise self._locate_damage(written, exc) from exc
            out = np.ascontiguousarray(np.asarray(data).transpose(1, 2, 0))
        else:
            out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        ch, cw = self.chunk_hw
        for (r, q), state in states.items():
            if state == ChunkState.WRITTEN:
                continue
            ys = slice(max(r * ch, y0) - y0, min((r + 1) * ch, y1) - y0)
            xs = slice(max(q * cw, x0) - x0, min((q + 1) * cw, x1) - x0)
            out[ys, xs] = self.fill_value if state == ChunkState.UNIFORM else self.background_rgb
        return out

    def shard_index(self, shard_coords: tuple[int, ...]) -> list[tuple[int, int] | None]:
        key = shard_key(shard_coords)
        with self._lock:
            cached = self._index_cache.get(key)
        if cached is not None:
            return cached
        n = len(shard_chunks(self.record, shard_coords))
        name = f"{self.path}/{key}"
        try:
            size = self.location.size(name)
            tail = self.location.read_range(name, max(0, size - (16 * n + 4)), size)
        except FileNotFoundError:
            raise ArchiveError(f"{self.location.url}: shard {name} is missing") from None
        try:
            index = read_shard_index(tail, n, size)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.location.url}: shard {name} is damaged ({exc})") from None
        with self._lock:
            self._index_cache[key] = index
        return index

    def _check_present(self, chunks: list[tuple[int, int]]) -> None:
        cps = self.record.chunks_per_shard
        for r, q in chunks:
            shard = (0, r // cps[1], q // cps[2])
            index = self.shard_index(shard)
            position = (r % cps[1]) * cps[2] + (q % cps[2])
            entry = index[position]
            expected = self.record.chunks[chunk_id((0, r, q))][0]
            if entry is None or entry[1] != expected:
                raise ArchiveError(
                    f"{self.location.url}: chunk {self.path} row {r} col {q} is listed in the manifest "
                    f"but {'missing' if entry is None else 'has the wrong size'}: the archive is damaged"
                )

    def _locate_damage(self, chunks: list[tuple[int, int]], exc: Exception) -> ArchiveError:
        ch, cw = self.chunk_hw
        for r, q in chunks:
            try:
                self.array[:, r * ch : min((r + 1) * ch, self.height), q * cw : min((q + 1) * cw, self.width)]
            except Exception as inner:
                return ArchiveError(
                    f"{self.location.url}: chunk {self.path} row {r} col {q} is damaged ({first_line(inner)})"
                )
        return ArchiveError(f"{self.location.url}: cannot read {self.path}: {first_line(exc)}")


class Archive:
    """A complete wsistore archive opened for reading."""

    def __init__(self, location: Location, group: zarr.Group, metadata: ArchiveMetadata, manifest: Manifest) -> None:
        self.location = location
        self.group = group
        self.metadata = metadata
        self.manifest = manifest
        self.codec: ImageCodec = codec_from_config(metadata.codec)
        bg = tuple(metadata.tissue.background_rgb)
        self._levels = [
            ArrayReader(location, lv.path, group[lv.path], manifest.arrays[lv.path], bg, metadata.fill_value)  # type: ignore[arg-type]
            for lv in metadata.levels
        ]

    @classmethod
    def open(cls, url: str | os.PathLike[str]) -> Archive:
        """Open an archive, refusing one that is incomplete or not an archive."""
        location = Location.parse(url)
        if not location.exists():
            partial = Location.parse(str(url) + PARTIAL_SUFFIX) if location.is_local else None
            hint = (
                " (an interrupted ingest left it as .partial; rerun ingest with --resume)"
                if partial and partial.exists()
                else ""
            )
            raise ArchiveError(f"no archive at {location.url}{hint}")
        if location.is_local and location.root.endswith(PARTIAL_SUFFIX):
            raise ArchiveError(f"{location.url} is an unfinished ingest; rerun ingest with --resume")
        if not location.exists("zarr.json"):
            raise ArchiveError(f"{location.url} is not a Zarr archive (no zarr.json)")
        register_codecs()
        try:
            attrs = json.loads(location.read_bytes("zarr.json")).get("attributes", {})
        except ValueError as exc:
            raise ArchiveError(f"{location.url}: zarr.json is unreadable ({exc})") from None
        if "wsistore" not in attrs:
            raise ArchiveError(f"{location.url} is incomplete: no wsistore metadata (interrupted ingest?)")
        metadata = ArchiveMetadata.from_json(attrs["wsistore"])
        if not location.exists(MANIFEST_KEY):
            raise ArchiveError(f"{location.url} is incomplete: {MANIFEST_KEY} is missing")
        raw = location.read_bytes(MANIFEST_KEY)
        if hashlib.sha256(raw).hexdigest() != metadata.manifest_sha256:
            raise ArchiveError(f"{location.url}: {MANIFEST_KEY} does not match the archive metadata (damaged)")
        manifest = Manifest.from_bytes(raw)
        missing = [lv.path for lv in metadata.levels if lv.path not in manifest.arrays]
        if missing:
            raise ArchiveError(f"{location.url}: manifest lacks levels {missing}")
        try:
            group = location.open_group("r")
        except Exception as exc:
            raise ArchiveError(f"{location.url}: cannot open the Zarr group ({first_line(exc)})") from None
        return cls(location, group, metadata, manifest)

    # -- geometry ----------------------------------------------------------------------
    @property
    def levels(self) -> list[LevelInfo]:
        return self.metadata.levels

    def level(self, index: int) -> ArrayReader:
        return self._levels[index]

    def read_lr(self, level: int, box: Box) -> np.ndarray:
        """LR pixels of ``box`` at pyramid ``level`` (0 = the stored base), ``(y, x, 3)``."""
        return self._levels[level].read(box)

    # -- extras --------------------------------------------------------------------------
    @property
    def associated_image_names(self) -> list[str]:
        return list(self.metadata.associated_images)

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self.metadata.associated_images:
            raise KeyError(name)
        path = f"{ASSOCIATED_GROUP}/{name}"
        array = self.group[path]
        record = self.manifest.arrays[path]
        reader = ArrayReader(self.location, path, array, record, (255, 255, 255), 0)  # type: ignore[arg-type]
        return reader.read((0, 0, reader.width, reader.height))

    @property
    def icc_profile(self) -> bytes | None:
        if ICC_ARRAY not in self.manifest.arrays:
            return None
        return bytes(np.asarray(self._array(ICC_ARRAY)[:]).tobytes())

    @property
    def tissue_mask(self) -> np.ndarray:
        return np.asarray(self._array(MASK_ARRAY)[:]).astype(bool)

    def _array(self, path: str) -> zarr.Array:
        array = self.group[path]
        if not isinstance(array, zarr.Array):
            raise ArchiveError(f"{self.location.url}: {path} is not an array")
        return array

    def stored_bytes(self) -> int:
        """Bytes of every file in the archive."""
        return int(sum(self.location.fs.size(f) for f in self.location.fs.find(self.location.root)))

    def info(self) -> dict[str, Any]:
        """The summary ``wsistore info`` prints."""
        md = self.metadata
        stored = self.stored_bytes()
        pixels = md.width * md.height
        pyramid = sum(shard["bytes"] for lv in md.levels for shard in self.manifest.arrays[lv.path].shards.values())
        associated = sum(
            shard["bytes"]
            for name, record in self.manifest.arrays.items()
            if name.startswith(ASSOCIATED_GROUP)
            for shard in record.shards.values()
        )
        return {
            "archive": self.location.url,
            "format_version": md.format_version,
            "complete": True,
            "source": md.source.file_name,
            "source_bytes": md.source.bytes,
            "source_sha256": md.source.sha256,
            "archive_bytes": stored,
            "compression_ratio": md.source.bytes / stored if stored else None,
            "bits_per_source_pixel": 8 * stored / pixels,
            "pyramid_bytes": pyramid,
            "pyramid_bits_per_source_pixel": 8 * pyramid / pixels,
            "associated_bytes": associated,
            "dimensions": [md.width, md.height],
            "lr_dimensions": [md.levels[0].width, md.levels[0].height],
            "scale": md.scale,
            "levels": [[lv.width, lv.height] for lv in md.levels],
            "mpp": list(md.mpp) if md.mpp else None,
            "mpp_source": md.source.mpp_source,
            "objective_power": md.source.objective_power,
            "vendor": md.source.vendor,
            "tissue_fraction": md.tissue.fraction,
            "background_dropped": md.tissue.background_dropped,
            "chunks_written": md.tissue.chunks_written,
            "chunks_total": md.tissue.chunks_total,
            "codec": md.codec,
            "associated_images": md.associated_images,
            "stripped_images": md.stripped_images,
            "created": md.created,
        }
