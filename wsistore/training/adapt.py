"""Per-slide adaptation at ingest: fine-tune the default generator for the archive's LR codec
(:func:`wsistore.models.weights.default_model`), its biases and PReLU slopes
(:mod:`wsistore.models.adaptation`) on (LR as stored, HR) pairs sampled across the slide's
tissue chunks, and keep the result only where its held-out gain pays for its bytes.

* **Pairs.** LR crops of ``patch + 2 x margin`` pixels are cut from the archive's stored,
  decoded level 0 (exactly what restore reads), centred in tissue chunks; the HR target is
  the source's ``scale x patch`` square under the crop's core. The margin is the
  generator's receptive field, so the core is scored as restore computes it (no padding
  effects). A share of the tissue chunks (``held_out``) is held out: their pairs only score.
* **Tuning.** Adam on L1 over the cores, ``steps`` batches of ``batch`` pairs drawn by a
  seeded generator, on a fixed number of threads (``threads``), so the same slide and
  settings give the same bytes whatever ``--workers`` says, on any machine as loaded as it
  may be. ``seconds`` (``--adapt-seconds``; none by default) stops it early past a wall
  time: the steps run are recorded, and only then does the result depend on the machine's
  speed and load.
* **The rule.** The held-out gain (PSNR of the adapted over the base, fp16 values as stored)
  must exceed what AVIF would buy with the adaptation's bytes on this slide: its bits per
  source pixel times :data:`AVIF_DB_PER_BPP`, AVIF's measured slope on H&E near the
  archive's rates. Otherwise nothing is stored. A slide so small that the bytes would cost
  more than :data:`MAX_GAIN_DB` (the largest gain measured) is not tuned at all.

Ingest calls :meth:`AdaptOptions.tune_stored` (the writer's ``Adapter`` hook); the CLI
passes :func:`default_adaptation` unless ``--no-adapt``; ``wsistore bench`` tunes the same
way on each input's coded LR.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from wsistore.archive.manifest import chunk_coords
from wsistore.archive.reader import Archive, ArrayReader
from wsistore.codecs import ImageCodec
from wsistore.geometry import Box
from wsistore.models import adaptation
from wsistore.models.weights import default_model, load_generator
from wsistore.psnr import psnr_from_mse
from wsistore.readers import SlideReader

#: dB per bit per source pixel that AVIF gains on the full image between 0.25 and 0.35 bpp
#: (27.30 -> 28.67 dB, 40 real H&E tiles, ../shared/BRIEF.md): what the adaptation's bytes
#: would buy spent on the image instead.
AVIF_DB_PER_BPP = 13.7
#: Set to ``0`` to make the CLI's ingest and bench not adapt by default (quick looks, test
#: suites); ``--no-adapt`` does the same for one run.
ADAPT_ENV = "WSISTORE_ADAPT"
#: The largest held-out gain measured on a real slide (dB): a slide so small that the
#: adaptation's bytes cost more is not tuned at all.
MAX_GAIN_DB = 0.5


@dataclass(frozen=True)
class AdaptationSource:
    """What a per-slide adaptation is tuned on: the stored level 0 and the source."""

    #: the archive's level-0 pixels as stored (decoded), ``(h, w, 3)`` uint8 of an LR box
    read_lr: Callable[[Box], np.ndarray]
    #: the source's level-0 pixels, ``(h, w, 3)`` uint8 of a source box
    read_hr: Callable[[Box], np.ndarray]
    #: (row, col) of the level-0 chunks that hold tissue
    tissue_chunks: list[tuple[int, int]]
    chunk: int
    scale: int
    lr_size: tuple[int, int]
    source_size: tuple[int, int]
    #: the codec the LR is stored with: picks the base generator when none is named; None: the default
    codec: ImageCodec | None = None

    @property
    def source_pixels(self) -> int:
        return self.source_size[0] * self.source_size[1]

    @classmethod
    def of_level(
        cls, level0: ArrayReader, slide: SlideReader, scale: int, codec: ImageCodec | None = None
    ) -> AdaptationSource:
        """The pairs of a stored level 0 (read as restore reads it, coded with ``codec``) and its source slide."""
        record = level0.record
        chunks = sorted({(chunk_coords(cid)[-2], chunk_coords(cid)[-1]) for cid in [*record.chunks, *record.uniform]})
        return cls(
            read_lr=level0.read,
            read_hr=lambda box: slide.read_region((box[0], box[1]), 0, (box[2] - box[0], box[3] - box[1])),
            tissue_chunks=chunks,
            chunk=level0.chunk,
            scale=scale,
            lr_size=(level0.width, level0.height),
            source_size=slide.dimensions,
            codec=codec,
        )

    @classmethod
    def of_archive(cls, archive: Archive, slide: SlideReader) -> AdaptationSource:
        """The pairs of a finished archive and its source slide."""
        return cls.of_level(archive.level(0), slide, archive.metadata.scale, archive.codec)


@dataclass(frozen=True)
class Adaptation:
    """A tuned adaptation: its bytes (:func:`wsistore.models.adaptation.encode`; empty when
    nothing could be tuned) and what it is (base, subset, steps, held-out gain, whether the
    rule keeps it, or ``reason`` why nothing was tuned), as the archive records it; and the
    seconds the tuning took (not recorded: the archive's bytes must not depend on speed)."""

    payload: bytes
    info: dict[str, Any]
    seconds: float = 0.0

    @property
    def kept(self) -> bool:
        return bool(self.info.get("kept"))


@dataclass(frozen=True)
class AdaptOptions:
    """How a slide's adaptation is tuned; validated on construction."""

    model: str | None = None  # the base generator (default: the shipped default for the LR's codec)
    steps: int = 300
    batch: int = 8
    patch: int = 32  # LR side of a pair's scored core
    train_margin: int = 6  # LR context around the core while tuning (scoring uses the full receptive field)
    pairs: int = 256  # pairs sampled, held-out ones included
    held_out: float = 0.25  # share of tissue chunks held out for scoring
    learning_rate: float = 2e-3
    seconds: float | None = None  # stop early past this wall time (the result then depends on speed)
    threads: int = 2
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        """These settings as JSON (what an interrupted ingest's journal must match)."""
        return asdict(self)

    def tune_stored(
        self, level0: ArrayReader, slide: SlideReader, scale: int, codec: ImageCodec, on_step: Callable[[], None]
    ) -> tuple[bytes, dict[str, Any]]:
        """Ingest's hook (:class:`wsistore.archive.writer.Adapter`): tune on a stored level 0
        (coded with ``codec``) and its source; the bytes and the record."""
        result = tune(AdaptationSource.of_level(level0, slide, scale, codec), self, on_step)
        return result.payload, result.info

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "patch", "pairs", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"adaptation {name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.held_out < 1:
            raise ValueError(f"adaptation held_out must be between 0 and 1, got {self.held_out}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"adaptation seconds must be positive, got {self.seconds}")


def default_adaptation() -> AdaptOptions | None:
    """The adaptation the CLI's ingest and bench run unless told otherwise: the default
    settings, or none when :data:`ADAPT_ENV` is ``0``."""
    return None if os.environ.get(ADAPT_ENV, "1") == "0" else AdaptOptions()


def adapt(source: AdaptationSource, options: AdaptOptions | None = None) -> Adaptation | None:
    """Tune the base generator on ``source``'s pairs; the adaptation when the rule keeps it,
    else None (:func:`tune` says why)."""
    result = tune(source, options)
    return result if result.kept else None


def tune(
    source: AdaptationSource, options: AdaptOptions | None = None, on_step: Callable[[], None] | None = None
) -> Adaptation:
    """Tune the base generator (``options.model``, else the default for ``source.codec``) on
    ``source``'s pairs (``on_step`` is called after each step).
    The result's ``info["kept"]`` says whether it passed the rule; when nothing could be tuned
    (an interpolation as base, too little tissue, a slide too small for any gain to pay for
    the bytes) its payload is empty and ``info["reason"]`` says why."""
    options = options or AdaptOptions()
    base = load_generator(options.model or default_model(source.codec))
    record: dict[str, Any] = {"base": base.name, "base_sha256": base.weights_sha256, "subset": adaptation.SUBSET}
    if base.weights_sha256 is None:
        return Adaptation(b"", {**record, "kept": False, "reason": f"{base.name} has no weights to tune"})
    params = adaptation.adapted_parameters(base.model)
    size = 2 * sum(p.numel() for p in params.values())
    cost_db = AVIF_DB_PER_BPP * 8 * size / source.source_pixels
    if cost_db >= MAX_GAIN_DB:
        reason = (
            f"the slide is too small: {size} bytes of adaptation cost {cost_db:.2f} dB at AVIF's slope, "
            f"more than the largest gain measured ({MAX_GAIN_DB} dB)"
        )
        return Adaptation(b"", {**record, "kept": False, "reason": reason})
    margin = base.model.receptive_field
    sampled = _sample(source, options, margin)
    if sampled is None:
        return Adaptation(b"", {**record, "kept": False, "reason": "too little tissue to sample pairs from"})
    train, held = sampled
    # train on a thinner margin (the cores' loss hardly depends on context that far away, and
    # the crops cost a third as much); score on the full one, as restore computes
    cut = margin - min(margin, options.train_margin)
    train = (train[0][..., cut : train[0].shape[-2] - cut, cut : train[0].shape[-1] - cut], train[1])
    train_margin = margin - cut
    with _threads(options.threads):
        model = base.model.train(False)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        before = _score(model, held, margin, source.scale)
        optimiser = torch.optim.Adam(params.values(), lr=options.learning_rate)
        rng = np.random.default_rng(options.seed)
        start, steps = time.perf_counter(), 0
        lr_all, hr_all = train
        core = slice(train_margin * source.scale, (train_margin + options.patch) * source.scale)
        limit = math.inf if options.seconds is None else options.seconds
        while steps < options.steps and time.perf_counter() - start < limit:
            pick = torch.from_numpy(rng.choice(len(lr_all), size=min(options.batch, len(lr_all)), replace=False))
            out = model(lr_all[pick])[..., core, core]
            loss = torch.nn.functional.l1_loss(out, hr_all[pick])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            steps += 1
            if on_step is not None:
                on_step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            for p in params.values():  # score what is stored: fp16 values
                p.copy_(p.half().float())
        after = _score(model, held, margin, source.scale)
    payload = adaptation.encode(model)
    gain = after - before
    info = {
        **record,
        "parameters": sum(p.numel() for p in params.values()),
        "steps": steps,
        "steps_asked": options.steps,
        "batch": options.batch,
        "patch_lr": options.patch,
        "learning_rate": options.learning_rate,
        "loss": "L1",
        "train_margin_lr": train_margin,
        "pairs_train": len(lr_all),
        "pairs_held_out": len(held[0]),
        "held_out_psnr_base": round(before, 4),
        "held_out_psnr_adapted": round(after, 4),
        "held_out_gain_db": round(gain, 4),
        "bytes": len(payload),
        "cost_db": round(cost_db, 4),
        "rule": f"kept if the held-out gain exceeds {AVIF_DB_PER_BPP} dB per bpp (AVIF's slope) x its bits per "
        "source pixel (cost_db)",
        "kept": bool(gain > cost_db),
        "threads": options.threads,
        "seed": options.seed,
    }
    if info["kept"]:
        info["sha256"] = hashlib.sha256(payload).hexdigest()
    return Adaptation(payload, info, seconds)


Pairs = tuple[torch.Tensor, torch.Tensor]


def _sample(source: AdaptationSource, options: AdaptOptions, margin: int) -> tuple[Pairs, Pairs] | None:
    """(train, held-out) pairs: LR crops with their margin, HR cores, as float tensors in 0-1."""
    p, s, c = options.patch, source.scale, source.chunk
    side = p + 2 * margin
    lr_w, lr_h = source.lr_size
    # the core must lie where the source has whole pixels under it
    core_w, core_h = source.source_size[0] // s, source.source_size[1] // s
    if min(core_w, core_h) < p or min(lr_w, lr_h) < side:
        return None
    chunks = sorted(source.tissue_chunks)
    if not chunks:
        return None
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(len(chunks))
    n_held = max(1, round(options.held_out * len(chunks))) if len(chunks) > 1 else 0
    held_chunks = {chunks[i] for i in order[:n_held]}
    train: list[tuple[np.ndarray, np.ndarray]] = []
    held: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(options.pairs):
        row, col = chunks[int(rng.integers(len(chunks)))]
        cx = col * c + int(rng.integers(c))
        cy = row * c + int(rng.integers(c))
        x = min(max(cx - p // 2, 0), core_w - p)  # the core's corner, kept inside
        y = min(max(cy - p // 2, 0), core_h - p)
        lx = min(max(x - margin, 0), lr_w - side)  # the crop's corner, kept inside
        ly = min(max(y - margin, 0), lr_h - side)
        x, y = lx + margin, ly + margin  # the core sits exactly inside the margin
        if x + p > core_w or y + p > core_h:
            continue
        lr = source.read_lr((lx, ly, lx + side, ly + side))
        hr = source.read_hr((x * s, y * s, (x + p) * s, (y + p) * s))
        one_chunk_held = not held_chunks and k % 4 == 0  # a slide of one tissue chunk: every 4th pair
        (held if (row, col) in held_chunks or one_chunk_held else train).append((lr, hr))
    if not train or not held:
        return None
    return _tensors(train), _tensors(held)


def _tensors(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Pairs:
    lr = np.stack([a for a, _ in pairs]).transpose(0, 3, 1, 2)
    hr = np.stack([b for _, b in pairs]).transpose(0, 3, 1, 2)
    return torch.from_numpy(lr.astype(np.float32) / 255), torch.from_numpy(hr.astype(np.float32) / 255)


def _score(model: torch.nn.Module, pairs: Pairs, margin: int, scale: int) -> float:
    """PSNR (dB, 8-bit output as restore writes it) of ``model`` over the pairs' cores."""
    lr_all, hr_all = pairs
    core = slice(margin * scale, margin * scale + hr_all.shape[-1])
    sse, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(lr_all), 16):
            out = model(lr_all[i : i + 16])[..., core, core]
            out8 = (out.clamp(0, 1) * 255).round()
            diff = out8 - (hr_all[i : i + 16] * 255).round()
            sse += float((diff.double() ** 2).sum())
            n += diff.numel()
    return psnr_from_mse(sse / n) if n else math.nan


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads, then restore the process's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
