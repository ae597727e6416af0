"""Hybrid ingest's passes (format 1.8), run after the LR pyramid and the adaptation:

1. **measure**, one task per HR shard's area: each tissue chunk's SR path (what restore makes of
   its stored LR, by the generator and by bicubic: an :class:`~wsistore.archive.writer.Upscaler`;
   its bits the LR chunk's) and each HR setting *probed* (the chunk coded at a fast speed, a
   prediction of the setting's own SSE and bytes: :func:`~wsistore.archive.hybrid_choice.predicted`),
   journalled per area;
2. **settle**: one lambda for the slide (given, matched to the LR's slope, or found for a target
   rate) and each chunk's least-cost option (:func:`~wsistore.archive.hybrid_choice.settle`); the
   HR settings chosen are coded (each chunk once; for a target rate, each setting once), their
   bytes kept in the work folder (:data:`CODED_PREFIX`) and journalled, until every choice rests
   on measured options;
3. **write** the HR shards from those bytes, then remove their LR chunks from level 0's shards
   (format 1.6).

The chunks' SSEs by the generator and by bicubic also give the restorer of each chunk left on
the SR path (format 1.7: :attr:`HybridPasses.restorer_sse`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import zarr

from wsistore.archive.format import BICUBIC, HR_ARRAY, HR_RULE, hr_shard_side
from wsistore.archive.hybrid_choice import (
    PROBE_BYTES_RATIO,
    PROBE_SPEED,
    PROBE_SSE_RATIO,
    SR,
    Option,
    budget_lambdas,
    code_hr_chunk,
    corrected,
    matched_lambda,
    measure_options,
    probe_codec,
    quality,
    settle,
    sse,
)
from wsistore.archive.manifest import (
    chunk_coords,
    chunk_id,
    chunk_modes,
    describe_shard,
    pack_shard,
    shard_chunks,
    shard_key,
    without_chunks,
)
from wsistore.archive.reader import ArrayReader
from wsistore.errors import ArchiveError
from wsistore.geometry import Box
from wsistore.progress import Progress
from wsistore.tissue import TissueMask

if TYPE_CHECKING:
    from wsistore.archive.writer import Stored, SuperResolved, _Ingest

#: Journal entry of an HR shard's area measured: each tissue chunk's options, and the key in it
#: of its chunks' ``[SSE_generator, SSE_bicubic]``.
HR_OPTIONS_KIND = "hr-options"
RESTORERS_KEY = "restorers"
#: Journal entry of a chunk coded at the HR setting its choice settled on (its measured option).
HR_CODED_KIND = "hr-coded"
#: Where the coded HR chunks wait, in the work folder, until their shard is written.
CODED_PREFIX = "hr-coded"
#: Journal entry of an HR shard decided to hold no HR chunk (so nothing was written).
EMPTY_HR_SHARD_KIND = "empty-hr-shard"

#: Restore's bicubic is measured for a chunk unless the generator's SSE is under this share of
#: the loss map's (a dB better): the loss map is never more than 3 % above restore's bicubic
#: SSE on the real slides of BENCHMARKS.md ("Equal slopes"), so the generator is then surely
#: the restorer.
BICUBIC_MARGIN = 0.8

Cell = tuple[int, int]


class HybridPasses:
    """The hybrid passes over one ingest (its archive, journal, records and shard writer)."""

    def __init__(
        self, ingest: _Ingest, group: zarr.Group, level0: zarr.Array, keep: np.ndarray, mask: TissueMask
    ) -> None:
        self.ingest = ingest
        self.options = ingest.options
        self.group = group
        self.level0 = level0
        self.keep = keep
        self.mask = mask
        scale, c = self.options.scale, self.options.chunk
        self.hr_chunk, self.hr_shard = scale * c, hr_shard_side(c, ingest.shard, scale)
        self.per = self.hr_shard // self.hr_chunk
        # in quality order, for the walk
        self.codecs = {codec.describe(): codec for codec in sorted(self.options.hr_codecs, key=quality)}
        #: the chunks' SSEs ``(generator, bicubic)``, and those stored at full resolution
        self.restorer_sse: dict[Cell, tuple[int, int]] = {}
        self.hr_cells: set[Cell] = set()
        self._progress = Progress(0, "hybrid", "chunk", enabled=False)

    def run(self, stored: Stored) -> dict[str, Any]:
        """Measure, settle and write; returns the metadata's ``hybrid`` record."""
        ing, upscaler = self.ingest, self.options.upscaler
        assert upscaler is not None  # IngestOptions checks it for hybrid mode
        array = ing.image_array(
            self.group,
            HR_ARRAY,
            ing.width,
            ing.height,
            self.mask,
            (self.hr_chunk, self.hr_shard),
            self.options.hr_codecs[0],
        )
        areas = [(sy, sx) for sy, sx in self._all_areas() if self._cells(sy, sx)]
        reader = ArrayReader(
            ing.work, "0", self.level0, ing.records["0"], self.mask.background_rgb, self.mask.fill_value
        )
        sr = upscaler.open(reader, (ing.width, ing.height), self.options.codec, stored)
        try:
            measured = ing.dest.done(HR_OPTIONS_KIND)
            todo = [a for a in areas if shard_key((0, *a)) not in measured]
            lam = self._fixed_lambda()
            work = {a: self._cells(*a) for a in todo}
            self._stage("hybrid", work, lambda a, cells: self._measure(sr, lam, a, cells))
            described = sr.describe()
        finally:
            sr.close()
        options = self._journalled_options()
        chosen_by, lambda_for = self._lambda()
        lam, chosen = settle(options, lambda_for, self._code, self._once_per_chunk())
        self.hr_cells = {cell for cell, option in chosen.items() if option.path != SR}
        empty = set(ing.dest.done(EMPTY_HR_SHARD_KIND))
        write = {
            a: self._cells(*a)
            for a in areas
            if (HR_ARRAY, shard_key((0, *a))) not in ing.done and shard_key((0, *a)) not in empty
        }
        self._stage("HR", write, lambda a, cells: self._write_shard(array, chosen, a, cells))
        ing.work.remove(CODED_PREFIX)
        self._drop_hr_lr()
        settings = [codec.to_dict() for codec in self.options.hr_codecs]
        used = [option.path for option in chosen.values()]
        return {
            "hr_codec": settings[0],
            "hr_codecs": settings,
            "lambda": lam,
            "lambda_from": chosen_by,
            "target_bpp": self.options.hr_target_bpp,
            "rule": HR_RULE,
            "probe": (
                {"speed": PROBE_SPEED, "bytes_ratio": PROBE_BYTES_RATIO, "sse_ratio": PROBE_SSE_RATIO}
                if any(probe_codec(codec) for codec in self.codecs.values())
                else None
            ),
            "hr_codings": sum(len(codings) for codings in self._coded_options().values()),
            "hr_chunk": self.hr_chunk,
            "hr_shard": self.hr_shard,
            "sr": described,
            "options": {path: used.count(path) for path in [SR, *self.codecs]},
            "modes": chunk_modes(ing.records["0"], ing.records[HR_ARRAY]),
        }

    # -- areas and stages --------------------------------------------------------------------
    def _all_areas(self) -> list[Cell]:
        rows, cols = self.keep.shape
        return [(sy, sx) for sy in range(-(-rows // self.per)) for sx in range(-(-cols // self.per))]

    def _cells(self, sy: int, sx: int) -> list[tuple[int, int, Box]]:
        """The tissue chunks ``(row, col, HR box)`` of HR shard ``(sy, sx)``'s area."""
        ing, c = self.ingest, self.hr_chunk
        x0, y0 = sx * self.hr_shard, sy * self.hr_shard
        x1, y1 = min(x0 + self.hr_shard, ing.width), min(y0 + self.hr_shard, ing.height)
        return [
            (r, q, self._box(r, q))
            for r in range(y0 // c, -(-y1 // c))
            for q in range(x0 // c, -(-x1 // c))
            if self.keep[r, q]
        ]

    def _box(self, r: int, q: int) -> Box:
        """HR chunk ``(r, q)``'s pixels inside the slide."""
        ing, c = self.ingest, self.hr_chunk
        return q * c, r * c, min((q + 1) * c, ing.width), min((r + 1) * c, ing.height)

    def _stage(
        self,
        name: str,
        work: dict[Cell, list[tuple[int, int, Box]]],
        task: Callable[[Cell, list[tuple[int, int, Box]]], None],
    ) -> None:
        """``task(area, chunks)`` for each HR shard's area of ``work``, as dask tasks, with a
        progress bar of chunks."""
        tasks = [
            dask.delayed(task, pure=False)(area, cells, dask_key_name=f"{name}-{area[0]:06d}-{area[1]:06d}")
            for area, cells in work.items()
        ]
        self._progress = Progress(sum(len(c) for c in work.values()), name, "chunk", self.options.progress)
        with self._progress:
            dask.compute(*tasks, scheduler=dask.threaded.get, num_workers=self.options.workers)

    # -- 1. measure ------------------------------------------------------------------------
    def _measure(self, sr: SuperResolved, lam: float | None, area: Cell, cells: list[tuple[int, int, Box]]) -> None:
        """Every tissue chunk's options in one HR shard's area (:func:`measure_options` at
        ``lam``), journalled with the restorers' SSEs so that a resume measures it no more."""
        ing = self.ingest
        found: dict[str, Any] = {}
        restorers: dict[str, list[int]] = {}
        for r, q, box in cells:
            cid = chunk_id((0, r, q))
            source = ing.read_level0(box)
            generator = sse(sr.read(box), source)
            # bicubic's SSE from the loss map (bicubic of the stored LR, computed exactly but not
            # rounded: 0.97-1.01 of restore's on tissue, more on glass) where the generator is
            # ahead of it by about a dB; else restore's bicubic, measured
            estimate = float(ing.loss[r, q]) ** 2 * source.size
            ahead = generator < BICUBIC_MARGIN * estimate  # False for a NaN estimate
            bicubic = round(estimate) if ahead else sse(sr.read(box, BICUBIC), source)
            restorers[cid] = [generator, bicubic]
            lr_bytes = ing.records["0"].chunks.get(cid, [0])[0]
            options = measure_options(source, min(generator, bicubic), lr_bytes, self.codecs, lam)
            found[cid] = [[o.path, o.sse, o.nbytes, o.measured] for o in options]
            self._progress.update()
        with ing.journal_lock:
            ing.dest.journal(HR_OPTIONS_KIND, shard_key((0, *area)), {"options": found, RESTORERS_KEY: restorers})

    def _journalled_options(self) -> dict[Cell, list[Option]]:
        """Every measured chunk's options (SR first), those coded already (a resume) in place of
        their predictions; the restorers' SSEs taken too."""
        options: dict[Cell, list[Option]] = {}
        for data in self.ingest.dest.done(HR_OPTIONS_KIND).values():
            for cid, (generator, bicubic) in data[RESTORERS_KEY].items():
                _, r, q = chunk_coords(cid)
                self.restorer_sse[r, q] = (generator, bicubic)
            for cid, listed in data["options"].items():
                _, r, q = chunk_coords(cid)
                options[r, q] = [Option(*fields) for fields in listed]
        once = self._once_per_chunk()
        for cell, codings in self._coded_options().items():
            for coding in codings:  # as settle took them
                prediction = next((o for o in options[cell] if o.path == coding.path and not o.measured), coding)
                options[cell] = corrected(options[cell], prediction, coding, once)
        return options

    def _coded_options(self) -> dict[Cell, list[Option]]:
        """The codings journalled, per chunk, in the order they were coded."""
        coded: dict[Cell, list[Option]] = defaultdict(list)
        for key, fields in self.ingest.dest.done(HR_CODED_KIND).items():
            _, r, q = chunk_coords(str(key).split("/")[0])
            coded[r, q].append(Option(*fields))
        return coded

    def _coded_key(self, r: int, q: int, path: str) -> str:
        """Where chunk ``(r, q)`` coded at setting ``path`` waits in the work folder (and its
        journal index)."""
        return f"{CODED_PREFIX}/{chunk_id((0, r, q))}/{list(self.codecs).index(path)}"

    def _once_per_chunk(self) -> bool:
        """Each chunk coded at one setting at most (:func:`settle`), unless lambda follows a
        target rate."""
        return self.options.hr_target_bpp is None

    # -- 2. settle -------------------------------------------------------------------------
    def _fixed_lambda(self) -> float | None:
        """lambda where it is known before the options are (given, or the LR's slope); None
        for a target rate."""
        if self.options.hr_target_bpp is not None:
            return None
        given = self.options.hr_lambda
        return given if given is not None else matched_lambda(self.options.codec)

    def _lambda(self) -> tuple[str, Callable[[Mapping[Cell, Sequence[Option]]], Sequence[float]]]:
        """Where lambda comes from, and the lambdas a round of :func:`settle` measures the
        choices of."""
        target, lam = self.options.hr_target_bpp, self._fixed_lambda()
        if target is not None:
            budget = target * self.ingest.width * self.ingest.height / 8
            return "target", lambda options: budget_lambdas(options, budget)
        assert lam is not None  # no target: known beforehand
        return ("given" if self.options.hr_lambda is not None else "the LR's slope"), lambda _: (lam,)

    def _code(self, pending: dict[Cell, Option]) -> dict[Cell, Option]:
        """Code each chunk at the HR setting its choice rests on (a prediction), keep its bytes in
        the work folder and journal its measured option; returns the measured options."""
        by_area: dict[Cell, list[tuple[int, int, Box]]] = defaultdict(list)
        for r, q in sorted(pending):
            by_area[r // self.per, q // self.per].append((r, q, self._box(r, q)))
        found: dict[Cell, Option] = {}

        def task(area: Cell, cells: list[tuple[int, int, Box]]) -> None:
            for r, q, box in cells:
                path = pending[r, q].path
                source = self.ingest.read_level0(box)
                decoded, coded = code_hr_chunk(source, self.codecs[path])
                key = self._coded_key(r, q, path)
                self.ingest.work.write_bytes(key, coded)
                option = Option(path, sse(decoded, source), len(coded))
                with self.ingest.journal_lock:
                    index = key.removeprefix(f"{CODED_PREFIX}/")
                    self.ingest.dest.journal(HR_CODED_KIND, index, [option.path, option.sse, option.nbytes])
                    found[r, q] = option
                self._progress.update()

        self._stage("coding", dict(by_area), task)
        return found

    # -- 3. write ------------------------------------------------------------------------
    def _write_shard(
        self, array: zarr.Array, chosen: dict[Cell, Option], area: Cell, cells: list[tuple[int, int, Box]]
    ) -> None:
        """One HR shard: its chunks whose choice is an HR setting, their coded bytes packed and
        written; a shard with none is only journalled."""
        ing = self.ingest
        sy, sx = area
        x0, y0 = sx * self.hr_shard, sy * self.hr_shard
        x1, y1 = min(x0 + self.hr_shard, ing.width), min(y0 + self.hr_shard, ing.height)
        fill = self.mask.fill_value
        buffer = np.full((y1 - y0, x1 - x0, 3), fill, dtype=np.uint8)
        kept, stored = [], {}  # stored: each HR chunk's bytes, by its position in the shard
        for r, q, box in cells:
            option = chosen[r, q]
            self._progress.update()
            if option.path == SR:
                continue
            source = ing.read_level0(box)
            coded = self._coded_bytes(r, q, source, option)
            buffer[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0] = source
            kept.append((r, q, box))
            if not (source == fill).all():  # zarr stores no chunk of fill value only
                stored[(r % self.per) * self.per + q % self.per] = coded
        if not stored:
            # nothing to write (zarr writes no chunk that is all fill value, and such a chunk is
            # restored as well by the generator): no shard, only a journal line for a resume
            with ing.journal_lock:
                ing.dest.journal(EMPTY_HR_SHARD_KIND, shard_key((0, sy, sx)))
            return
        data = pack_shard(self.per * self.per, stored)
        ing.store_shard(
            HR_ARRAY,
            array,
            (0, sy, sx),
            buffer,
            (x0, y0, x1, y1),
            kept,
            fill,
            self.options.hr_codecs[0],
            True,
            None,
            True,
            data,
        )

    def _coded_bytes(self, r: int, q: int, source: np.ndarray, option: Option) -> bytes:
        """An HR chunk's bytes as its choice coded them (kept in the work folder); coded again
        where that copy is gone, to the same bytes (coding is deterministic, and checked)."""
        key = self._coded_key(r, q, option.path)
        work = self.ingest.work
        coded = work.read_bytes(key) if work.exists(key) else code_hr_chunk(source, self.codecs[option.path])[1]
        if len(coded) != option.nbytes:
            raise ArchiveError(
                f"HR chunk row {r} col {q} coded to {len(coded)} bytes, {option.nbytes} when measured: "
                "the HR codec is not deterministic"
            )
        return coded

    def _drop_hr_lr(self) -> None:
        """Format 1.6: remove the LR chunk of every HR chunk from level 0's shards (readers derive
        it from the HR chunk); the other chunks' bytes are kept as they are. Each shard rewritten
        is journalled again, so a resumed ingest finds it done (or, cut short, rewrites it)."""
        ing = self.ingest
        base, hr = ing.records["0"], ing.records[HR_ARRAY]
        cps = base.chunks_per_shard
        drop: dict[tuple[int, ...], set[int]] = {}
        for cid in (set(hr.chunks) | set(hr.uniform)) & set(base.chunks):
            coords = chunk_coords(cid)
            shard = tuple(c // n for c, n in zip(coords, cps, strict=True))
            drop.setdefault(shard, set()).add(int(np.ravel_multi_index(tuple(c % n for c, n in zip(coords, cps)), cps)))
        for shard, positions in sorted(drop.items()):
            key = f"0/{shard_key(shard)}"
            data = without_chunks(ing.work.read_bytes(key), math.prod(cps), positions)
            ing.work.write_bytes(key, data)
            rec = describe_shard("0", base, shard, data)
            ids = {chunk_id(c) for c in shard_chunks(base, shard)}
            rec.coding_psnr = {k: v for k, v in base.coding_psnr.items() if k in rec.chunks}
            rec.uniform = sorted(ids & set(base.uniform))
            kept = [chunk_coords(cid) for cid in [*rec.chunks, *rec.uniform]]
            ing.shard_losses[f"0/{rec.key}"] = {chunk_id(c): float(ing.loss[c[1], c[2]]) for c in kept}
            ing.journal_shard(rec)
