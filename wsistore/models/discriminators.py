"""Discriminators: a VGG-style patch discriminator (SRGAN / ESRGAN style, fully
convolutional, so it judges any patch size and returns a map of logits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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
        if self.features < 1 or self.stages < 1 or self.max_features < self.features:
            raise ValueError("need features >= 1, stages >= 1 and max_features >= features")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")


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
