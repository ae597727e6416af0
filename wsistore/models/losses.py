"""Pixel and structure losses: ``loss(sr, hr) -> scalar``, RGB in [0, 1], smallest when
``sr == hr``. Pure torch, so training needs nothing beyond torch and numpy."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.models.filters import FilterBank, FilterBankConfig, filter_bank
from wsistore.models.settings import at_least, one_of

WINDOWS = ("gaussian", "uniform")


class L1Loss(nn.Module):
    """Mean absolute error."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(sr.float(), hr.float())


class MSELoss(nn.Module):
    """Mean squared error (the Techcyte stage-1 loss)."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(sr.float(), hr.float())


@dataclass(frozen=True)
class QuasiNormConfig:
    """SQE's robust fidelity: mean of ``(r**2 + eps) ** (q / 2)``, ``q`` in (0, 2]."""

    q: float = 0.5
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 0 < self.q <= 2 or self.eps <= 0:
            raise ValueError("need 0 < q <= 2 and eps > 0")


def quasi_norm(residual: torch.Tensor, q: float, eps: float) -> torch.Tensor:
    """Mean eps-regularised q-quasi-norm of a residual, shifted to be 0 at 0."""
    return ((residual.float() ** 2 + eps) ** (q / 2)).mean() - eps ** (q / 2)


class QuasiNormLoss(nn.Module):
    """Heavy-tailed pixel loss (seed 003): down-weights outlier residuals."""

    def __init__(self, config: QuasiNormConfig | None = None) -> None:
        super().__init__()
        self.config = config or QuasiNormConfig()

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return quasi_norm(sr - hr, self.config.q, self.config.eps)


@dataclass(frozen=True)
class SSIMConfig:
    """SSIM window: Gaussian (``sigma``; side ``2 * int(3.5 sigma + 0.5) + 1``, 11 for 1.5,
    as torchmetrics) or uniform ``kernel_size`` (SQE's 5 x 5)."""

    window: str = "gaussian"
    sigma: float = 1.5
    kernel_size: int = 11

    def __post_init__(self) -> None:
        one_of("window", self.window, WINDOWS)
        if self.sigma <= 0 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("need sigma > 0 and an odd kernel_size >= 1")


def ssim(x: torch.Tensor, y: torch.Tensor, config: SSIMConfig | None = None, data_range: float = 1.0) -> torch.Tensor:
    """Per-image mean SSIM (Wang et al. 2004), each channel on its own, borders
    reflect-padded (torchmetrics' definition). Returns shape ``(N,)``."""
    c = config or SSIMConfig()
    with torch.autocast(x.device.type, enabled=False):  # variances cancel badly in bf16
        return _ssim(x.float(), y.float(), c, data_range)


def _ssim(x: torch.Tensor, y: torch.Tensor, c: SSIMConfig, data_range: float) -> torch.Tensor:
    taps = _window(c, x.device)
    pad = taps.numel() // 2
    stack = F.pad(torch.cat([x, y, x * x, y * y, x * y]), (pad, pad, pad, pad), mode="reflect")
    # the window is separable: filter along y, then along x, each as a product with a
    # banded matrix (BLAS is far faster on the CPU than a depthwise convolution)
    stack = _band(taps, stack.shape[-2]) @ stack @ _band(taps, stack.shape[-1]).T
    mx, my, xx, yy, xy = stack.split(x.shape[0])
    vx = (xx - mx * mx).clamp_min(0)
    vy = (yy - my * my).clamp_min(0)
    cxy = xy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return index.flatten(1).mean(1)


def _band(taps: torch.Tensor, size: int) -> torch.Tensor:
    """``(size - n + 1, size)`` matrix whose row ``i`` holds the ``n`` taps from column ``i``
    ("valid" correlation along one axis)."""
    n = taps.numel()
    rows = torch.arange(size - n + 1, device=taps.device)
    band = torch.zeros(size - n + 1, size, device=taps.device, dtype=taps.dtype)
    for k in range(n):
        band[rows, rows + k] = taps[k]
    return band


def _window(c: SSIMConfig, device: torch.device) -> torch.Tensor:
    """The 1-D taps whose outer product is the SSIM window."""
    if c.window == "uniform":
        return torch.full((c.kernel_size,), 1.0 / c.kernel_size, device=device)
    size = 2 * int(3.5 * c.sigma + 0.5) + 1
    t = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * c.sigma**2))
    return g / g.sum()


class SSIMLoss(nn.Module):
    """``1 - SSIM``: SQE's perception loss (up to its weight)."""

    def __init__(self, config: SSIMConfig | None = None) -> None:
        super().__init__()
        self.config = config or SSIMConfig()

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return 1 - ssim(sr, hr, self.config).mean()


class PyramidLoss(nn.Module):
    """A loss that can also judge a generator's image at every level (coarse to fine);
    ``loss(sr, hr)`` judges the output alone."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.pyramid([sr], hr)

    @abstractmethod
    def pyramid(self, images: list[torch.Tensor], hr: torch.Tensor) -> torch.Tensor:
        """``images``: the generator's images from coarse to fine, the last at HR size."""


@dataclass(frozen=True)
class MultiScaleFilteredL1Config:
    """The cascaded refinement GAN's content loss (seed 002): L1 between filtered images
    (the unfiltered image plus a fixed ``gabor`` or ``derivative`` bank, or ``none``),
    summed over levels. Levels are the generator's own images when it makes one per x2
    (cascaded refinement), otherwise the output and ``levels - 1`` x2 area reductions."""

    filters: str = "gabor"
    orientations: int = 4
    filter_sigma: float = 1.0
    levels: int = 2

    def __post_init__(self) -> None:
        filter_bank(self.filters, self.orientations, self.filter_sigma)
        at_least(self, levels=1)

    @property
    def bank(self) -> FilterBankConfig | None:
        """The filter bank these settings name (None for ``none``)."""
        return filter_bank(self.filters, self.orientations, self.filter_sigma)


class MultiScaleFilteredL1(PyramidLoss):
    """Sum over levels of the mean absolute difference of the filtered images; the HR
    target of a level is the HR image area-reduced to its size."""

    def __init__(self, config: MultiScaleFilteredL1Config | None = None) -> None:
        super().__init__()
        self.config = c = config or MultiScaleFilteredL1Config()
        self.bank = FilterBank(c.bank) if c.bank is not None else None

    def pyramid(self, images: list[torch.Tensor], hr: torch.Tensor) -> torch.Tensor:
        if len(images) == 1:
            images = [F.avg_pool2d(images[0], 2**i) if i else images[0] for i in reversed(range(self.config.levels))]
        total = torch.zeros((), device=hr.device)
        for image in images:
            factor = hr.shape[-1] // image.shape[-1]
            target = F.avg_pool2d(hr, factor) if factor > 1 else hr
            total = total + self._filtered_l1(image.float(), target.float())
        return total

    def _filtered_l1(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        loss = F.l1_loss(a, b)
        if self.bank is None:
            return loss
        with torch.autocast(a.device.type, enabled=False):
            return loss + F.l1_loss(self.bank(a), self.bank(b)) * self.bank.config.count
