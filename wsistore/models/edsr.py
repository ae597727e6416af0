"""Generators: EDSR (Techcyte, seed 004) and the interpolation baselines.

All take RGB in [0, 1] and return the 4x image (unclamped; callers clamp when storing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.models.base import Generator, TrunkGenerator
from wsistore.models.layers import ResidualBlock, stages
from wsistore.models.settings import GeneratorSettings


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
class EDSRConfig(GeneratorSettings):
    """EDSR: the seed uses 32 residual blocks x 64 filters."""

    blocks: int = 32
    features: int = 64
    res_scale: float = 0.1
    scale: int = 4
    #: add bicubic upscaling of the input to the output, so the network learns the
    #: residual; trains much faster under a short GPU budget (a documented deviation)
    bicubic_skip: bool = True

    minimums = {"blocks": 1, "features": 1}


class PixelShuffleUpsampler(nn.Sequential):
    """log2(scale) stages of conv + pixel shuffle x2."""

    def __init__(self, features: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for _ in range(stages(scale)):
            layers += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
        super().__init__(*layers)


class EDSR(TrunkGenerator):
    """Enhanced Deep Super-Resolution network (Lim et al. 2017)."""

    def __init__(self, config: EDSRConfig | None = None) -> None:
        c = config or EDSRConfig()
        super().__init__(c.scale, c.bicubic_skip)
        self.config = c
        self.head = nn.Conv2d(3, c.features, 3, padding=1)
        # conv-ReLU-conv with residual scaling, no batch norm
        blocks = (ResidualBlock(c.features, nn.ReLU(inplace=True), c.res_scale) for _ in range(c.blocks))
        self.body = nn.Sequential(*blocks)
        self.body_tail = nn.Conv2d(c.features, c.features, 3, padding=1)
        self.upsample = PixelShuffleUpsampler(c.features, c.scale)
        self.tail = nn.Conv2d(c.features, 3, 3, padding=1)

    @property
    def receptive_field(self) -> int:
        c = self.config
        # LR: head, two 3x3 per block, body tail, first x2 conv; one conv per further x2
        # level; HR: tail
        return self.reach([1 + 2 * c.blocks + 1 + 1] + [1] * (stages(c.scale) - 1) + [1])
