"""The manifest: every chunk the writer stored, with checksums.

It separates "background by design" (never written, painted with the glass colour on
read) from "lost" (listed here but absent), and it marks the archive complete: the
group metadata records the manifest's sha256 and is written after it.

Shards follow the Zarr v3 ``sharding_indexed`` layout with the index at the end:
``n`` little-endian ``(offset, nbytes)`` uint64 pairs in C order of the inner chunks,
then the crc32c of those bytes. Every inner chunk ends with its own crc32c.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any

import google_crc32c
import numpy as np

from wsistore.archive.format import FORMAT_VERSION
from wsistore.errors import ArchiveError

_EMPTY = 2**64 - 1


def chunk_id(coords: tuple[int, ...]) -> str:
    """Manifest key of a chunk: its global chunk coordinates joined by dots."""
    return ".".join(str(c) for c in coords)


def chunk_coords(cid: str) -> tuple[int, ...]:
    """The chunk coordinates of a manifest key (:func:`chunk_id`'s inverse)."""
    return tuple(int(p) for p in cid.split("."))


@dataclass
class ArrayRecord:
    """What was written for one array."""

    shape: list[int]
    chunk_shape: list[int]
    shard_shape: list[int]
    #: shard key (relative to the array) -> {"bytes": n, "sha256": hex}
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: chunk id -> [stored bytes, crc32c of the encoded chunk]
    chunks: dict[str, list[int]] = field(default_factory=dict)
    #: chunk id -> PSNR (dB) of the stored chunk against the uncoded LR (lossy codecs)
    coding_psnr: dict[str, float] = field(default_factory=dict)
    #: chunks not stored because they were uniformly the fill value
    uniform: list[str] = field(default_factory=list)

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard_shape, self.chunk_shape))

    @property
    def shard_grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / s) for n, s in zip(self.shape, self.shard_shape))

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / c) for n, c in zip(self.shape, self.chunk_shape))

    def merge(self, shard: ShardRecord) -> None:
        """Add a shard's record; one written again (format 1.6's LR drop) replaces its chunks."""
        if shard.key in self.shards:
            gone = {chunk_id(c) for c in shard_chunks(self, shard_of_key(shard.key))} - set(shard.chunks)
            self.chunks = {k: v for k, v in self.chunks.items() if k not in gone}
            self.coding_psnr = {k: v for k, v in self.coding_psnr.items() if k not in gone}
        self.shards[shard.key] = {"bytes": shard.nbytes, "sha256": shard.sha256}
        self.chunks.update(shard.chunks)
        self.coding_psnr.update(shard.coding_psnr)
        self.uniform = sorted(set(self.uniform) | set(shard.uniform))


