"""The cascaded refinement generator (Han & Yin 2018, seed 002).

Modules that each double the resolution: bilinear x2 upsampling (no transposed
convolutions, so no checkerboard), 3x3 convolutions with layer normalisation and
LeakyReLU 0.2, and a 1x1 projection to an image at every level. The first module reads
the LR image, optionally enriched with a fixed filter bank's responses.

For tiling, the layer norm normalises over the channels of each pixel only (never over
H and W), so a pixel's output depends on nothing beyond its receptive field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.models import reach
from wsistore.models.base import ResidualGenerator
from wsistore.models.filters import FilterBank, FilterBankConfig, filter_bank
from wsistore.models.layers import stages
from wsistore.models.settings import GeneratorSettings


@dataclass(frozen=True)
class CascadedRefinementConfig(GeneratorSettings):
    """``features`` channels and ``convs`` 3x3 conv + layer norm + LeakyReLU per module;
    one module per x2. ``filters``: ``none`` or a fixed bank (``gabor``, ``derivative``)
    whose responses join the RGB input (the paper's 12 optics filters become
    ``orientations`` oriented filters per channel)."""

    features: int = 64
    convs: int = 2
    filters: str = "gabor"
    orientations: int = 4
    filter_sigma: float = 1.0
    scale: int = 4
    #: add bicubic upscaling of the input to every level's image (residual learning)
    bicubic_skip: bool = True

    minimums = {"features": 1, "convs": 1}

    def __post_init__(self) -> None:
        super().__post_init__()
        filter_bank(self.filters, self.orientations, self.filter_sigma)

    @property
    def bank(self) -> FilterBankConfig | None:
        """The filter bank these settings name (None for ``none``)."""
        return filter_bank(self.filters, self.orientations, self.filter_sigma)


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channels of each pixel, with a per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's layer norm over the last dimension of the NHWC view: every pixel is one
        # row of the same length, so its result never depends on the image size (a mean
        # over dim 1 is vectorised across pixels and rounds differently at the edges);
        # the NHWC view is free for channels_last tensors
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def bilinear_up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 with half-pixel centres and edge clamping (``F.interpolate``'s
    ``bilinear``, ``align_corners=False``), written as fixed 1/4-3/4 blends of neighbours:
    elementwise arithmetic, so a pixel's value never depends on the image size."""
    h = F.pad(x, (0, 0, 1, 1), mode="replicate")  # rows
    above, middle, below = h[..., :-2, :], h[..., 1:-1, :], h[..., 2:, :]
    rows = torch.stack([0.25 * above + 0.75 * middle, 0.75 * middle + 0.25 * below], dim=-2)
    x = rows.flatten(-3, -2)  # (N, C, H, 2, W) -> (N, C, 2H, W), rows interleaved
    w = F.pad(x, (1, 1, 0, 0), mode="replicate")  # columns
    cols = torch.stack([0.25 * w[..., :-2] + 0.75 * w[..., 1:-1], 0.75 * w[..., 1:-1] + 0.25 * w[..., 2:]], dim=-1)
    return cols.flatten(-2, -1)


class RefinementModule(nn.Module):
    """Bilinear x2, then ``convs`` x (3x3 conv, channel layer norm, LeakyReLU 0.2)."""

    def __init__(self, cin: int, features: int, convs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            conv = nn.Conv2d(cin if i == 0 else features, features, 3, padding=1)
            layers += [conv, ChannelLayerNorm(features), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(bilinear_up2(x))


class CascadedRefinementNet(ResidualGenerator):
    """Coarse-to-fine generator; :meth:`forward_pyramid` returns the image of every level."""

    def __init__(self, config: CascadedRefinementConfig | None = None) -> None:
        c = config or CascadedRefinementConfig()
        super().__init__(c.scale, c.bicubic_skip)
        self.config = c
        self.bank = FilterBank(c.bank) if c.bank is not None else None
        cin = 3 + (self.bank.out_channels if self.bank is not None else 0)
        n = stages(c.scale)
        widths = [cin] + [c.features] * (n - 1)
        self.levels = nn.ModuleList(RefinementModule(width, c.features, c.convs) for width in widths)
        projections = [nn.Conv2d(c.features, 3, 1) for _ in range(n)]
        self.project = nn.ModuleList(projections)
        with torch.no_grad():  # start close to the skip image: layer-normed features are O(1)
            for conv in projections:
                conv.weight.mul_(0.1)

    @property
    def receptive_field(self) -> int:
        c = self.config

        def walk(span: reach.Span) -> reach.Span:
            lr = span
            for _ in range(stages(c.scale)):
                lr = reach.bilinear2(reach.conv(lr, c.convs))
            if self.bank is not None:
                lr = reach.conv(lr, self.bank.radius)
            return reach.hull(lr, reach.bicubic(span, c.scale)) if c.bicubic_skip else lr

        return reach.lr_receptive_field(walk, c.scale)

    def _input(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.centred(lr)
        return torch.cat([x, self.bank(x)], 1) if self.bank is not None else x

    def _image(self, level: int, features: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        return self.project[level](features) + self.skip(lr, 2 ** (level + 1))

    def forward_pyramid(self, lr: torch.Tensor) -> list[torch.Tensor]:
        x, images = self._input(lr), []
        for i, module in enumerate(self.levels):
            x = module(x)
            images.append(self._image(i, x, lr))
        return images

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self._input(lr)
        for module in self.levels:
            x = module(x)
        return self._image(len(self.levels) - 1, x, lr)
