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
from collections.abc import Callable
from enum import StrEnum
from functools import cached_property
from typing import Any

import google_crc32c
import numpy as np
import zarr

from wsistore.archive.format import (
    ADAPTATION_ARRAY,
    ASSOCIATED_GROUP,
    HR_ARRAY,
    ICC_ARRAY,
    LOSS_ARRAY,
    MANIFEST_KEY,
    MASK_ARRAY,
    RESTORER_ARRAY,
    RESTORERS,
    ArchiveMetadata,
    LevelInfo,
    drops_hr_lr,
    metadata_digest,
    ome_multiscales,
)
from wsistore.archive.manifest import (
    ArrayRecord,
    Manifest,
    chunk_coords,
    chunk_id,
    chunk_modes,
    read_shard_index,
    shard_chunks,
    shard_key,
    tissue_chunks,
)
from wsistore.archive.partial import unfinished
from wsistore.archive.store import Location
from wsistore.codecs import ImageCodec, codec_from_config, register_codecs
from wsistore.degradation import Downsample
from wsistore.errors import ArchiveError, WsistoreError, first_line
from wsistore.geometry import Box
from wsistore.outputs import PARTIAL_SUFFIX, work_path


class ChunkState(StrEnum):
    """How a chunk is stored."""

    WRITTEN = "written"  # stored; decoded on read
    UNIFORM = "uniform"  # every pixel was the fill value, so zarr stored nothing
    BACKGROUND = "background"  # glass, dropped by design; reads as the glass colour
    DERIVED = "derived"  # level 0 under an HR chunk (format 1.6): the HR chunk downsampled


