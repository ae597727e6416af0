"""Prepared (LR, HR) patch shards: plain ``.npy`` files and a JSON manifest.

Layout of a prepared folder::

    manifest.json              settings (scale, codec, chunk, downsample), files and split
    train-00000.lr.npy         uint8 (N, 3, p, p)       LR patches, exactly as archived
    train-00000.hr.npy         uint8 (N, 3, s p, s p)   the matching source pixels
    train-00000.index.npy      int32 (N, 6)             file number, LR x, LR y (in the variant),
                                                        dihedral transform, LR crop offset x, y
    val-00000.*.npy            the same for the files held out for validation

Reading needs only numpy and torch (the arrays are memory-mapped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsistore.errors import InputError

FORMAT = "wsistore-training-patches"
VERSION = 2
#: versions this wsistore reads (1 had a 3-column index: file, x, y)
READABLE = (1, 2)
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder, checked."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{root}: no prepared patches ({MANIFEST} missing; run 'wsistore train prepare')") from None
    except ValueError as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") not in READABLE:
        raise InputError(f"{root}: not {FORMAT} version {' or '.join(map(str, READABLE))}")
    return dict(manifest)


class PatchSet:
    """One split of a prepared folder, memory-mapped."""

    def __init__(self, root: str | Path, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        self.root = Path(root)
        self.manifest = read_manifest(root)
        self.split = split
        self.patch = int(self.manifest["patch"])
        self.scale = int(self.manifest["scale"])
        self._lr, self._hr = [], []
        starts = [0]
        for shard in self.manifest["shards"]:
            if shard["split"] != split:
                continue
            try:
                lr = np.load(self.root / shard["lr"], mmap_mode="r")
                hr = np.load(self.root / shard["hr"], mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(f"{self.root}: shard {shard['lr']} unreadable ({exc})") from None
            p, s = self.patch, self.scale
            if lr.shape[1:] != (3, p, p) or hr.shape != (lr.shape[0], 3, s * p, s * p) or lr.shape[0] != shard["count"]:
                raise InputError(f"{self.root}: shard {shard['lr']} does not match the manifest")
            self._lr.append(lr)
            self._hr.append(hr)
            starts.append(starts[-1] + lr.shape[0])
        self._starts = np.asarray(starts)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def get(self, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 LR ``(B, 3, p, p)`` and HR ``(B, 3, s p, s p)`` of these patches."""
        lr, hr = [], []
        for i in np.asarray(indices, dtype=np.int64):
            k = int(np.searchsorted(self._starts, i, side="right")) - 1
            if not 0 <= i < len(self):
                raise IndexError(i)
            lr.append(self._lr[k][i - self._starts[k]])
            hr.append(self._hr[k][i - self._starts[k]])
        return np.stack(lr), np.stack(hr)


@dataclass
class BatchSampler:
    """Random batches of random ``crop``-pixel LR crops (and the matching HR), drawn
    from a seeded ``torch.Generator`` whose state the run saves for exact resume."""

    patches: PatchSet
    batch: int
    crop: int
    flips: bool
    rng: torch.Generator

    def __post_init__(self) -> None:
        if len(self.patches) == 0:
            raise InputError(f"{self.patches.root}: no {self.patches.split} patches")
        if self.crop > self.patches.patch:
            raise InputError(f"data.patch {self.crop} exceeds the prepared patch side {self.patches.patch}")

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float LR and HR in [0, 1], on the CPU."""
        n, p, c, s = len(self.patches), self.patches.patch, self.crop, self.patches.scale
        index = torch.randint(n, (self.batch,), generator=self.rng)
        offset = torch.randint(p - c + 1, (self.batch, 2), generator=self.rng)
        flip = torch.randint(2, (self.batch, 3), generator=self.rng)  # drawn always: same RNG use
        lr_all, hr_all = self.patches.get(index.numpy())
        lr_list, hr_list = [], []
        for b in range(self.batch):
            y, x = int(offset[b, 0]), int(offset[b, 1])
            lr = torch.from_numpy(np.ascontiguousarray(lr_all[b, :, y : y + c, x : x + c]))
            hr = torch.from_numpy(np.ascontiguousarray(hr_all[b, :, s * y : s * (y + c), s * x : s * (x + c)]))
            if self.flips:
                lr, hr = _flip(lr, flip[b]), _flip(hr, flip[b])
            lr_list.append(lr)
            hr_list.append(hr)
        return torch.stack(lr_list).float() / 255, torch.stack(hr_list).float() / 255


def _flip(image: torch.Tensor, how: torch.Tensor) -> torch.Tensor:
    if how[0]:
        image = image.flip(-1)
    if how[1]:
        image = image.flip(-2)
    if how[2]:
        image = image.transpose(-1, -2)
    return image


def load_validation(root: str | Path, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` validation patches, whole, as float tensors in [0, 1]."""
    patches = PatchSet(root, "val")
    if len(patches) == 0:
        raise InputError(f"{root}: no validation patches (prepare with val_fraction > 0 or val_files)")
    lr, hr = patches.get(np.arange(min(limit, len(patches))))
    return torch.from_numpy(lr).float() / 255, torch.from_numpy(hr).float() / 255


class ShardWriter:
    """Collects patches of one split and writes them in shards of ``size``."""

    def __init__(self, root: Path, split: str, size: int) -> None:
        self.root, self.split, self.size = root, split, size
        self.shards: list[dict[str, Any]] = []
        self._lr: list[np.ndarray] = []
        self._hr: list[np.ndarray] = []
        self._index: list[tuple[int, ...]] = []

    def add(
        self,
        lr: np.ndarray,
        hr: np.ndarray,
        file: int,
        x: int,
        y: int,
        transform: int = 0,
        offset: tuple[int, int] = (0, 0),
    ) -> None:
        """Add one ``(y, x, 3)`` uint8 LR patch and its HR patch, cut at ``(x, y)`` of the
        file's variant ``transform`` + ``offset`` (see :class:`wsistore.training.prepare.Variant`)."""
        self._lr.append(lr.transpose(2, 0, 1))
        self._hr.append(hr.transpose(2, 0, 1))
        self._index.append((file, x, y, transform, *offset))
        if len(self._lr) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self._lr:
            return
        stem = f"{self.split}-{len(self.shards):05d}"
        names = {"lr": f"{stem}.lr.npy", "hr": f"{stem}.hr.npy", "index": f"{stem}.index.npy"}
        np.save(self.root / names["lr"], np.ascontiguousarray(np.stack(self._lr)))
        np.save(self.root / names["hr"], np.ascontiguousarray(np.stack(self._hr)))
        np.save(self.root / names["index"], np.asarray(self._index, dtype=np.int32))
        self.shards.append({"split": self.split, "count": len(self._lr), **names})
        self._lr, self._hr, self._index = [], [], []

    @property
    def count(self) -> int:
        return sum(s["count"] for s in self.shards) + len(self._lr)
