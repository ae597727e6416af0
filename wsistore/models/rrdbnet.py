"""RRDBNet, the generator of ESRGAN (Wang et al. 2018): residual-in-residual dense blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.models.base import TrunkGenerator
from wsistore.models.layers import stages
from wsistore.models.settings import GeneratorSettings


@dataclass(frozen=True)
class RRDBNetConfig(GeneratorSettings):
    """ESRGAN: 23 RRDB blocks, 64 features, growth 32, residual scaling 0.2."""

    blocks: int = 23
    features: int = 64
    growth: int = 32
    res_scale: float = 0.2
    scale: int = 4
    #: add bicubic upscaling of the input, so the network learns the residual
    bicubic_skip: bool = True

    minimums = {"blocks": 1, "features": 1, "growth": 1}


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing all earlier outputs (residual dense block)."""

    def __init__(self, features: int, growth: int, res_scale: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(features + i * growth, growth, 3, padding=1) for i in range(4))
        self.last = nn.Conv2d(features + 4 * growth, features, 3, padding=1)
        self.act = _lrelu()
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for conv in self.convs:
            outputs.append(self.act(conv(torch.cat(outputs, 1))))
        return x + self.last(torch.cat(outputs, 1)) * self.res_scale


class RRDB(nn.Module):
    """Three dense blocks inside one scaled residual."""

    def __init__(self, features: int, growth: int, res_scale: float) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(features, growth, res_scale) for _ in range(3)))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blocks(x) * self.res_scale


class RRDBNet(TrunkGenerator):
    """ESRGAN's generator: RRDB trunk, nearest x2 upsampling + conv stages."""

    def __init__(self, config: RRDBNetConfig | None = None) -> None:
        c = config or RRDBNetConfig()
        super().__init__(c.scale, c.bicubic_skip)
        self.config = c
        self.head = nn.Conv2d(3, c.features, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(c.features, c.growth, c.res_scale) for _ in range(c.blocks)))
        self.body_tail = nn.Conv2d(c.features, c.features, 3, padding=1)
        self.up_convs = nn.ModuleList(nn.Conv2d(c.features, c.features, 3, padding=1) for _ in range(stages(c.scale)))
        self.hr_conv = nn.Conv2d(c.features, c.features, 3, padding=1)
        self.tail = nn.Conv2d(c.features, 3, 3, padding=1)
        self.act = _lrelu()

    @property
    def receptive_field(self) -> int:
        c = self.config
        # LR: head, 15 convs per RRDB (3 dense blocks of 5), body tail; each x2 level: its
        # conv (after the nearest upsampling); HR: hr_conv and tail on top of the last one
        return self.reach([1 + 15 * c.blocks + 1] + [1] * (stages(c.scale) - 1) + [3])

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest x2 and a conv per stage, then the HR conv (the tail's input)."""
        for conv in self.up_convs:
            x = self.act(conv(F.interpolate(x, scale_factor=2, mode="nearest")))
        return self.act(self.hr_conv(x))
