"""MicroGAN's trimmed U-Net generator (Gautam et al. 2019, seed 001).

In the paper input and output have the same size (the LR is a blurred HR). For 4x
archiving the network therefore runs on the bicubic-interpolated LR, padded at the
bottom and right to a multiple of its pooling factor and cropped back. ReLU after every
convolution, sigmoid on the output image; input normalised to [-1, 1] as in the paper.

Tiling: max pooling makes the network shift-equivariant only in steps of its pooling
factor ``2**depth`` HR pixels, i.e. :attr:`alignment` LR pixels (1 for the default depth
2 at 4x: every LR offset). Restore's compute windows start at multiples of 8 LR pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.models import reach
from wsistore.models.base import Generator
from wsistore.models.layers import bicubic_up
from wsistore.models.settings import GeneratorSettings, one_of


@dataclass(frozen=True)
class TrimmedUNetConfig(GeneratorSettings):
    """U-Net with ``depth`` poolings (the original has 4), ``convs`` 3x3 conv + ReLU per
    level, ``features`` channels at full resolution doubling per level."""

    features: int = 64
    depth: int = 2
    convs: int = 2
    scale: int = 4
    #: return bicubic + a learned residual instead of the paper's sigmoid image
    bicubic_skip: bool = False

    minimums = {"features": 1, "convs": 1}

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("depth", self.depth, range(1, 5))


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class TrimmedUNet(Generator):
    """Encoder (conv blocks + 2x2 max pooling), bottleneck, decoder (2x2 stride-2
    transposed conv, concatenated skip, conv block), 1x1 conv to RGB."""

    def __init__(self, config: TrimmedUNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TrimmedUNetConfig()
        self.scale = c.scale
        widths = [c.features * 2**level for level in range(c.depth + 1)]
        self.down = nn.ModuleList(_block(3 if i == 0 else widths[i - 1], widths[i], c.convs) for i in range(c.depth))
        self.bottleneck = _block(widths[-2], widths[-1], c.convs)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(c.depth))
        self.dec = nn.ModuleList(_block(2 * widths[i], widths[i], c.convs) for i in range(c.depth))
        self.head = nn.Conv2d(c.features, 3, 1)

    @property
    def alignment(self) -> int:
        return max(1, 2**self.config.depth // self.scale)

    @property
    def receptive_field(self) -> int:
        c = self.config

        def enc(level: int, span: reach.Span) -> reach.Span:
            span = reach.conv(span, c.convs)
            return span if level == 0 else enc(level - 1, reach.pool2(span))

        def dec(level: int, span: reach.Span) -> reach.Span:
            span = reach.conv(span, c.convs)
            deeper = reach.nearest2(span)
            below = enc(c.depth, deeper) if level + 1 == c.depth else dec(level + 1, deeper)
            return reach.hull(below, enc(level, span))

        return reach.lr_receptive_field(lambda span: reach.bicubic(dec(0, span), c.scale), c.scale, self.alignment)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = bicubic_up(lr, self.scale)
        h, w = up.shape[-2:]
        m = 2**self.config.depth
        x = up * 2 - 1
        if h % m or w % m:
            x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for level in reversed(range(self.config.depth)):
            x = self.dec[level](torch.cat([self.up[level](x), skips[level]], 1))
        out = self.head(x)[..., :h, :w]
        return up + out if self.config.bicubic_skip else torch.sigmoid(out)
