"""A fixed bank of oriented filters for stained slides.

The cascaded refinement GAN (seed 002) enriches its input and computes its content loss
with diffraction pattern filters derived from phase-contrast optics. Bright-field H&E has
no such optics model, so wsistore offers fixed, hand-crafted banks that respond to the
same kind of structure (edges and ridges of nuclei, membranes and fibres at several
orientations): even and odd Gabor filters, or first derivatives of a Gaussian plus its
Laplacian. The filters are buffers, never trained, and work on each RGB channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.models.settings import one_of

BANKS = ("gabor", "derivative")


@dataclass(frozen=True)
class FilterBankConfig:
    """``gabor``: cosine and sine Gabor filters (wavelength ``4 sigma``) at ``orientations``
    angles; ``derivative``: Gaussian first derivatives at ``orientations`` angles and the
    Laplacian of Gaussian. Kernels are ``2 ceil(3 sigma) + 1`` pixels wide."""

    kind: str = "gabor"
    orientations: int = 4
    sigma: float = 1.0

    def __post_init__(self) -> None:
        one_of("filter bank", self.kind, BANKS)
        if self.orientations < 1 or self.sigma <= 0:
            raise ValueError("need orientations >= 1 and sigma > 0")

    @property
    def radius(self) -> int:
        return math.ceil(3 * self.sigma)

    @property
    def count(self) -> int:
        """Filters per channel."""
        return 2 * self.orientations if self.kind == "gabor" else self.orientations + 1


def filter_bank(kind: str, orientations: int, sigma: float) -> FilterBankConfig | None:
    """The bank that settings name: none for ``none``, else one of :data:`BANKS` (checked)."""
    return None if kind == "none" else FilterBankConfig(kind, orientations, sigma)


def bank_kernels(config: FilterBankConfig) -> torch.Tensor:
    """``(count, k, k)`` float32 kernels, each zero-mean with unit L1 norm."""
    r, s = config.radius, config.sigma
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    y, x = torch.meshgrid(t, t, indexing="ij")
    gauss = torch.exp(-(x**2 + y**2) / (2 * s**2))
    kernels = []
    for i in range(config.orientations):
        theta = math.pi * i / config.orientations
        u = x * math.cos(theta) + y * math.sin(theta)
        if config.kind == "gabor":
            phase = 2 * math.pi * u / (4 * s)
            kernels += [gauss * torch.cos(phase), gauss * torch.sin(phase)]
        else:
            kernels.append(-u / s**2 * gauss)
    if config.kind == "derivative":
        kernels.append((x**2 + y**2 - 2 * s**2) / s**4 * gauss)
    out = torch.stack(kernels)
    out = out - out.mean(dim=(1, 2), keepdim=True)
    return (out / out.abs().sum(dim=(1, 2), keepdim=True)).float()


class FilterBank(nn.Module):
    """``(N, C, H, W) -> (N, C * count, H, W)``: every filter on every channel, zero-padded
    (so a pixel's response reads only pixels within :attr:`radius`)."""

    def __init__(self, config: FilterBankConfig | None = None, channels: int = 3) -> None:
        super().__init__()
        self.config = c = config or FilterBankConfig()
        self.channels = channels
        kernels = bank_kernels(c)
        self.weight: torch.Tensor
        self.register_buffer("weight", kernels.repeat(channels, 1, 1).unsqueeze(1), persistent=False)

    @property
    def radius(self) -> int:
        return self.config.radius

    @property
    def out_channels(self) -> int:
        return self.channels * self.config.count

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        r = self.radius
        return F.conv2d(image, self.weight.to(image.dtype), padding=r, groups=self.channels)