def decode_shard(
    data: bytes,
    record: ArrayRecord,
    shard: tuple[int, int, int],
    codec: ImageCodec,
    box: Box,
    missing: Callable[[str], int | np.ndarray],
) -> np.ndarray:
    """The ``(y, x, 3)`` pixels of one image shard, ``box = (x0, y0, x1, y1)`` its extent cut to
    the array, straight from its bytes (``b""`` when it was never written), in the calling
    thread: each stored chunk's crc32c checked and its bytes decoded with the array's codec,
    as zarr reads them (the chunk's ``(y, x, c)`` image); ``missing(chunk id)`` is the colour
    of a chunk not stored. What ingest reads back and builds the lower levels from."""
    x0, y0, x1, y1 = box
    _, ch, cw = record.chunk_shape
    out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    coords = shard_chunks(record, shard)
    entries = read_shard_index(data, len(coords)) if data else [None] * len(coords)
    for (_, r, q), entry in zip(coords, entries, strict=True):
        top, left = r * ch, q * cw
        ya, yb, xa, xb = max(top, y0), min(top + ch, y1), max(left, x0), min(left + cw, x1)
        if ya >= yb or xa >= xb:
            continue  # past the array's edge
        if entry is None:
            out[ya - y0 : yb - y0, xa - x0 : xb - x0] = missing(chunk_id((0, r, q)))
            continue
        offset, nbytes = entry
        chunk = data[offset : offset + nbytes]
        if google_crc32c.value(chunk[:-4]).to_bytes(4, "little") != chunk[-4:]:
            raise ArchiveError(f"chunk row {r} col {q} of a shard just written fails its checksum when read back")
        image = codec.decode_image(chunk[:-4])
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = image[ya - top : yb - top, xa - left : xb - left]
    return out


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
        #: chunk ids read through ``derive(row, col)`` instead (level 0 of a format 1.6 hybrid)
        self._derived: set[str] = set()
        self._derive: Callable[[int, int], np.ndarray] | None = None
        self._index_cache: dict[str, list[tuple[int, int] | None]] = {}
        self._checked: set[str] = set()  # chunk ids whose place, size and crc32c match the manifest
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

    def derive_from(self, chunks: set[str], derive: Callable[[int, int], np.ndarray]) -> None:
        """Read the chunks ``chunks`` (ids not stored here) as ``derive(row, col)``, their pixels."""
        self._derived, self._derive = chunks, derive

    def chunk_state(self, row: int, col: int) -> str:
        cid = chunk_id((0, row, col))
        if cid in self.record.chunks:
            return ChunkState.WRITTEN
        if cid in self._uniform:
            return ChunkState.UNIFORM
        return ChunkState.DERIVED if cid in self._derived else ChunkState.BACKGROUND

    def chunk_box(self, row: int, col: int) -> Box:
        """The box ``(x0, y0, x1, y1)`` of chunk ``(row, col)``, cut to the array."""
        c = self.chunk
        return col * c, row * c, min((col + 1) * c, self.width), min((row + 1) * c, self.height)

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
            ya, yb, xa, xb = max(r * ch, y0), min((r + 1) * ch, y1), max(q * cw, x0), min((q + 1) * cw, x1)
            if state == ChunkState.DERIVED:
                assert self._derive is not None
                chunk = self._derive(r, q)
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = chunk[ya - r * ch : yb - r * ch, xa - q * cw : xb - q * cw]
            else:
                fill = self.fill_value if state == ChunkState.UNIFORM else self.background_rgb
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = fill
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
        except OSError as exc:
            raise ArchiveError(f"{self.location.url}: shard {name} cannot be read ({first_line(exc)})") from None
        try:
            index = read_shard_index(tail, n, size)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.location.url}: shard {name} is damaged ({exc})") from None
        with self._lock:
            self._index_cache[key] = index
        return index

    def _check_present(self, chunks: list[tuple[int, int]]) -> None:
        self.check_chunks([(0, r, q) for r, q in chunks])

    def check_chunks(self, chunks: list[tuple[int, ...]]) -> None:
        """Every chunk (global coordinates; all listed in the manifest) is where the manifest
        says, with the size and crc32c it was written with: so a chunk lost from its shard, or
        one moved or swapped (intact, so zarr's own checksum passes), is refused by name."""
        cps = self.record.chunks_per_shard
        for coords in chunks:
            cid = chunk_id(coords)
            with self._lock:
                if cid in self._checked:
                    continue
            shard = tuple(c // n for c, n in zip(coords, cps))
            position = int(np.ravel_multi_index(tuple(c % n for c, n in zip(coords, cps)), cps))
            name = self._chunk_name(coords)
            try:
                entry = self.shard_index(shard)[position]
            except ArchiveError as exc:
                raise ArchiveError(f"{self.location.url}: chunk {name} cannot be read: {_after_url(exc)}") from None
            expected_bytes, expected_crc = self.record.chunks[cid]
            if entry is None or entry[1] != expected_bytes:
                raise ArchiveError(
                    f"{self.location.url}: chunk {name} is listed in the manifest "
                    f"but {'missing' if entry is None else 'has the wrong size'}: the archive is damaged"
                )
            offset, nbytes = entry
            key = f"{self.path}/{shard_key(shard)}"
            try:
                crc = int.from_bytes(self.location.read_range(key, offset + nbytes - 4, offset + nbytes), "little")
            except (FileNotFoundError, OSError) as exc:
                raise ArchiveError(f"{self.location.url}: chunk {name} cannot be read ({first_line(exc)})") from None
            if crc != expected_crc:
                raise ArchiveError(
                    f"{self.location.url}: chunk {name} is not the chunk the manifest lists "
                    "(checksum differs: moved, swapped or damaged): the archive is damaged"
                )
            with self._lock:
                self._checked.add(cid)

    def read_all(self) -> np.ndarray:
        """The whole array as stored (small non-image arrays: mask, ICC profile), validated."""
        self.check_chunks([chunk_coords(cid) for cid in sorted(self.record.chunks)])
        try:
            return np.asarray(self.array[...])
        except Exception as exc:
            raise ArchiveError(f"{self.location.url}: {self.path} is damaged ({first_line(exc)})") from None

    def _chunk_name(self, coords: tuple[int, ...]) -> str:
        if len(coords) == 3 and not self.path.startswith(ASSOCIATED_GROUP):
            return f"{self.path} row {coords[1]} col {coords[2]}"
        return f"{self.path} [{chunk_id(coords)}]"

    def _locate_damage(self, chunks: list[tuple[int, int]], exc: Exception) -> ArchiveError:
        ch, cw = self.chunk_hw
        for r, q in chunks:
            try:
                self.array[:, r * ch : min((r + 1) * ch, self.height), q * cw : min((q + 1) * cw, self.width)]
            except Exception as inner:
                return ArchiveError(
                    f"{self.location.url}: chunk {self._chunk_name((0, r, q))} is damaged ({first_line(inner)})"
                )
        return ArchiveError(f"{self.location.url}: cannot read {self.path}: {first_line(exc)}")


class Archive:
    """A complete wsistore archive opened for reading."""

    def __init__(self, location: Location, group: zarr.Group, metadata: ArchiveMetadata, manifest: Manifest) -> None:
        self.location = location
        self.group = group
        self.metadata = metadata
        self.manifest = manifest
        try:
            self.codec: ImageCodec = codec_from_config(metadata.codec)
        except (WsistoreError, TypeError, ValueError) as exc:
            raise ArchiveError(f"{location.url}: zarr.json records a codec this wsistore cannot use: {exc}") from None
        bg = tuple(metadata.tissue.background_rgb)
        self._levels = [
            ArrayReader(location, lv.path, self._array(lv.path), manifest.arrays[lv.path], bg, metadata.fill_value)  # type: ignore[arg-type]
            for lv in metadata.levels
        ]
        if metadata.mode == "hybrid" and HR_ARRAY in manifest.arrays and self._levels:
            base, hr = self._levels[0].record, manifest.arrays[HR_ARRAY]
            derived = (set(hr.chunks) | set(hr.uniform)) - set(base.chunks) - set(base.uniform)
            self._levels[0].derive_from(derived, self._derived_lr)

    @classmethod
    def open(
        cls, url: str | os.PathLike[str], check: bool = True, storage_options: dict[str, Any] | None = None
    ) -> Archive:
        """Open an archive, refusing one that is incomplete or not an archive, or (``check``)
        whose metadata or pyramid arrays' ``zarr.json`` disagree with its manifest;
        ``storage_options`` configure a URL's filesystem (:class:`Location`)."""
        location = Location.parse(url, storage_options)
        if not location.exists():
            partial = Location.parse(work_path(location.path)) if location.is_local else None
            hint = (
                " (an interrupted ingest left it as .partial; rerun ingest with --resume)"
                if partial and partial.exists()
                else ""
            )
            raise ArchiveError(f"no archive at {location.url}{hint}")
        if location.is_local and location.root.endswith(PARTIAL_SUFFIX):
            raise ArchiveError(f"{location.url} is an unfinished ingest; rerun ingest with --resume")
        if unfinished(location, "ingest"):
            raise ArchiveError(f"{location.url} is an unfinished ingest (interrupted?); rerun it with --resume")
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
        archive = cls(location, group, metadata, manifest)
        if check:
            hr = [HR_ARRAY] if HR_ARRAY in manifest.arrays else []
            problems = archive.metadata_problems([lv.path for lv in metadata.levels] + hr)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise ArchiveError(f"{location.url} is damaged: {problems[0]}{more}; run wsistore verify")
        return archive

    def metadata_problems(self, arrays: list[str] | None = None) -> list[str]:
        """Where the group metadata disagrees with the manifest, or an array's ``zarr.json``
        (of ``arrays``, default all) with what the manifest says was written; empty if none."""
        problems = _group_problems(self.metadata, self.manifest, self.group.attrs.get("ome"))
        problems += _digest_problems(self.group.attrs.get("wsistore"), self.manifest)
        groups = set()
        for name in sorted(self.manifest.arrays) if arrays is None else arrays:
            level = name in {lv.path for lv in self.metadata.levels}
            parent = name.rsplit("/", 1)[0] if "/" in name else None
            if parent and parent not in groups:
                groups.add(parent)
                problems += _group_node_problems(self.location, parent)
            hr = name == HR_ARRAY and self.metadata.hybrid is not None
            problems += array_problems(
                self.location,
                name,
                self.manifest.arrays[name],
                self.metadata.codec if level else self.metadata.hybrid["hr_codec"] if hr else None,  # type: ignore[index]
                self.metadata.fill_value if level or hr else None,
                "float32" if name == LOSS_ARRAY else "uint8",
            )
        return problems

    # -- geometry ----------------------------------------------------------------------
    @property
    def levels(self) -> list[LevelInfo]:
        return self.metadata.levels

    def level(self, index: int) -> ArrayReader:
        return self._levels[index]

    def read_lr(self, level: int, box: Box) -> np.ndarray:
        """LR pixels of ``box`` at pyramid ``level`` (0 = the stored base), ``(y, x, 3)``."""
        return self._levels[level].read(box)

    # -- hybrid (format 1.5) -----------------------------------------------------------------
    @cached_property
    def hr(self) -> ArrayReader | None:
        """The full-resolution chunks of a hybrid archive (chunk ``(row, col)`` covers level 0's
        chunk ``(row, col)``; a chunk not stored is an SR chunk); None in an ``sr`` archive."""
        if self.metadata.mode != "hybrid":
            return None
        if HR_ARRAY not in self.manifest.arrays:
            raise ArchiveError(f"{self.location.url}: a hybrid archive whose manifest lists no {HR_ARRAY}: damaged")
        bg = tuple(self.metadata.tissue.background_rgb)
        record = self.manifest.arrays[HR_ARRAY]
        return ArrayReader(self.location, HR_ARRAY, self._array(HR_ARRAY), record, bg, self.metadata.fill_value)  # type: ignore[arg-type]

    def _derived_lr(self, row: int, col: int) -> np.ndarray:
        """Level 0's chunk ``(row, col)`` under an HR chunk (format 1.6): the HR chunk, decoded and
        cropped to the slide, downsampled (the kernel folded at its edges)."""
        assert self.hr is not None
        c, s, md = self.level(0).chunk, self.metadata.scale, self.metadata
        box = (s * c * col, s * c * row, min(s * c * (col + 1), md.width), min(s * c * (row + 1), md.height))
        return Downsample(s).reduce_region(self.hr.read(box))

    def is_hr(self, row: int, col: int) -> bool:
        """Whether level 0's chunk ``(row, col)`` is stored at full resolution (hybrid archives)."""
        hr = self.hr
        return hr is not None and hr.chunk_state(row, col) != ChunkState.BACKGROUND

    def hr_map(self) -> np.ndarray | None:
        """Which level-0 chunks are stored at full resolution (:meth:`is_hr`): bool ``(rows,
        cols)``, the loss map's grid; None in an ``sr`` archive."""
        if self.hr is None:
            return None
        base = self.level(0)
        rows, cols = -(-base.height // base.chunk), -(-base.width // base.chunk)
        return np.array([[self.is_hr(r, q) for q in range(cols)] for r in range(rows)], dtype=bool).reshape(rows, cols)

    def chunk_modes(self) -> dict[str, dict[str, int]]:
        """Tissue chunks and their stored bytes per mode (:func:`~wsistore.archive.manifest.chunk_modes`)."""
        return chunk_modes(self.manifest.arrays[self.metadata.levels[0].path], self.manifest.arrays.get(HR_ARRAY))

    # -- restorers (format 1.7) --------------------------------------------------------------
    def restorer_map(self) -> np.ndarray | None:
        """Each level-0 chunk's restorer, the index in :data:`RESTORERS` (``0`` the generator,
        ``1`` bicubic): uint8 ``(rows, cols)``, the loss map's grid; None when the archive chose
        none (every chunk is then the generator's)."""
        if self.metadata.restorers is None:
            return None
        return np.asarray(self._small(RESTORER_ARRAY).read_all(), dtype=np.uint8)

    @cached_property
    def bicubic_chunks(self) -> frozenset[tuple[int, int]]:
        """The level-0 chunks ``(row, col)`` the archive restores by bicubic interpolation."""
        choice = self.restorer_map()
        if choice is None:
            return frozenset()
        rows, cols = np.nonzero(choice == RESTORERS.index("bicubic"))
        return frozenset(zip(rows.tolist(), cols.tolist(), strict=True))

    # -- extras --------------------------------------------------------------------------
    @property
    def associated_image_names(self) -> list[str]:
        return list(self.metadata.associated_images)

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self.metadata.associated_images:
            raise KeyError(name)
        path = f"{ASSOCIATED_GROUP}/{name}"
        reader = self._small(path)
        return reader.read((0, 0, reader.width, reader.height))

    @property
    def icc_profile(self) -> bytes | None:
        if ICC_ARRAY not in self.manifest.arrays:
            return None
        return bytes(self._small(ICC_ARRAY).read_all().tobytes())

    @property
    def tissue_mask(self) -> np.ndarray:
        return self._small(MASK_ARRAY).read_all().astype(bool)

    def adaptation(self) -> bytes | None:
        """The per-slide adaptation's bytes (format 1.4, :mod:`wsistore.models.adaptation`),
        checked against the sha256 the metadata records; None when the archive has none."""
        record = self.metadata.stored_adaptation
        if record is None:
            return None
        payload = bytes(self._small(ADAPTATION_ARRAY).read_all().tobytes())
        if hashlib.sha256(payload).hexdigest() != record.get("sha256"):
            raise ArchiveError(f"{self.location.url}: the stored adaptation fails its sha256: the archive is damaged")
        return payload

    def loss_map(self) -> np.ndarray | None:
        """What the archive loses per level-0 chunk (see :mod:`wsistore.archive.format`):
        float32 ``(rows, cols)``, RMS in grey levels of the source minus the bicubic upscale of
        the stored chunk (minus the decoded HR chunk for a chunk stored at full resolution),
        NaN on background; None for an archive without one (format < 1.2)."""
        if LOSS_ARRAY not in self.manifest.arrays:
            return None
        return np.asarray(self._small(LOSS_ARRAY).read_all(), dtype=np.float32)

    def _small(self, path: str) -> ArrayReader:
        """A reader of a non-pyramid array, refused if its metadata disagrees with the manifest."""
        if path not in self.manifest.arrays:
            raise ArchiveError(f"{self.location.url}: the manifest lists no {path}: the archive is damaged")
        problems = self.metadata_problems([path])
        if problems:
            raise ArchiveError(f"{self.location.url}: {path} is damaged: {problems[0]}")
        return ArrayReader(self.location, path, self._array(path), self.manifest.arrays[path], (255, 255, 255), 0)

    def _array(self, path: str) -> zarr.Array:
        try:
            array = self.group[path]
        except Exception as exc:
            raise ArchiveError(f"{self.location.url}: cannot open {path} ({first_line(exc)}): damaged?") from None
        if not isinstance(array, zarr.Array):
            raise ArchiveError(f"{self.location.url}: {path} is not an array")
        return array

    def stored_bytes(self) -> int:
        """Bytes of every file in the archive."""
        files = self.location.fs.find(self.location.root, detail=True)  # one listing on object storage
        return int(sum(f["size"] for f in files.values()))

    def info(self) -> dict[str, Any]:
        """The summary ``wsistore info`` prints."""
        md = self.metadata
        stored = self.stored_bytes()
        pixels = md.width * md.height
        pyramid = sum(shard["bytes"] for lv in md.levels for shard in self.manifest.arrays[lv.path].shards.values())
        hr = self.manifest.arrays.get(HR_ARRAY)
        hr_bytes = sum(shard["bytes"] for shard in hr.shards.values()) if hr is not None else 0
        image = pyramid + hr_bytes
        associated = sum(
            shard["bytes"]
            for name, record in self.manifest.arrays.items()
            if name.startswith(ASSOCIATED_GROUP)
            for shard in record.shards.values()
        )
        source_associated = sum(md.source.associated_bytes.values()) if md.source.associated_bytes else None
        source_image = md.source.bytes - (source_associated or 0)
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
            "hr_bytes": hr_bytes,
            "image_bytes": image,
            "pyramid_bits_per_source_pixel": 8 * pyramid / pixels,
            "image_bits_per_source_pixel": 8 * image / pixels,
            "pyramid_ratio": source_image / pyramid if pyramid else None,
            "image_ratio": source_image / image if image else None,
            "pyramid_ratio_against": "the source's image data" if source_associated is not None else "the source file",
            "source_image_bytes": source_image,
            "associated_bytes": associated,
            "source_associated_bytes": source_associated,
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
            "loss_map": loss_summary(self.loss_map()),
            "adaptation": md.adaptation,
            "mode": md.mode,
            "chunk_modes": mode_summary(self.chunk_modes()),
            "hybrid": md.hybrid,
            "restorers": md.restorers,
        }


def mode_summary(modes: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    """Chunks per mode (:meth:`Archive.chunk_modes`) with each mode's share of the tissue chunks."""
    total = sum(m["chunks"] for m in modes.values())
    return {name: {**m, "share": m["chunks"] / total if total else 0.0} for name, m in modes.items()}


def loss_summary(loss: np.ndarray | None) -> dict[str, Any] | None:
    """Median, 95th percentile and worst of a loss map over its tissue (finite) chunks; None
    without a loss map."""
    if loss is None:
        return None
    finite = np.isfinite(loss)
    if not finite.any():
        return {"chunks": 0, "median_rms": None, "p95_rms": None, "max_rms": None, "worst_chunk": None}
    values = loss[finite].astype(np.float64)
    worst = np.unravel_index(int(np.argmax(np.where(finite, loss, -np.inf))), loss.shape)
    return {
        "chunks": int(finite.sum()),
        "median_rms": round(float(np.median(values)), 3),
        "p95_rms": round(float(np.percentile(values, 95)), 3),
        "max_rms": round(float(values.max()), 3),
        "worst_chunk": [int(worst[0]), int(worst[1])],
    }


# -- metadata against the manifest ---------------------------------------------------------------
_INDEX_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
_CRC32C = {"name": "crc32c"}
_TRANSPOSE = {"name": "transpose", "configuration": {"order": [1, 2, 0]}}


def _after_url(exc: ArchiveError) -> str:
    """An ArchiveError's message without its leading ``URL: ``."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def _read_json(location: Location, key: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        meta = json.loads(location.read_bytes(key))
    except ArchiveError:
        return None, f"{key} is missing"
    except (ValueError, OSError) as exc:
        return None, f"{key} is unreadable ({first_line(exc)})"
    if not isinstance(meta, dict):
        return None, f"{key} is not a JSON object"
    return meta, None


def _group_node_problems(location: Location, path: str) -> list[str]:
    meta, problem = _read_json(location, f"{path}/zarr.json")
    if meta is None:
        return [str(problem)]
    if meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
        return [f"{path}/zarr.json is not a Zarr v3 group"]
    return []


def array_problems(
    location: Location,
    path: str,
    record: ArrayRecord,
    codec: dict[str, Any] | None = None,
    fill_value: int | None = None,
    data_type: str = "uint8",
) -> list[str]:
    """Where ``path/zarr.json`` differs from the array the manifest records: node, shape, type,
    shard and chunk shapes, chunk keys and checksummed index; for pyramid levels also the
    codec (``codec``, the metadata's) and the fill value painted into uniform chunks."""
    key = f"{path}/zarr.json"
    meta, problem = _read_json(location, key)
    if meta is None:
        return [str(problem)]
    expected: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": record.shape,
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": record.shard_shape}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "storage_transformers": [],
    }
    out = [f"{key}: {k} is {meta.get(k)!r}, the manifest says {v!r}" for k, v in expected.items() if meta.get(k) != v]
    if codec is not None:
        level = {"fill_value": fill_value, "dimension_names": ["c", "y", "x"]}
        out += [f"{key}: {k} is {meta.get(k)!r}, the archive says {v!r}" for k, v in level.items() if meta.get(k) != v]
    codecs = meta.get("codecs")
    sharding = codecs[0] if isinstance(codecs, list) and len(codecs) == 1 and isinstance(codecs[0], dict) else {}
    config = sharding.get("configuration") if sharding.get("name") == "sharding_indexed" else None
    if not isinstance(config, dict):
        return [*out, f"{key}: codecs are not one sharding_indexed codec"]
    inner = config.get("codecs")
    want_inner = [_TRANSPOSE, codec, _CRC32C] if codec is not None else None
    if config.get("chunk_shape") != record.chunk_shape:
        out.append(f"{key}: chunk shape {config.get('chunk_shape')!r}, the manifest says {record.chunk_shape!r}")
    if config.get("index_codecs") != _INDEX_CODECS or config.get("index_location") != "end":
        out.append(f"{key}: the shard index is not little-endian, crc32c-checked, at the end")
    if not isinstance(inner, list) or not inner or inner[-1] != _CRC32C:
        out.append(f"{key}: chunks are not crc32c-checked")
    elif want_inner is not None and inner != want_inner:
        out.append(f"{key}: chunk codecs {inner!r} are not the archive's {want_inner!r}")
    return out


def _digest_problems(block: Any, manifest: Manifest) -> list[str]:
    """Where the ``wsistore`` block differs from the digest the manifest recorded (format 1.3;
    older manifests record none)."""
    if manifest.metadata_sha256 is None:
        if manifest.format_version in ("1.0", "1.1", "1.2"):
            return []
        return ["manifest.json: no digest of the wsistore metadata block (format 1.3 records one)"]
    if not isinstance(block, dict) or metadata_digest(block) != manifest.metadata_sha256:
        return ["zarr.json: the wsistore metadata block was changed after ingest (its digest is not the manifest's)"]
    return []


def _group_problems(md: ArchiveMetadata, manifest: Manifest, ome: Any) -> list[str]:
    """Where the group's ``wsistore`` (and ``ome``) attributes disagree with the manifest."""
    out = []
    src = md.source
    if [src.width, src.height] != list(src.level_dimensions[0] if src.level_dimensions else []):
        out.append(f"zarr.json: source size {src.width} x {src.height} is not its level 0 {src.level_dimensions[:1]}")
    if md.downsample.get("scale") != md.scale:
        out.append(f"zarr.json: scale {md.scale} but the downsample was {md.downsample.get('scale')}")
    size = (math.ceil(src.width / md.scale), math.ceil(src.height / md.scale)) if md.scale > 0 else None
    for i, lv in enumerate(md.levels):
        record = manifest.arrays[lv.path]
        if lv.path != str(i):
            out.append(f"zarr.json: level {i} is stored at {lv.path!r}")
        if [3, lv.height, lv.width] != record.shape or (i == 0 and (lv.width, lv.height) != size):
            out.append(f"zarr.json: level {lv.path} is {lv.width} x {lv.height}, the manifest says {record.shape}")
        if lv.downsample != md.scale * 2**i:
            out.append(f"zarr.json: level {lv.path} downsample {lv.downsample}, not {md.scale * 2**i}")
        if i and (lv.width, lv.height) != (-(-md.levels[i - 1].width // 2), -(-md.levels[i - 1].height // 2)):
            out.append(f"zarr.json: level {lv.path} is not half of level {md.levels[i - 1].path}")
        if record.chunk_shape != [3, md.chunk, md.chunk] or record.shard_shape != [3, md.shard, md.shard]:
            out.append(f"zarr.json: chunk {md.chunk} / shard {md.shard} are not level {lv.path}'s in the manifest")
    paths = [lv.path for lv in md.levels]
    stored_levels = sorted(k for k in manifest.arrays if k.isdigit())
    if sorted(paths) != stored_levels:
        out.append(f"zarr.json: levels {paths} are not the manifest's {stored_levels}")
    if md.levels:
        base = manifest.arrays[md.levels[0].path]
        grid = math.prod(base.chunk_grid[1:])
        written = len(tissue_chunks(base, manifest.arrays.get(HR_ARRAY)))
        t = md.tissue
        if (t.chunks_total, t.chunks_written, t.chunks_background) != (grid, written, grid - written):
            out.append(
                f"zarr.json: tissue chunks {t.chunks_total} / {t.chunks_written} / {t.chunks_background} "
                f"are not the manifest's {grid} / {written} / {grid - written}"
            )
    out += _hybrid_problems(md, manifest)
    out += _restorer_problems(md, manifest)
    prefix = f"{ASSOCIATED_GROUP}/"
    stored = sorted(k[len(prefix) :] for k in manifest.arrays if k.startswith(prefix))
    if sorted(md.associated_images) != stored:
        out.append(f"zarr.json: associated images {md.associated_images} are not the manifest's {stored}")
    try:
        datasets = ome["multiscales"][0]["datasets"]
    except (KeyError, IndexError, TypeError):
        datasets = None
    if datasets != ome_multiscales(md.levels, md.mpp, src.file_name)["multiscales"][0]["datasets"]:
        out.append("zarr.json: the ome multiscales do not match the levels, scale and mpp")
    return out


def _hybrid_problems(md: ArchiveMetadata, manifest: Manifest) -> list[str]:
    """Where the mode and the ``hybrid`` record disagree with the manifest (format 1.5): only a
    hybrid archive has HR chunks, each over a tissue chunk of level 0, on level 0's chunk grid at
    full resolution, and as many, with as many bytes, per mode as the record says."""
    hr = manifest.arrays.get(HR_ARRAY)
    if md.mode != "hybrid":
        return [f"zarr.json: an {md.mode} archive with a {HR_ARRAY} array"] if hr is not None or md.hybrid else []
    if hr is None or md.hybrid is None or not md.levels:
        return [f"zarr.json: a hybrid archive without its {HR_ARRAY} array or its hybrid record"]
    out = []
    base = manifest.arrays[md.levels[0].path]
    side = md.scale * md.chunk
    if hr.shape != [3, md.height, md.width] or hr.chunk_shape != [3, side, side]:
        out.append(
            f"zarr.json: {HR_ARRAY} is {hr.shape} in chunks of {hr.chunk_shape}, not level 0's grid at full size"
        )
    if hr.chunk_grid[1:] != base.chunk_grid[1:]:
        out.append(f"zarr.json: {HR_ARRAY}'s chunk grid {hr.chunk_grid} is not level 0's {base.chunk_grid}")
    full = set(hr.chunks) | set(hr.uniform)
    if drops_hr_lr(md.format_version):
        twice = sorted(full & set(base.chunks))
        if twice:
            out.append(f"zarr.json: {len(twice)} HR chunks still have their LR chunk stored ({', '.join(twice[:6])})")
    else:
        stray = sorted(full - set(base.chunks) - set(base.uniform))
        if stray:
            shown = ", ".join(stray[:6])
            out.append(f"zarr.json: {len(stray)} HR chunks lie over no stored chunk of level 0 ({shown})")
    if md.hybrid.get("modes") != chunk_modes(base, hr):
        out.append(f"zarr.json: the chunks per mode {md.hybrid.get('modes')} are not the manifest's")
    return out


def _restorer_problems(md: ArchiveMetadata, manifest: Manifest) -> list[str]:
    """Where the ``restorers`` record disagrees with the manifest (format 1.7): the choice is
    stored exactly when recorded, one cell per level-0 chunk."""
    record = manifest.arrays.get(RESTORER_ARRAY)
    if md.restorers is None:
        return [f"zarr.json: a {RESTORER_ARRAY} array without its restorers record"] if record is not None else []
    if record is None or not md.levels:
        return [f"zarr.json: a restorers record without its {RESTORER_ARRAY} array"]
    grid = manifest.arrays[md.levels[0].path].chunk_grid[1:]
    if tuple(record.shape) != grid:
        return [f"zarr.json: {RESTORER_ARRAY} is {record.shape}, the chunk grid of level 0 is {grid}"]
    return []
