"""Ingest: slide -> 4x downsampled, sharded Zarr v3 archive.

Data flow: tissue mask (one pass over a low level) -> one Dask task per LR shard, the
biggest first (read each tissue chunk's level-0 window with halo, downsample, assemble the
shard, write it, read it back and check it) -> 2x pyramid levels from the stored base ->
per-slide adaptation of the generator (an :class:`Adapter`, tuned on the stored level 0
and the source: :class:`wsistore.training.adapt.AdaptOptions`) -> associated images, mask,
loss map, ICC profile -> manifest -> group metadata (last) -> rename into place. A shard
reads level 0 in blocks of whole source tiles (:class:`SourceBlocks`), kept from one chunk
row to the next, so each tile is decoded once although the chunks' windows overlap by the
halo. A shard's chunks are encoded in parallel
on zarr's codec threads. The archive's bytes depend on the settings alone, never on the
workers or the blocks.

While a base shard is read, each chunk's source pixels are summarised for the loss map
(:class:`wsistore.degradation.SourceLoss`), finished against the decoded chunk once the
shard is stored: one value per level-0 chunk, without keeping the source pixels. An HR chunk's
cell is its own loss instead (format 1.5), measured once its HR shard is stored.

``mode="hybrid"`` adds the passes of :mod:`wsistore.archive.hybrid_ingest` after the adaptation:
each tissue chunk's options are measured (what restore makes of its stored LR, through an
:class:`Upscaler` handed in like the :class:`Adapter`, and its source pixels probed at each HR
setting), one lambda for the slide settles each chunk's option (format 1.8), the HR chunks are
written to ``hr/`` and their LR chunks removed from level 0's shards (format 1.6).

Each finished shard is journalled, so ``resume`` skips it after an interruption; so is the
adaptation once tuned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import dask
import dask.threaded
import numpy as np
import zarr
from dask.delayed import Delayed
from zarr.codecs import BytesCodec, Crc32cCodec, TransposeCodec

from wsistore._version import software_versions
from wsistore.archive.format import (
    ADAPTATION_ARRAY,
    ALIGN,
    ASSOCIATED_GROUP,
    BICUBIC,
    DEFAULT_CHUNK,
    FORMAT_VERSION,
    GENERATOR,
    HR_ARRAY,
    ICC_ARRAY,
    LOSS_ARRAY,
    MANIFEST_KEY,
    MASK_ARRAY,
    MODES,
    RESTORER_ARRAY,
    RESTORERS,
    ArchiveMetadata,
    LevelInfo,
    SourceInfo,
    TissueSummary,
    choose_shard,
    file_sha256_properties,
    is_wsistore_archive,
    level_sizes,
    metadata_digest,
    ome_multiscales,
)
from wsistore.archive.hybrid_choice import matched_lambda, sse
from wsistore.archive.hybrid_ingest import HybridPasses
from wsistore.archive.manifest import (
    ArrayRecord,
    Manifest,
    ShardRecord,
    chunk_coords,
    chunk_id,
    describe_shard,
    shard_key,
    tissue_chunks,
)
from wsistore.archive.partial import PartialOutput
from wsistore.archive.reader import ArrayReader, decode_shard
from wsistore.archive.restorer_choice import ChoicePolicy, choice_record, choose_restorers, gain_db
from wsistore.archive.store import Location
from wsistore.codecs import DEFAULT_CODEC, ImageCodec, JpegXlCodec, make_codec, parse_codec, register_codecs
from wsistore.degradation import Downsample, SourceLoss, read_window
from wsistore.dicom import identifying
from wsistore.dicomweb import fetched_series, is_dicomweb_url
from wsistore.errors import ArchiveError, InputError, WsistoreError, first_line, storage_errors
from wsistore.geometry import Box
from wsistore.outputs import OutputKind
from wsistore.progress import Progress
from wsistore.psnr import psnr_from_mse
from wsistore.readers import (
    FRAME_ORDER_PROPERTY,
    FRAME_ORDERS,
    SlideReader,
    open_slide,
    source_files,
    stored_associated_bytes,
)
from wsistore.tissue import CELL, DARKER_BY, DILATE_CELLS, SATURATED_BY, TissueMask, detect_tissue

#: Side of a block of source pixels read at once when the slide's tiles are unknown or
#: odd-sized; tiled slides are read in blocks of whole tiles, at least this many pixels wide.
SOURCE_BLOCK = 512
#: Images whose content can identify a patient; ``strip_label`` drops them.
IDENTIFYING_IMAGES = ("label", "macro")
#: Journal entries of finished shards.
SHARD_KIND = "shard"
#: What ingest writes, and so all that ``--overwrite`` lets it replace.
INGEST_OUTPUT = OutputKind("ingest", "a wsistore archive", is_wsistore_archive)
#: Key of a base shard's loss map values in its journal entry (one durable line per shard).
LOSS_KEY = "loss_map"
#: Journal entry of the tuned adaptation.
ADAPTATION_KIND = "adaptation"
#: Journal entry of the restorer choice (``--mode sr``).
RESTORER_KIND = "restorers"
#: Why an adaptation its rule kept is not stored.
UNUSED_ADAPTATION = "no chunk is restored by the generator (each at full resolution or by bicubic)"
#: The HR settings hybrid ingest weighs each chunk at unless told otherwise: AVIF 4:4:4 at speed 6
#: (on the real slides of BENCHMARKS.md speed 8 costs 1-2 dB at equal bytes, 4:2:0 0.1-0.4 dB
#: more) at every other level from 4 to 44, and 45: about every quantizer step AVIF has there
#: (levels come in pairs of one quantizer), so that a slide whose chunks all go to full resolution
#: meets AVIF's curve between its levels too (a ladder of nine levels, 4-15 apart, lost up to
#: 0.04 dB against AVIF at a level between two of its own). The rungs that may be probed are 8
#: levels apart (4, 12, ..., 44, 45), the levels between them predicted from two probed rungs
#: (BENCHMARKS.md, "Equal slopes"; :mod:`wsistore.archive.hybrid_choice`).
DEFAULT_HR_CODECS = tuple(f"avif:level={level},speed=6" for level in (*range(4, 45, 2), 45))
#: lambda of the hybrid decision at the default LR codec (AVIF quality 75), in grey levels squared
#: of SSE per bit (:data:`wsistore.archive.format.HR_RULE`): the SR path's slope there
#: (:func:`wsistore.archive.hybrid_choice.matched_lambda`).
DEFAULT_HR_LAMBDA = matched_lambda(parse_codec(DEFAULT_CODEC))


#: A stored adaptation: its bytes and its record (:attr:`ArchiveMetadata.adaptation`), or None.
Stored = tuple[bytes, dict[str, Any]] | None


class Adapter(Protocol):
    """What ingest calls, once the pyramid is stored, to tune the per-slide adaptation of the
    generator (format 1.4). The models live in a later layer, so the writer is handed one:
    :class:`wsistore.training.adapt.AdaptOptions`, which the CLI passes by default."""

    @property
    def steps(self) -> int:
        """The steps asked for (the progress bar's length)."""
        ...

    def settings(self) -> dict[str, Any]:
        """JSON of the settings: ``--resume`` reuses a journalled result only when they are equal."""
        ...

    def tune_stored(
        self, level0: ArrayReader, slide: SlideReader, scale: int, codec: ImageCodec, on_step: Callable[[], None]
    ) -> tuple[bytes, dict[str, Any]]:
        """The adaptation's bytes (empty when none was tuned) and its record, whose ``kept``
        says whether the bytes are stored (:attr:`ArchiveMetadata.adaptation`); ``codec`` is
        level 0's (the base generator is the default for it)."""
        ...


class SuperResolved(Protocol):
    """The SR path of a hybrid ingest over one stored level 0: what restore outputs."""

    def read(self, box: Box, restorer: str = GENERATOR) -> np.ndarray:
        """The restored ``(y, x, 3)`` uint8 pixels of an in-bounds level-0 ``box``, exactly as
        restore computes them by ``restorer`` (same generator, compute grid and LR)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON of what restores: generator, weights and adaptation sha256, device."""
        ...

    def close(self) -> None:
        """Release the generator."""
        ...


class Upscaler(Protocol):
    """What ingest calls, once level 0 is stored and the adaptation tuned, for the SR path's
    pixels: to choose each chunk's restorer (format 1.7) and, in hybrid mode, its path (format
    1.5). The models live in a later layer, so the writer is handed one:
    :class:`wsistore.restoration.hybrid.SrPath`, which the CLI passes."""

    def settings(self) -> dict[str, Any]:
        """JSON of the settings: ``--resume`` continues only when they are equal."""
        ...

    def open(self, level0: ArrayReader, size: tuple[int, int], codec: ImageCodec, stored: Stored) -> SuperResolved:
        """The SR path over ``level0`` restored to ``size = (width, height)``; ``codec`` is level
        0's, ``stored`` the stored adaptation's bytes and record (None when none is stored)."""
        ...


@dataclass(frozen=True)
class IngestOptions:
    """Settings of one ingest; validated on construction."""

    scale: int = 4
    codec: ImageCodec = field(default_factory=make_codec)
    chunk: int = DEFAULT_CHUNK
    shard: int | None = None  # None: chosen from the slide size and workers
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    keep_background: bool = False
    strip_label: bool = False
    overwrite: bool = False
    resume: bool = False
    reader: str = "auto"
    #: ``row`` or ``column``: the frames of a DICOM instance that leaves their order unsaid
    #: (None: as their seams tell; :func:`wsistore.readers.dicom.place_frames`)
    frame_order: str | None = None
    progress: bool = True
    mpp: tuple[float, float] | None = None  # micrometres per pixel (x, y): replaces the source's, recorded as given
    #: tunes the per-slide adaptation (:class:`Adapter`); None: do not adapt
    adapt: Adapter | None = None
    #: ``sr`` (every chunk restored by the generator) or ``hybrid`` (format 1.5: each chunk's
    #: cheaper path; needs ``upscaler``)
    mode: str = "sr"
    #: the settings of a hybrid archive's full-resolution chunks each chunk is weighed at: one
    #: codec, its quality level apart (decoding does not depend on it)
    hr_codecs: tuple[ImageCodec, ...] = field(
        default_factory=lambda: tuple(parse_codec(text) for text in DEFAULT_HR_CODECS)
    )
    #: lambda of the hybrid decision, grey levels squared per bit (:mod:`wsistore.archive.hybrid_choice`);
    #: None: matched to the LR codec's slope at its quality
    hr_lambda: float | None = None
    #: the level-0 rate a hybrid archive aims at, bits per source pixel: its lambda is then found
    #: (the bytes chosen at most this); None: ``hr_lambda``
    hr_target_bpp: float | None = None
    #: the SR path ingest measures (:class:`Upscaler`): each chunk's restorer is chosen (format
    #: 1.7) when one is given, and hybrid mode needs one
    upscaler: Upscaler | None = None
    #: how the restorer choice samples (``--mode sr``; hybrid measures every chunk)
    restorer_policy: ChoicePolicy = field(default_factory=ChoicePolicy)
    #: the source as the user named it, where the files read are a copy of it (a series fetched
    #: from a DICOMweb URL), and that copy's identity (what ``--resume`` compares, in place of
    #: the file's name and time)
    source_name: str | None = None
    source_id: str | None = None

    def __post_init__(self) -> None:
        if self.scale not in (2, 4, 8):
            raise InputError(f"scale must be 2, 4 or 8, got {self.scale}")
        if self.chunk % ALIGN or not 64 <= self.chunk <= 1024:
            raise InputError(f"chunk must be a multiple of {ALIGN} between 64 and 1024, got {self.chunk}")
        if self.shard is not None and (self.shard % self.chunk or self.shard < self.chunk):
            raise InputError(f"shard must be a multiple of the chunk ({self.chunk}), got {self.shard}")
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if self.mpp is not None and not (len(self.mpp) == 2 and all(0 < v < 1000 for v in self.mpp)):
            raise InputError(
                f"mpp must be two sizes in micrometres per pixel, each above 0 and below 1000, got {self.mpp}"
            )
        if self.frame_order not in (None, *FRAME_ORDERS):
            raise InputError(f"frame order must be {' or '.join(FRAME_ORDERS)}, got {self.frame_order!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be {' or '.join(MODES)}, got {self.mode!r}")
        if self.mode == "hybrid" and self.upscaler is None:
            raise InputError("mode hybrid needs an upscaler (the SR path it measures)")
        if self.hr_lambda is not None and not 0 <= self.hr_lambda < float("inf"):
            raise InputError(f"the hybrid lambda must be a number at least 0, got {self.hr_lambda}")
        if self.hr_target_bpp is not None and not 0 < self.hr_target_bpp < 24:
            raise InputError(f"the hybrid target must be above 0 and below 24 bits per pixel, got {self.hr_target_bpp}")
        if not self.hr_codecs:
            raise InputError("hybrid mode needs at least one HR codec setting")
        first = self.hr_codecs[0]
        for codec in self.hr_codecs:
            key = codec.quality_key
            same = {k: v for k, v in codec.config().items() if k != key}
            if type(codec) is not type(first) or same != {k: v for k, v in first.config().items() if k != key}:
                raise InputError(
                    f"the HR settings must be one codec at several {key or 'quality'} values, got "
                    f"{first.describe()} and {codec.describe()}"
                )


@dataclass
class IngestResult:
    """What an ingest produced."""

    archive: str
    source_pixels: int
    chunks_written: int
    chunks_total: int
    shards_skipped: int
    #: the adaptation's record (:attr:`ArchiveMetadata.adaptation`), None when not adapting
    adaptation: dict[str, Any] | None = None
    #: chunks stored at full resolution (hybrid mode), None in ``sr`` mode
    hr_chunks: int | None = None


def ingest(
    slide_path: str | os.PathLike[str],
    archive: str | os.PathLike[str],
    options: IngestOptions | None = None,
    storage_options: dict[str, Any] | None = None,
) -> IngestResult:
    """Archive ``slide_path`` at ``archive`` (a directory or an fsspec URL, whose filesystem
    ``storage_options`` configure); see the module docstring for the steps."""
    options = options or IngestOptions()
    if is_dicomweb_url(slide_path):  # a series on a DICOMweb server: fetched, then read as a DICOM folder
        with fetched_series(os.fspath(slide_path), near=archive) as fetched:
            named = replace(options, source_name=str(fetched.url), source_id=fetched.identity)
            return ingest(fetched.folder, archive, named, storage_options)
    register_codecs()
    slide = open_slide(slide_path, options.reader, options.frame_order)
    try:
        return _Ingest(slide, Path(slide_path), archive, options, storage_options).run()
    finally:
        slide.close()


class _Ingest:
    """State of one ingest run (kept off the public API)."""

    def __init__(
        self,
        slide: SlideReader,
        slide_path: Path,
        archive: str | os.PathLike[str],
        options: IngestOptions,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.slide = slide
        self.slide_path = slide_path
        self.options = options
        self.down = Downsample(options.scale)
        self.width, self.height = slide.dimensions
        self.lr_width, self.lr_height = self.down.lr_size(self.width, self.height)
        self.shard = options.shard or choose_shard(self.lr_width, self.lr_height, options.chunk, options.workers)
        self.dest = PartialOutput.prepare(
            archive,
            INGEST_OUTPUT,
            options.overwrite,
            options.resume,
            storage_options,
            [*source_files(slide_path), *slide.files],
        )
        self.work: Location = self.dest.work
        self.records: dict[str, ArrayRecord] = {}
        self.done: set[tuple[str, str]] = set()
        self.resumed: list[ShardRecord] = []  # intact shards found by --resume
        self.journal_lock = threading.Lock()
        self._progress = Progress(0, "ingest", "chunk", enabled=False)
        c = options.chunk
        self.shard_losses: dict[str, dict[str, float]] = {}  # loss values awaiting their shard's journal line
        self.loss = np.full((-(-self.lr_height // c), -(-self.lr_width // c)), np.nan, dtype=np.float32)
        self.hr_loss = np.full_like(self.loss, np.nan)  # the HR chunks' own loss (hybrid), NaN elsewhere
        self.hybrid: HybridPasses | None = None  # hybrid mode's passes, once run

    # -- the steps ------------------------------------------------------------------------
    def run(self) -> IngestResult:
        sha_future = ThreadPoolExecutor(1).submit(self.slide.fingerprint)
        try:
            return self._run(sha_future)
        except storage_errors() as exc:  # a full disk, a lost connection to object storage
            raise WsistoreError(
                f"cannot write {self.work.url}: {getattr(exc, 'strerror', None) or first_line(exc)}; "
                "the partial archive is kept, rerun with --resume once fixed"
            ) from exc
        finally:
            self.dest.release()  # landing already released it; a failure must not hold it

    def _run(self, sha_future: Future[tuple[str, dict[str, str]]]) -> IngestResult:
        self.dest.start(self._settings())
        skipped = self._keep_intact_shards()
        mask = detect_tissue(self.slide, workers=self.options.workers)
        sizes = level_sizes(self.lr_width, self.lr_height, self.options.chunk)
        group = self.work.open_group("a")
        arrays = [self.image_array(group, str(i), w, h, mask) for i, (w, h) in enumerate(sizes)]
        levels = [
            LevelInfo(path=str(i), width=w, height=h, downsample=self.options.scale * 2**i)
            for i, (w, h) in enumerate(sizes)
        ]

        keep = self._chunks_to_keep(mask)
        self._write_pyramid(arrays, keep, mask)
        payload, adaptation = self._adapt(arrays[0], mask)
        stored: Stored = (payload, adaptation) if payload is not None and adaptation is not None else None
        hybrid = None
        if self.options.mode == "hybrid":
            self.hybrid = HybridPasses(self, group, arrays[0], keep, mask)
            hybrid = self.hybrid.run(stored)
        level0 = ArrayReader(self.work, "0", arrays[0], self.records["0"], mask.background_rgb, mask.fill_value)
        restorers = self._choose_restorers(group, level0, keep, stored)
        unused = restorers is not None and not restorers["chunks"][GENERATOR]
        if payload is not None and adaptation is not None and unused:
            # kept by its rule, but no chunk is restored by the generator: its bytes would buy nothing
            adaptation = adaptation | {"kept": False, "reason": UNUSED_ADAPTATION}
            payload = None
        if payload is not None:
            self._write_small(group, ADAPTATION_ARRAY, np.frombuffer(payload, dtype=np.uint8), fill_value=0)

        associated, stripped = self._write_associated(group)
        self._write_small(group, MASK_ARRAY, mask.tissue.astype(np.uint8))
        loss = np.where(np.isnan(self.hr_loss), self.loss, self.hr_loss)  # each chunk's stored path
        self._write_small(group, LOSS_ARRAY, loss, fill_value=float("nan"))
        icc = self.slide.icc_profile
        if icc:
            self._write_small(group, ICC_ARRAY, np.frombuffer(icc, dtype=np.uint8))

        base = self.records["0"]
        tissue = TissueSummary(
            method=f"darkest/most saturated pixel per {CELL}px cell vs glass colour "
            f"(darker by {DARKER_BY} or saturated by {SATURATED_BY}), dilated {DILATE_CELLS} cells",
            mask_cell=CELL,
            fraction=mask.fraction,
            background_rgb=list(mask.background_rgb),
            chunks_total=int(keep.size),
            chunks_written=len(tissue_chunks(base, self.records.get(HR_ARRAY))),
            chunks_background=int(keep.size) - len(tissue_chunks(base, self.records.get(HR_ARRAY))),
            keep_background=self.options.keep_background,
        )
        metadata = ArchiveMetadata(
            format_version=FORMAT_VERSION,
            scale=self.options.scale,
            downsample=self.down.describe(),
            codec=self.options.codec.to_dict(),
            chunk=self.options.chunk,
            shard=self.shard,
            fill_value=mask.fill_value,
            levels=levels,
            source=self._source_info(*sha_future.result()),
            tissue=tissue,
            associated_images=associated,
            stripped_images=stripped,
            manifest_sha256="",
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            software=_software(self.slide.name),
            adaptation=adaptation,
            mode=self.options.mode,
            hybrid=hybrid,
            restorers=restorers,
        )
        # the manifest covers the metadata block (its digest), the block the manifest (its sha256)
        manifest = Manifest(arrays=self.records, metadata_sha256=metadata_digest(metadata.to_json()))
        manifest_bytes = manifest.to_bytes()
        self.work.write_bytes(MANIFEST_KEY, manifest_bytes)
        metadata = replace(metadata, manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest())
        group.attrs.update(
            {"ome": ome_multiscales(levels, metadata.mpp, self.slide_path.name), "wsistore": metadata.to_json()}
        )
        self.dest.commit()
        return IngestResult(
            archive=self.dest.final.url,
            source_pixels=self.width * self.height,
            chunks_written=tissue.chunks_written,
            chunks_total=tissue.chunks_total,
            shards_skipped=skipped,
            adaptation=adaptation,
            hr_chunks=hybrid["modes"]["hr"]["chunks"] if hybrid else None,
        )

    # -- journal -----------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        """What must be the same for ``resume`` to continue an interrupted ingest."""
        stat = self.slide_path.stat()
        return {
            "format_version": FORMAT_VERSION,
            "source": self.options.source_name or self.slide_path.name,
            "source_bytes": self._source_bytes(),
            "source_mtime": self.options.source_id or stat.st_mtime,
            "scale": self.options.scale,
            "codec": self.options.codec.to_dict(),
            "chunk": self.options.chunk,
            "shard": self.shard,
            "keep_background": self.options.keep_background,
            "frame_order": self.slide.properties.get(FRAME_ORDER_PROPERTY),
            "mode": self.options.mode,
            **({"hybrid": self._hybrid_settings()} if self.options.mode == "hybrid" else {}),
            **({"restorers": self._restorer_settings()} if self.options.upscaler is not None else {}),
        }

    def _hybrid_settings(self) -> dict[str, Any]:
        upscaler = self.options.upscaler
        return {
            "hr_codecs": [codec.to_dict() for codec in self.options.hr_codecs],
            "lambda": self.options.hr_lambda,
            "target_bpp": self.options.hr_target_bpp,
            "sr": upscaler.settings() if upscaler is not None else None,
        }

    def _restorer_settings(self) -> dict[str, Any]:
        upscaler = self.options.upscaler
        return {
            "policy": self.options.restorer_policy.settings(),
            "sr": upscaler.settings() if upscaler is not None else None,
        }

    def _keep_intact_shards(self) -> int:
        """On resume, keep the journalled shards whose bytes are still intact; returns how many."""
        for data in self.dest.done(SHARD_KIND).values():
            try:
                fields = dict(data)
                losses = fields.pop(LOSS_KEY, {})
                rec = ShardRecord(**fields)
            except (TypeError, ValueError):
                continue
            path = f"{rec.array}/{rec.key}"
            if self.work.exists(path) and hashlib.sha256(self.work.read_bytes(path)).hexdigest() == rec.sha256:
                self.resumed.append(rec)
                target = self.hr_loss if rec.array == HR_ARRAY else self.loss
                for cid, value in losses.items():
                    _, r, q = chunk_coords(cid)
                    target[r, q] = value
        return len(self.resumed)

    def journal_shard(self, rec: ShardRecord) -> None:
        """A finished shard, with its loss map values when it is a base or HR shard (one line)."""
        name = f"{rec.array}/{rec.key}"
        with self.journal_lock:
            losses = self.shard_losses.pop(name, None)
            data = rec.to_json() if losses is None else {**rec.to_json(), LOSS_KEY: losses}
            self.dest.journal(SHARD_KIND, name, data)
            self.records[rec.array].merge(rec)
            self.done.add((rec.array, rec.key))

    # -- arrays ------------------------------------------------------------------------
    def image_array(
        self,
        group: zarr.Group,
        path: str,
        width: int,
        height: int,
        mask: TissueMask,
        sides: tuple[int, int] | None = None,
        codec: ImageCodec | None = None,
    ) -> zarr.Array:
        """An image array (a pyramid level, or with ``sides = (chunk, shard)`` and ``codec`` the
        HR chunks), created or, on resume, reopened with the shards already journalled."""
        c, s = sides or (self.options.chunk, self.shard)
        shape = (3, height, width)
        if path in group:
            array = group[path]
            if not isinstance(array, zarr.Array) or tuple(array.shape) != shape:
                raise ArchiveError(f"cannot resume: {path} is not the {shape} array this ingest writes")
        else:
            array = group.create_array(
                path,
                shape=shape,
                chunks=(3, c, c),
                shards=(3, s, s),
                dtype="uint8",
                filters=[TransposeCodec(order=(1, 2, 0))],
                serializer=codec or self.options.codec,
                compressors=[Crc32cCodec()],
                fill_value=mask.fill_value,
                dimension_names=("c", "y", "x"),
            )
        record = ArrayRecord(shape=list(shape), chunk_shape=[3, c, c], shard_shape=[3, s, s])
        self.records[path] = record
        for rec in self.resumed:
            if rec.array == path:
                record.merge(rec)
                self.done.add((rec.array, rec.key))
        return array

    def _chunks_to_keep(self, mask: TissueMask) -> np.ndarray:
        c = self.options.chunk
        grid = (-(-self.lr_height // c), -(-self.lr_width // c))
        if self.options.keep_background:
            return np.ones(grid, dtype=bool)
        return mask.chunks_with_tissue(c * self.options.scale, grid)

    # -- base level --------------------------------------------------------------------
    def _write_pyramid(self, arrays: list[zarr.Array], keep: np.ndarray, mask: TissueMask) -> None:
        """Every shard of every level in one task graph: a lower level's shard runs as soon as
        the (up to) 2 x 2 shards above it are written, so the levels overlap the base."""
        per = self.shard // self.options.chunk
        shards = []
        for sy in range(-(-keep.shape[0] // per)):
            for sx in range(-(-keep.shape[1] // per)):
                count = int(keep[sy * per : (sy + 1) * per, sx * per : (sx + 1) * per].sum())
                if count and ("0", shard_key((0, sy, sx))) not in self.done:
                    shards.append((count, sy, sx))
        # dask's threads run ready tasks from the highest key down: the shards with the most
        # chunks first, so that no big one is left for one worker at the end
        tasks: dict[tuple[int, int, int], Delayed] = {}
        for i, (_, sy, sx) in enumerate(sorted(shards, key=lambda shard: (shard[0], -shard[1], -shard[2]))):
            tasks[0, sy, sx] = dask.delayed(self._base_shard, pure=False)(
                arrays[0], keep, mask, sy, sx, dask_key_name=f"base-shard-{i:06d}"
            )
        for level in range(1, len(arrays)):
            _, height, width = arrays[level].shape
            for sy in range(-(-height // self.shard)):
                for sx in range(-(-width // self.shard)):
                    if (str(level), shard_key((0, sy, sx))) in self.done:
                        continue
                    above = [tasks[k] for k in _quad(level - 1, sy, sx) if k in tasks]
                    tasks[level, sy, sx] = dask.delayed(self._level_shard, pure=False)(
                        arrays[level], arrays[level - 1], mask, sy, sx, above, dask_key_name=f"level-{level}-{sy}-{sx}"
                    )
        total = sum(count for count, _, _ in shards)
        self._progress = Progress(total, "ingest", "chunk", self.options.progress)
        with self._progress:
            # the threaded scheduler itself: naming it ("threads") makes dask import distributed
            # to look for a client, a quarter of a second before the first shard starts
            dask.compute(*tasks.values(), scheduler=dask.threaded.get, num_workers=self.options.workers)

    def _base_shard(self, array: zarr.Array, keep: np.ndarray, mask: TissueMask, sy: int, sx: int) -> None:
        c, s = self.options.chunk, self.shard
        x0, y0 = sx * s, sy * s
        x1, y1 = min(x0 + s, self.lr_width), min(y0 + s, self.lr_height)
        fill = mask.fill_value
        buffer = np.full((y1 - y0, x1 - x0, 3), fill, dtype=np.uint8)
        kept = []
        sources: dict[tuple[int, int], SourceLoss] = {}
        scale = self.options.scale
        blocks = SourceBlocks(self.read_level0, self.width, self.height, source_block(self.slide))
        for r in range(y0 // c, -(-y1 // c)):
            columns = range(x0 // c, -(-x1 // c))
            for q0, q1 in _runs([bool(keep[r, q]) for q in columns], x0 // c):
                # the row's run of tissue chunks in one read of the source blocks it lacks
                run = (q0 * c, r * c, min(q1 * c, self.lr_width), min((r + 1) * c, self.lr_height))
                blocks.fetch(self.down.hr_window(*run))
            for q in columns:
                if not keep[r, q]:
                    continue
                box = (q * c, r * c, min((q + 1) * c, self.lr_width), min((r + 1) * c, self.lr_height))
                wx0, wy0, _, _ = window_box = self.down.hr_window(*box)
                window = read_window(blocks.region, window_box, self.width, self.height)
                buffer[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0] = self.down.reduce_window(window)
                kept.append((r, q, box))
                hx0, hy0 = box[0] * scale, box[1] * scale
                hx1, hy1 = min(box[2] * scale, self.width), min(box[3] * scale, self.height)
                hr = window[hy0 - wy0 : hy1 - wy0, hx0 - wx0 : hx1 - wx0]
                sources[r, q] = SourceLoss.of(hr, (box[3] - box[1], box[2] - box[0]), scale)
                self._progress.update()
            blocks.release(self.down.hr_window(0, (r + 1) * c, 0, 0)[1])  # rows above the next row's windows
        self.store_shard(
            "0", array, (0, sy, sx), buffer, (x0, y0, x1, y1), kept, fill, self.options.codec, True, sources
        )

    def read_level0(self, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        return self.slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0))

    def store_shard(
        self,
        path: str,
        array: zarr.Array,
        shard: tuple[int, int, int],
        buffer: np.ndarray,
        box: Box,
        kept: list[tuple[int, int, Box]],
        fill: int,
        codec: ImageCodec,
        record_psnr: bool,
        sources: dict[tuple[int, int], SourceLoss] | None = None,
        hr_loss: bool = False,
        data: bytes | None = None,
    ) -> None:
        """Write one shard (``buffer`` through zarr, or its bytes ``data`` when its chunks are
        coded already), read it back, check every kept chunk (exactly when ``codec`` is
        lossless), finish the loss map of its chunks (given their ``sources``, or with ``hr_loss``
        each chunk's own: RMS of the pixels given minus those stored), journal it."""
        x0, y0, x1, y1 = box
        key = f"{path}/{shard_key(shard)}"
        if self.options.resume:
            # A shard the interrupted run wrote but did not journal: zarr would merge the new
            # pixels into it, and an edge chunk (one past the array's end) would keep the old
            # chunk's decoded (lossy) padding instead of the fill value, so it would encode to
            # other bytes than a run never interrupted. Start it afresh.
            self.work.remove(key)
        if data is None:
            array[:, y0:y1, x0:x1] = buffer.transpose(2, 0, 1)
        else:
            self.work.write_bytes(key, data)
        written = self.work.read_bytes(key) if self.work.exists(key) else b""
        rec = describe_shard(path, self.records[path], shard, written)
        stored = decode_shard(written, self.records[path], shard, codec, box, lambda cid: fill)  # unstored: uniform
        lossless = codec.lossless
        losses: dict[str, float] | None = None if sources is None and not hr_loss else {}
        for r, q, (bx0, by0, bx1, by1) in kept:
            cid = chunk_id((0, r, q))
            original = buffer[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]
            if losses is not None:  # a uniform chunk reads back as the fill value
                window = stored[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]
                if sources is not None:
                    self.loss[r, q] = losses[cid] = sources[r, q].rms(window, self.options.scale)
                else:
                    self.hr_loss[r, q] = losses[cid] = rms(original, window)
            if cid not in rec.chunks:
                if (original == fill).all():
                    rec.uniform.append(cid)
                    continue
                raise ArchiveError(f"chunk {path} row {r} col {q} was not stored (write failed)")
            decoded = stored[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]
            if lossless and not np.array_equal(decoded, original):
                raise ArchiveError(f"lossless chunk {path} row {r} col {q} does not read back exactly")
            if record_psnr and not lossless:
                rec.coding_psnr[cid] = coding_psnr(original, decoded)
        if losses is not None:
            with self.journal_lock:
                self.shard_losses[f"{rec.array}/{rec.key}"] = losses
        self.journal_shard(rec)

    # -- lower levels ----------------------------------------------------------------------
    def _level_shard(
        self, array: zarr.Array, previous: zarr.Array, mask: TissueMask, sy: int, sx: int, above: list[None]
    ) -> None:
        """One shard of a lower level: 2 x 2 means of the stored pixels of the (up to) 2 x 2
        shards of the level above (``above``: the tasks that wrote them), one at a time."""
        path, prev_path = array.path.split("/")[-1], previous.path.split("/")[-1]
        record = self.records[prev_path]
        uniform, glass = set(record.uniform), np.asarray(mask.background_rgb, dtype=np.uint8)
        c, s = self.options.chunk, self.shard
        _, height, width = array.shape
        _, prev_height, prev_width = previous.shape
        x0, y0 = sx * s, sy * s
        x1, y1 = min(x0 + s, width), min(y0 + s, height)
        buffer = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        for _, py, px in _quad(0, sy, sx):
            box = (px * s, py * s, min((px + 1) * s, prev_width), min((py + 1) * s, prev_height))
            if box[0] >= box[2] or box[1] >= box[3]:
                continue
            key = f"{prev_path}/{shard_key((0, py, px))}"
            data = self.work.read_bytes(key) if self.work.exists(key) else b""
            pixels = decode_shard(
                data,
                record,
                (0, py, px),
                self.options.codec,
                box,
                lambda cid: mask.fill_value if cid in uniform else glass,
            )
            half = (-(-(box[2] - box[0]) // 2), -(-(box[3] - box[1]) // 2))
            bx, by = box[0] // 2 - x0, box[1] // 2 - y0
            buffer[by : by + half[1], bx : bx + half[0]] = halve(pixels, half)
        kept = [
            (r, q, (q * c, r * c, min((q + 1) * c, width), min((r + 1) * c, height)))
            for r in range(y0 // c, -(-y1 // c))
            for q in range(x0 // c, -(-x1 // c))
        ]
        shard, box = (0, sy, sx), (x0, y0, x1, y1)
        self.store_shard(path, array, shard, buffer, box, kept, mask.fill_value, self.options.codec, False)

    # -- adaptation ------------------------------------------------------------------------
    def _adapt(self, level0: zarr.Array, mask: TissueMask) -> tuple[bytes | None, dict[str, Any] | None]:
        """Tune the per-slide adaptation on the stored level 0 (or, on resume, take the one
        journalled with the same settings) and return its bytes when the rule keeps it (None
        when not; stored once the chunks' restorers are known) and its record for the metadata
        (None when not adapting)."""
        adapter = self.options.adapt
        if adapter is None:
            return None, None
        settings = adapter.settings()
        journalled = [d for d in self.dest.done(ADAPTATION_KIND).values() if d.get("settings") == settings]
        if journalled:
            payload, info = bytes.fromhex(journalled[0]["payload"]), journalled[0]["info"]
        else:
            reader = ArrayReader(self.work, "0", level0, self.records["0"], mask.background_rgb, mask.fill_value)
            with Progress(adapter.steps, "adapt", "step", self.options.progress) as bar:
                payload, info = adapter.tune_stored(
                    reader, self.slide, self.options.scale, self.options.codec, bar.update
                )
            self.dest.journal(ADAPTATION_KIND, "0", {"settings": settings, "payload": payload.hex(), "info": info})
        return (payload if info["kept"] else None), dict(info)

    # -- restorer choice (format 1.7) ------------------------------------------------------
    def _choose_restorers(
        self, group: zarr.Group, level0: ArrayReader, keep: np.ndarray, stored: Stored
    ) -> dict[str, Any] | None:
        """Choose each tissue chunk's restorer (:mod:`wsistore.archive.restorer_choice`; hybrid
        ingest measured its SR chunks already), store the choice in ``restorer/`` and return
        its record (None without an upscaler: every chunk is then the generator's)."""
        upscaler = self.options.upscaler
        if upscaler is None:
            return None
        if self.hybrid is not None:
            measured = self.hybrid.restorer_sse
            cells = sorted(c for c in measured if c not in self.hybrid.hr_cells)
            bicubic = {c for c in cells if measured[c][1] < measured[c][0]}
            gains = [gain_db(*measured[c]) for c in cells]
            record = choice_record("per chunk: every SR chunk measured (hybrid)", cells, bicubic, gains, None)
        else:
            bicubic, record = self._restorer_choice(level0, keep, stored, upscaler)
        choice = np.zeros(keep.shape, dtype=np.uint8)
        for r, q in bicubic:
            choice[r, q] = RESTORERS.index(BICUBIC)
        self._write_small(group, RESTORER_ARRAY, choice)  # fill 255, never a restorer: always written
        return record

    def _restorer_choice(
        self, level0: ArrayReader, keep: np.ndarray, stored: Stored, upscaler: Upscaler
    ) -> tuple[set[tuple[int, int]], dict[str, Any]]:
        """``--mode sr``: the chunks to restore by bicubic and the record, from a sample of the
        tissue chunks or all of them (:func:`choose_restorers`); on resume, as journalled."""
        settings = self._restorer_settings()
        for data in self.dest.done(RESTORER_KIND).values():
            if data.get("settings") == settings:
                return {(r, q) for r, q in data["bicubic"]}, data["record"]
        cells = [(int(r), int(q)) for r, q in zip(*np.nonzero(keep))]
        sr = upscaler.open(level0, (self.width, self.height), self.options.codec, stored)
        scale, c = self.options.scale, self.options.chunk

        def sse_pair(cell: tuple[int, int]) -> tuple[int, int]:
            r, q = cell
            box = (
                q * c * scale,
                r * c * scale,
                min((q + 1) * c * scale, self.width),
                min((r + 1) * c * scale, self.height),
            )
            source = self.read_level0(box)
            return sse(sr.read(box), source), sse(sr.read(box, BICUBIC), source)

        try:
            with (
                ThreadPoolExecutor(self.options.workers) as pool,
                Progress(len(cells), "restorer", "chunk", self.options.progress) as bar,
            ):

                def measure(some: Iterable[tuple[int, int]]) -> dict[tuple[int, int], tuple[float, float]]:
                    some = list(some)
                    return dict(zip(some, bar.over(pool.map(sse_pair, some)), strict=True))

                policy = self.options.restorer_policy
                flat = {c for c in cells if self.loss[c] < policy.flat_rms}  # NaN (none): not flat
                bicubic, record = choose_restorers(cells, measure, policy, flat)
        finally:
            sr.close()
        self.dest.journal(RESTORER_KIND, "0", {"settings": settings, "bicubic": sorted(bicubic), "record": record})
        return bicubic, record

    # -- small arrays ----------------------------------------------------------------------
    def _write_associated(self, group: zarr.Group) -> tuple[list[str], list[str]]:
        names = list(self.slide.associated_image_names)
        stripped = [n for n in names if self.options.strip_label and n in IDENTIFYING_IMAGES]
        kept = [n for n in names if n not in stripped]
        budgets = stored_associated_bytes(self.slide_path)
        for name in kept:
            image = self.slide.associated_image(name)
            h, w = image.shape[:2]
            path = f"{ASSOCIATED_GROUP}/{name}"
            codec = associated_codec(image, budgets.get(name))
            array = group.create_array(
                path,
                shape=(3, h, w),
                chunks=(3, h, w),
                shards=(3, h, w),
                dtype="uint8",
                filters=[TransposeCodec(order=(1, 2, 0))],
                serializer=codec,
                compressors=[Crc32cCodec()],
                fill_value=0,
                dimension_names=("c", "y", "x"),
                overwrite=True,
            )
            self.records[path] = ArrayRecord(shape=[3, h, w], chunk_shape=[3, h, w], shard_shape=[3, h, w])
            self.store_shard(
                path, array, (0, 0, 0), image, (0, 0, w, h), [(0, 0, (0, 0, w, h))], 0, codec, record_psnr=False
            )
        return kept, stripped

    def _write_small(self, group: zarr.Group, path: str, data: np.ndarray, fill_value: float = 255) -> None:
        """A small non-image array (mask, loss map, ICC profile) as one sharded chunk."""
        shape = list(data.shape)
        group.create_array(
            path,
            shape=data.shape,
            chunks=data.shape,
            shards=data.shape,
            dtype=data.dtype,
            serializer=BytesCodec(),
            compressors=[Crc32cCodec()],
            fill_value=fill_value,
            overwrite=True,
        )[...] = data
        self.records[path] = ArrayRecord(shape=shape, chunk_shape=shape, shard_shape=shape)
        coords = (0,) * data.ndim
        stored = self.work.read_bytes(f"{path}/{shard_key(coords)}")
        self.records[path].merge(describe_shard(path, self.records[path], coords, stored))

    # -- metadata -------------------------------------------------------------------------
    def _source_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.slide.files)

    def _source_properties(self, file_sha256: dict[str, str]) -> dict[str, str]:
        """The slide's properties; with several source files, each one's sha256
        (``wsistore.source-sha256[NAME]``); with ``strip_label``, less those that identify the
        patient (:func:`wsistore.dicom.identifying`), whose names are recorded."""
        properties = dict(self.slide.properties)
        properties |= file_sha256_properties(file_sha256)
        if self.options.strip_label:
            dropped = sorted(key for key in properties if identifying(key))
            properties = {k: v for k, v in properties.items() if k not in dropped}
            if dropped:
                properties["wsistore.stripped-properties"] = ", ".join(dropped)
        return properties

    def _source_info(self, sha256: str, file_sha256: dict[str, str]) -> SourceInfo:
        slide = self.slide
        icc = slide.icc_profile
        mpp = self.options.mpp or slide.mpp
        mpp_source = MPP_GIVEN if self.options.mpp else slide.mpp_source
        return SourceInfo(
            file_name=self.options.source_name or self.slide_path.name,
            bytes=self._source_bytes(),
            sha256=sha256,
            reader=slide.name,
            vendor=slide.vendor,
            width=self.width,
            height=self.height,
            level_count=slide.level_count,
            level_dimensions=[list(d) for d in slide.level_dimensions],
            mpp_x=mpp[0] if mpp else None,
            mpp_y=mpp[1] if mpp else None,
            mpp_source=mpp_source,
            objective_power=slide.objective_power,
            properties=self._source_properties(file_sha256),
            icc_profile_sha256=hashlib.sha256(icc).hexdigest() if icc else None,
            icc_profile_bytes=len(icc) if icc else 0,
            associated_bytes=stored_associated_bytes(self.slide_path) or None,
        )


#: ``mpp_source`` of an mpp the caller gave (``IngestOptions.mpp``, ``--mpp``).
MPP_GIVEN = "given by the user"
#: JPEG-XL distances tried, finest first, when lossless is larger than the source's bytes.
ASSOCIATED_DISTANCES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 13.0, 20.0)


def associated_codec(image: np.ndarray, budget: int | None) -> ImageCodec:
    """The codec of an associated image: lossless JPEG-XL, unless that is larger than
    ``budget`` (the source's own bytes for it, when known); then the finest JPEG-XL
    distance that fits (the coarsest tried when none does)."""
    lossless = JpegXlCodec(lossless=True, effort=3)
    if budget is None or len(lossless.encode_image(image)) <= budget:
        return lossless
    for distance in ASSOCIATED_DISTANCES:
        codec = JpegXlCodec(distance=distance, effort=3)
        if len(codec.encode_image(image)) <= budget:
            return codec
    return codec


def source_block(slide: SlideReader) -> tuple[int, int]:
    """``(width, height)`` of the source blocks ingest reads: whole tiles of the slide's level 0,
    at least :data:`SOURCE_BLOCK` pixels, or :data:`SOURCE_BLOCK` square when the tiles are
    unknown or larger than a few blocks."""
    tile = slide.tile_size
    if tile is None or max(tile) > 4 * SOURCE_BLOCK:
        return SOURCE_BLOCK, SOURCE_BLOCK
    return tile[0] * -(-SOURCE_BLOCK // tile[0]), tile[1] * -(-SOURCE_BLOCK // tile[1])


class SourceBlocks:
    """Level-0 pixels read in a grid of aligned blocks and kept until released, so that each
    source tile is decoded once although neighbouring chunks' windows overlap by the halo."""

    def __init__(self, read: Callable[[Box], np.ndarray], width: int, height: int, block: tuple[int, int]) -> None:
        self._read = read
        self.width, self.height = width, height
        self.block_width, self.block_height = block
        self._blocks: dict[tuple[int, int], np.ndarray] = {}

    def _grid(self, box: Box) -> tuple[range, range]:
        """Block rows and columns that hold the in-bounds part of ``box``."""
        x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], self.width), min(box[3], self.height)
        bw, bh = self.block_width, self.block_height
        return range(y0 // bh, -(-y1 // bh)), range(x0 // bw, -(-x1 // bw))

    def fetch(self, box: Box) -> None:
        """Read the blocks of ``box`` (clipped to the slide) not held yet, one read per block
        row's run of missing blocks."""
        rows, columns = self._grid(box)
        bw, bh = self.block_width, self.block_height
        for by in rows:
            for b0, b1 in _runs([(by, bx) not in self._blocks for bx in columns], columns.start):
                top = by * bh
                strip = self._read((b0 * bw, top, min(b1 * bw, self.width), min(top + bh, self.height)))
                for bx in range(b0, b1):
                    self._blocks[by, bx] = strip[:, (bx - b0) * bw : (bx - b0 + 1) * bw]

    def region(self, box: Box) -> np.ndarray:
        """The pixels of the in-bounds ``box``, from the blocks (read first when missing)."""
        self.fetch(box)
        x0, y0, x1, y1 = box
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        rows, columns = self._grid(box)
        bw, bh = self.block_width, self.block_height
        for by in rows:
            for bx in columns:
                bx0, by0 = bx * bw, by * bh
                ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx0 + bw), min(y1, by0 + bh)
                out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self._blocks[by, bx][
                    iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0
                ]
        return out

    def release(self, y: int) -> None:
        """Forget the blocks that end at or above source row ``y``."""
        for key in [k for k in self._blocks if (k[0] + 1) * self.block_height <= y]:
            del self._blocks[key]


def _quad(level: int, sy: int, sx: int) -> list[tuple[int, int, int]]:
    """The keys of the shards of ``level`` that the shard ``(sy, sx)`` of the level below reads."""
    return [(level, 2 * sy + dy, 2 * sx + dx) for dy in (0, 1) for dx in (0, 1)]


def _runs(flags: list[bool], start: int) -> list[tuple[int, int]]:
    """``[q0, q1)`` ranges of consecutive True flags, numbered from ``start``."""
    runs, begin = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and begin is None:
            begin = i
        elif not flag and begin is not None:
            runs.append((start + begin, start + i))
            begin = None
    return runs


def halve(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """2x2 mean (rounding half up) to ``size = (w, h)``, replicating the last row/column
    when the input is odd."""
    w, h = size
    pad_y, pad_x = 2 * h - image.shape[0], 2 * w - image.shape[1]
    if pad_y or pad_x:
        image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
    total = image[0::2, 0::2].astype(np.uint16)
    total += image[1::2, 0::2]
    total += image[0::2, 1::2]
    total += image[1::2, 1::2]
    total += 2
    total >>= 2
    return total.astype(np.uint8)


def _software(reader: str) -> dict[str, str]:
    import imagecodecs

    package = {"openslide": "openslide-python", "dicom": "wsidicom"}.get(reader, reader)
    return software_versions("zarr", "numpy", "imagecodecs", "dask", package) | {
        "imagecodecs_libraries": imagecodecs.version()
    }


def rms(a: np.ndarray, b: np.ndarray) -> float:
    """RMS in grey levels of two uint8 images' difference, over every pixel and channel."""
    return math.sqrt(sse(a, b) / a.size)


def coding_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB (see :mod:`wsistore.psnr`), rounded to 4 decimals as recorded in the manifest."""
    return round(psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))), 4)