@dataclass
class ShardRecord:
    """One finished shard, as journalled during ingest and merged into the manifest."""

    array: str
    key: str
    nbytes: int
    sha256: str
    chunks: dict[str, list[int]]
    coding_psnr: dict[str, float] = field(default_factory=dict)
    uniform: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    """All arrays of an archive and what they hold."""

    arrays: dict[str, ArrayRecord]
    format_version: str = FORMAT_VERSION
    #: :func:`~wsistore.archive.format.metadata_digest` of the group's ``wsistore`` block (1.3)
    metadata_sha256: str | None = None

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "format": "wsistore-manifest",
            "format_version": self.format_version,
            "arrays": {k: asdict(v) for k, v in sorted(self.arrays.items())},
        }
        if self.metadata_sha256 is not None:
            data["metadata_sha256"] = self.metadata_sha256
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
            arrays = {k: ArrayRecord(**v) for k, v in raw["arrays"].items()}
            return cls(arrays=arrays, format_version=raw["format_version"], metadata_sha256=raw.get("metadata_sha256"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"manifest is unreadable: {exc}") from None


def shard_key(shard_coords: tuple[int, ...]) -> str:
    """Key of a shard relative to its array (default ``/``-separated chunk keys)."""
    return "c/" + "/".join(str(c) for c in shard_coords)


def shard_of_key(key: str) -> tuple[int, ...]:
    """The shard coordinates of a shard key (:func:`shard_key`'s inverse)."""
    return tuple(int(p) for p in key.removeprefix("c/").split("/"))


def shard_chunks(record: ArrayRecord, shard_coords: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Global coordinates of the chunks inside a shard, in the index's C order
    (including positions past the array edge, which are never written)."""
    cps = record.chunks_per_shard
    return [
        tuple(s * n + i for s, n, i in zip(shard_coords, cps, inner)) for inner in product(*(range(n) for n in cps))
    ]


def read_shard_index(data: bytes, n_chunks: int, shard_bytes: int | None = None) -> list[tuple[int, int] | None]:
    """Parse a shard's index: ``(offset, nbytes)`` per inner chunk, None where empty.

    ``data`` is the whole shard, or just its tail when ``shard_bytes`` gives its size.
    """
    size = 16 * n_chunks + 4
    total = len(data) if shard_bytes is None else shard_bytes
    if len(data) < size:
        raise ArchiveError("shard is truncated (shorter than its index)")
    raw, stored = data[-size:-4], data[-4:]
    if google_crc32c.value(raw).to_bytes(4, "little") != stored:
        raise ArchiveError("shard index checksum mismatch")
    pairs = np.frombuffer(raw, dtype="<u8").reshape(n_chunks, 2)
    out: list[tuple[int, int] | None] = []
    for offset, nbytes in pairs.tolist():
        if offset == _EMPTY and nbytes == _EMPTY:
            out.append(None)
        elif offset + nbytes > total - size:
            raise ArchiveError("shard index points past the end of the shard")
        else:
            out.append((int(offset), int(nbytes)))
    return out


def pack_shard(n_chunks: int, chunks: dict[int, bytes]) -> bytes:
    """A shard of the inner chunks given at their positions (C order) as stored (checksum
    included), packed in that order under the index; the other positions empty."""
    index = np.full((n_chunks, 2), _EMPTY, dtype="<u8")
    body = bytearray()
    for i in sorted(chunks):
        index[i] = (len(body), len(chunks[i]))
        body += chunks[i]
    raw = index.tobytes()
    return bytes(body) + raw + google_crc32c.value(raw).to_bytes(4, "little")


def without_chunks(data: bytes, n_chunks: int, positions: set[int]) -> bytes:
    """A shard's bytes with its inner chunks at ``positions`` (C order) removed: the other chunks'
    bytes unchanged, packed in order, under a new index."""
    entries = enumerate(read_shard_index(data, n_chunks))
    return pack_shard(
        n_chunks, {i: data[e[0] : e[0] + e[1]] for i, e in entries if e is not None and i not in positions}
    )


def describe_shard(array: str, record: ArrayRecord, shard_coords: tuple[int, ...], data: bytes) -> ShardRecord:
    """Checksums of a shard's bytes and of every chunk stored in it."""
    chunks: dict[str, list[int]] = {}
    coords = shard_chunks(record, shard_coords)
    for chunk, entry in zip(coords, read_shard_index(data, len(coords))):
        if entry is not None:
            offset, nbytes = entry
            trailer = data[offset + nbytes - 4 : offset + nbytes]
            chunks[chunk_id(chunk)] = [nbytes, int.from_bytes(trailer, "little")]
    return ShardRecord(
        array=array,
        key=shard_key(shard_coords),
        nbytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunks=chunks,
    )


def tissue_chunks(base: ArrayRecord, hr: ArrayRecord | None) -> set[str]:
    """The ids of level 0's chunks that are not background: stored (or uniform) at level 0, or
    (format 1.6) stored at full resolution only."""
    full = set(hr.chunks) | set(hr.uniform) if hr is not None else set()
    return set(base.chunks) | set(base.uniform) | full


def chunk_modes(base: ArrayRecord, hr: ArrayRecord | None) -> dict[str, dict[str, int]]:
    """Chunks and stored bytes per mode of level 0 (``base``) given the HR chunks (``hr``; None in
    an ``sr`` archive): ``sr``, the tissue chunks the generator restores (their LR bytes); ``hr``,
    those stored at full resolution (their HR bytes, and ``lr_bytes``, their LR chunks' where
    stored too: format 1.5). Bytes are as stored, each chunk's crc32c included."""
    tissue = tissue_chunks(base, hr)
    full = set(hr.chunks) | set(hr.uniform) if hr is not None else set()

    def lr_bytes(ids: set[str]) -> int:
        return sum(base.chunks[i][0] for i in ids if i in base.chunks)

    return {
        "sr": {"chunks": len(tissue - full), "bytes": lr_bytes(tissue - full)},
        "hr": {
            "chunks": len(full),
            "bytes": sum(size for size, _ in hr.chunks.values()) if hr is not None else 0,
            "lr_bytes": lr_bytes(full),
        },
    }
