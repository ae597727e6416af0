"""SRResNet, the generator of SRGAN (Ledig et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from wsistore.models.base import TrunkGenerator
from wsistore.models.layers import PixelShuffleUp, ResidualBlock, stages
from wsistore.models.settings import GeneratorSettings


@dataclass(frozen=True)
class SRResNetConfig(GeneratorSettings):
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

    minimums = {"blocks": 1, "features": 1}


class SRResNet(TrunkGenerator):
    """Residual network with pixel-shuffle x2 stages (SRGAN generator)."""

    def __init__(self, config: SRResNetConfig | None = None) -> None:
        c = config or SRResNetConfig()
        super().__init__(c.scale, c.bicubic_skip)
        self.config = c
        self.head = nn.Sequential(nn.Conv2d(3, c.features, 9, padding=4), nn.PReLU(c.features))
        norm = (lambda: nn.BatchNorm2d(c.features)) if c.batch_norm else nn.Identity
        blocks = (ResidualBlock(c.features, nn.PReLU(c.features), norm=norm) for _ in range(c.blocks))
        self.body = nn.Sequential(*blocks)
        self.body_tail = nn.Sequential(
            nn.Conv2d(c.features, c.features, 3, padding=1),
            nn.BatchNorm2d(c.features) if c.batch_norm else nn.Identity(),
        )
        ups = (PixelShuffleUp(c.features, nn.PReLU(c.features)) for _ in range(stages(c.scale)))
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(c.features, 3, 9, padding=4)

    @property
    def receptive_field(self) -> int:
        c = self.config
        # LR: head (4), two 3x3 per block, body tail, first x2 conv; 2x...: one x2 conv; HR: tail (4)
        return self.reach([4 + 2 * c.blocks + 1 + 1] + [1] * (stages(c.scale) - 1) + [4])
