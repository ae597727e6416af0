"""Discriminators: a VGG-style patch discriminator (SRGAN / ESRGAN style, fully
convolutional, so it judges any patch size and returns a map of logits), and a plain CNN
with global average pooling that returns one logit per image (MicroGAN, SQE)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wsistore.models.settings import at_least, one_of

NORMS = ("batch", "none")


@dataclass(frozen=True)
class VGGPatchConfig:
    """SRGAN's discriminator body: pairs of 3x3 convs (stride 1, then 2) doubling the
    channels from ``features`` up to ``max_features``; LeakyReLU 0.2. The dense head of
    SRGAN is replaced by a 1x1 conv to one logit per position (a patch discriminator)."""

    features: int = 64
    stages: int = 4
    max_features: int = 512
    norm: str = "batch"

    def __post_init__(self) -> None:
        at_least(self, features=1, stages=1, max_features=self.features)
        one_of("norm", self.norm, NORMS)


class VGGPatchDiscriminator(nn.Module):
    """RGB in [0, 1], ``(N, 3, H, W) -> (N, 1, H / 2**stages, W / 2**stages)`` logits."""

    def __init__(self, config: VGGPatchConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VGGPatchConfig()
        layers: list[nn.Module] = [nn.Conv2d(3, c.features, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        channels = c.features
        for i in range(c.stages):
            out = min(c.features * 2**i, c.max_features)
            layers += self._conv(channels, out, stride=2 if i == 0 else 1)
            if i > 0:
                layers += self._conv(out, out, stride=2)
            channels = out
        layers.append(nn.Conv2d(channels, 1, 1))
        self.body = nn.Sequential(*layers)

    def _conv(self, cin: int, cout: int, stride: int) -> list[nn.Module]:
        norm = self.config.norm == "batch"
        return [
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not norm),
            nn.BatchNorm2d(cout) if norm else nn.Identity(),
            nn.LeakyReLU(0.2, inplace=True),
        ]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image * 2 - 1)


GAP_NORMS = ("none", "batch", "layer")
DOWNSAMPLING = ("stride", "maxpool")


@dataclass(frozen=True)
class GAPConfig:
    """A plain CNN ending in global average pooling: one logit per image of any size.

    MicroGAN (seed 001): DeblurGAN's critic (4x4 stride-2 convs, LeakyReLU 0.2) with its
    dense layers replaced by global average pooling; ``norm = "none"`` suits WGAN-GP.
    The cascaded refinement GAN (seed 002): 3x3 conv, layer norm, LeakyReLU, 2x2 max
    pooling (``kernel = 3, norm = "layer", downsampling = "maxpool"``). SQE (seed 003):
    stride-2 convs each followed by batch norm (``kernel = 3, norm = "batch"``).
    ``layer`` normalises over channels and space of each image (GroupNorm with one group).
    """

    features: int = 64
    stages: int = 4
    max_features: int = 512
    kernel: int = 4
    norm: str = "none"
    downsampling: str = "stride"

    def __post_init__(self) -> None:
        at_least(self, features=1, stages=1, max_features=self.features)
        one_of("norm", self.norm, GAP_NORMS)
        one_of("downsampling", self.downsampling, DOWNSAMPLING)
        if self.kernel < 1 or (self.downsampling == "maxpool" and self.kernel % 2 == 0):
            raise ValueError("kernel must be >= 1, and odd with max pooling")


class GAPDiscriminator(nn.Module):
    """RGB in [0, 1], ``(N, 3, H, W) -> (N, 1)`` logits (or critic scores)."""

    def __init__(self, config: GAPConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GAPConfig()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(c.stages):
            out = min(c.features * 2**i, c.max_features)
            layers += self._stage(channels, out, normalise=i > 0)
            channels = out
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def _stage(self, cin: int, cout: int, normalise: bool) -> list[nn.Module]:
        c = self.config
        norm = normalise and c.norm != "none"
        if c.downsampling == "stride":
            conv = nn.Conv2d(cin, cout, c.kernel, stride=2, padding=(c.kernel - 1) // 2, bias=not norm)
        else:
            conv = nn.Conv2d(cin, cout, c.kernel, padding=c.kernel // 2, bias=not norm)
        layers: list[nn.Module] = [conv]
        if norm:
            layers.append(nn.BatchNorm2d(cout) if c.norm == "batch" else nn.GroupNorm(1, cout))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        if c.downsampling == "maxpool":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        return layers

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image * 2 - 1).mean(dim=(2, 3))
