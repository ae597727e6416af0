"""Small building blocks shared by the generators, and the receptive-field arithmetic.

Nothing here mixes pixels across the image: convolutions, pointwise activations,
pixel shuffle and nearest/bicubic interpolation only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: An approximate H&E mean, subtracted on input and added back on output (EDSR's MeanShift).
HE_MEAN = (0.70, 0.55, 0.70)


def lr_reach(radii: Sequence[int]) -> int:
    """LR pixels on each side that can reach an HR output pixel.

    ``radii[i]`` is the summed kernel radius of the layers working at ``2**i`` times the LR
    resolution (``radii[0]`` at LR, ``radii[-1]`` at the output). Going down one x2 level
    (pixel shuffle or nearest upsampling: output ``p`` reads input ``p // 2``) turns a
    reach of ``r`` pixels into at most ``ceil(r / 2)``, so the bound is exact, not rounded
    up from a fractional sum.
    """
    reach = 0
    for radius in reversed(radii):
        reach = math.ceil(reach / 2) + radius
    return reach


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """torch bicubic upscaling (a = -0.75, half-pixel centres); reaches 2 LR pixels. The archive's
    loss map uses the same definition in numpy (:func:`wsistore.degradation.bicubic_upscale`,
    tested equal)."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


#: LR reach of :func:`bicubic_up`: taps ``floor(x) - 1 .. floor(x) + 2`` around ``x`` within
#: ``3/8`` of a pixel from the centre.
BICUBIC_REACH = 2


def he_mean(device: torch.device | None = None) -> torch.Tensor:
    """:data:`HE_MEAN` as a ``(1, 3, 1, 1)`` tensor."""
    return torch.tensor(HE_MEAN, device=device).view(1, 3, 1, 1)


class ResidualBlock(nn.Module):
    """``x + res_scale * body(x)``, the body a 3x3 conv, the activation and a 3x3 conv,
    each conv followed by ``norm()`` when given (EDSR, SRResNet, the compact generator,
    SQE's autoencoder)."""

    def __init__(
        self, features: int, activation: nn.Module, res_scale: float = 1.0, norm: Callable[[], nn.Module] | None = None
    ) -> None:
        super().__init__()

        def conv() -> list[nn.Module]:
            return [nn.Conv2d(features, features, 3, padding=1), *([norm()] if norm is not None else [])]

        self.body = nn.Sequential(*conv(), activation, *conv())
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + (y if self.res_scale == 1 else y * self.res_scale)


class PixelShuffleUp(nn.Sequential):
    """One x2 stage: conv to 4x channels, pixel shuffle, optional activation."""

    def __init__(self, features: int, activation: nn.Module | None = None) -> None:
        layers: list[nn.Module] = [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
        if activation is not None:
            layers.append(activation)
        super().__init__(*layers)


def stages(scale: int) -> int:
    """Number of x2 stages for ``scale``."""
    return int(math.log2(scale))
