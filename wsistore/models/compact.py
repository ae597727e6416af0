"""A generator made for CPU speed: residual blocks of 3x3 convolutions at LR resolution,
one convolution to ``3 s^2`` channels and a single pixel shuffle by ``s``, added to the
bicubic upscaling of the input (the network learns the residual).

It keeps what makes Real-ESRGAN's ``SRVGGNetCompact`` (Wang et al. 2021) fast on a CPU,
every layer at LR and one pixel-shuffle head, but trains like EDSR: PReLU residual blocks
and a long skip (a plain 12-convolution stack stalled at bicubic quality in our CPU
runs), and a bicubic instead of a nearest skip. Its cost is about
``9 F (2 F blocks + F + 3 s^2) / s^2`` multiply-adds per output pixel: the default
48 features x 6 blocks is about 18 k, against 22 k for an 8-block x 32 EDSR, whose two x2
pixel-shuffle stages work at 2x and 4x the LR size, and it runs about 2x faster on the
CPU (BENCHMARKS.md). Only local operations (convolutions, per-channel PReLU, pixel
shuffle, bicubic interpolation), so the receptive field is exact: one LR pixel per 3x3
convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wsistore.models.base import ResidualGenerator
from wsistore.models.layers import ResidualBlock
from wsistore.models.settings import GeneratorSettings


@dataclass(frozen=True)
class CompactConfig(GeneratorSettings):
    """``blocks`` residual blocks (conv-PReLU-conv) of ``features`` channels."""

    features: int = 48
    blocks: int = 6
    scale: int = 4

    minimums = {"features": 1, "blocks": 0}


class CompactNet(ResidualGenerator):
    """Residual blocks at LR, one conv + pixel shuffle x``scale``, bicubic skip."""

    def __init__(self, config: CompactConfig | None = None) -> None:
        c = config or CompactConfig()
        super().__init__(c.scale)
        self.config = c
        self.head = nn.Sequential(nn.Conv2d(3, c.features, 3, padding=1), nn.PReLU(c.features))
        self.body = nn.Sequential(*(ResidualBlock(c.features, nn.PReLU(c.features)) for _ in range(c.blocks)))
        self.tail = nn.Sequential(nn.Conv2d(c.features, 3 * c.scale**2, 3, padding=1), nn.PixelShuffle(c.scale))
        # start as bicubic: the residual's last convolution is zero at initialisation (in
        # our CPU runs this reached a given PSNR in about half the steps)
        last = self.tail[0]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @property
    def receptive_field(self) -> int:
        # head, two convs per block, tail: each 3x3 at LR; pixel shuffle reads one LR pixel
        return self.reach([2 * self.config.blocks + 2])

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(self.centred(lr))
        return self.tail(self.body(x) + x) + self.skip(lr)
