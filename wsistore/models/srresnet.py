"""SRResNet, the generator of SRGAN (Ledig et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wsistore.models.base import Generator
from wsistore.models.layers import BICUBIC_REACH, PixelShuffleUp, bicubic_up, check_scale, he_mean, lr_reach, stages


@dataclass(frozen=True)
class SRResNetConfig:
    """SRGAN's generator: 16 residual blocks x 64 filters, 9x9 head and tail, PReLU.

    ``batch_norm`` restores the paper's batch normalisation; it uses batch statistics
    only in training (inference uses the stored running statistics, so tiles stay
    independent). Off by default, as in most later SR work.
    """

    blocks: int = 16
    features: int = 64
    batch_norm: bool = False
    scale: int = 4
    #: add bicubic upscaling of the input, so the network learns the residual
    bicubic_skip: bool = True

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.features < 1:
            raise ValueError("SRResNet needs at least one block and one feature")
        check_scale(self.scale)


class _Block(nn.Module):
    def __init__(self, features: int, batch_norm: bool) -> None:
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(features)) if batch_norm else nn.Identity
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            norm(),
            nn.PReLU(features),
            nn.Conv2d(features, features, 3, padding=1),
            norm(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(Generator):
    """Residual network with pixel-shuffle x2 stages (SRGAN generator)."""

    def __init__(self, config: SRResNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or SRResNetConfig()
        self.scale = c.scale
        self.register_buffer("mean", he_mean(), persistent=False)
        self.head = nn.Sequential(nn.Conv2d(3, c.features, 9, padding=4), nn.PReLU(c.features))
        self.body = nn.Sequential(*(_Block(c.features, c.batch_norm) for _ in range(c.blocks)))
        self.body_tail = nn.Sequential(
            nn.Conv2d(c.features, c.features, 3, padding=1),
            nn.BatchNorm2d(c.features) if c.batch_norm else nn.Identity(),
        )
        self.upsample = nn.Sequential(*(PixelShuffleUp(c.features, nn.PReLU(c.features)) for _ in range(stages(c.scale))))
        self.tail = nn.Conv2d(c.features, 3, 9, padding=4)

    @property
    def receptive_field(self) -> int:
        c = self.config
        n = stages(c.scale)
        # LR: head (4), two 3x3 per block, body tail, first x2 conv; 2x...: one x2 conv; HR: tail (4)
        radii = [4 + 2 * c.blocks + 1 + 1] + [1] * (n - 1) + [4]
        return max(lr_reach(radii), BICUBIC_REACH if c.bicubic_skip else 0)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(lr - self.mean)
        x = self.body_tail(self.body(x)) + x
        residual = self.tail(self.upsample(x))
        return residual + (bicubic_up(lr, self.scale) if self.config.bicubic_skip else self.mean)
