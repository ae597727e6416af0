"""Generators: EDSR (Techcyte, seed 004) and the interpolation baselines.

All take RGB in [0, 1] and return the 4x image (unclamped; callers clamp when storing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.models.base import Generator
from wsistore.models.layers import BICUBIC_REACH, HE_MEAN, lr_reach


class InterpolationUpsampler(Generator):
    """A fixed interpolation: ``bicubic`` (torch, a = -0.75) or ``nearest`` (i-HR:
    pixel replication, the seeds' "LR scaled back up with area interpolation")."""

    def __init__(self, mode: str = "bicubic", scale: int = 4) -> None:
        super().__init__()
        if mode not in ("bicubic", "nearest", "bilinear"):
            raise ValueError(f"unknown interpolation {mode!r}")
        self.mode = mode
        self.scale = scale

    @property
    def receptive_field(self) -> int:
        return {"nearest": 0, "bilinear": 1, "bicubic": 2}[self.mode]

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(lr, scale_factor=self.scale, mode="nearest")
        return F.interpolate(lr, scale_factor=self.scale, mode=self.mode, align_corners=False)


@dataclass(frozen=True)
class EDSRConfig:
    """EDSR: the seed uses 32 residual blocks x 64 filters."""

    blocks: int = 32
    features: int = 64
    res_scale: float = 0.1
    scale: int = 4
    #: add bicubic upscaling of the input to the output, so the network learns the
    #: residual; trains much faster under a short GPU budget (a documented deviation)
    bicubic_skip: bool = True

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.features < 1:
            raise ValueError("EDSR needs at least one block and one feature")
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {self.scale}")


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with residual scaling (no batch norm, as in EDSR)."""

    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class PixelShuffleUpsampler(nn.Sequential):
    """log2(scale) stages of conv + pixel shuffle x2."""

    def __init__(self, features: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
        super().__init__(*layers)


class EDSR(Generator):
    """Enhanced Deep Super-Resolution network (Lim et al. 2017)."""

    def __init__(self, config: EDSRConfig | None = None) -> None:
        super().__init__()
        self.config = config or EDSRConfig()
        c = self.config
        self.scale = c.scale
        self.register_buffer("mean", torch.tensor(HE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, c.features, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(c.features, c.res_scale) for _ in range(c.blocks)))
        self.body_tail = nn.Conv2d(c.features, c.features, 3, padding=1)
        self.upsample = PixelShuffleUpsampler(c.features, c.scale)
        self.tail = nn.Conv2d(c.features, 3, 3, padding=1)

    @property
    def receptive_field(self) -> int:
        c = self.config
        n = int(math.log2(c.scale))
        # LR: head, two 3x3 per block, body tail, first x2 conv; one conv per further x2
        # level; HR: tail
        radii = [1 + 2 * c.blocks + 1 + 1] + [1] * (n - 1) + [1]
        return max(lr_reach(radii), BICUBIC_REACH if c.bicubic_skip else 0)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(lr - self.mean)
        x = self.body_tail(self.body(x)) + x
        residual = self.tail(self.upsample(x))
        if self.config.bicubic_skip:
            return residual + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return residual + self.mean
