"""What every generator promises: RGB in [0, 1], ``(N, 3, h, w) -> (N, 3, s h, s w)``,
its receptive field in LR pixels, parameter count and FLOPs per output pixel.

Generators must not mix pixels across the image (no batch statistics at inference, no
normalisation over H and W), so a tile's output never depends on pixels beyond the
receptive field: restore relies on this for seamless tiling.

:class:`ResidualGenerator` is the frame of the generators that learn a residual over a
skip image, and :class:`TrunkGenerator` the EDSR layout several of them share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from wsistore.models.layers import BICUBIC_REACH, bicubic_up, he_mean, lr_reach


class Generator(nn.Module):
    """Base class of super-resolution generators."""

    #: upscaling factor
    scale: int = 4

    @property
    def receptive_field(self) -> int:
        """LR pixels on each side of a pixel that can influence its output (rounded up)."""
        raise NotImplementedError  # abstract

    @property
    def alignment(self) -> int:
        """LR step of the shift-equivariance: a tile's output equals the matching crop of a
        larger image's output when the tile starts at a multiple of it (pooling networks)."""
        return 1

    def forward(self, lr: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError  # abstract

    def forward_pyramid(self, lr: torch.Tensor) -> list[torch.Tensor]:
        """Images from the coarsest level to the output, for multi-scale losses; only the
        output unless the generator makes an image at every level."""
        return [self(lr)]

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_output_pixel(self) -> float:
        """Multiply-adds x 2 of every convolution, per output pixel (measured on 16 x 16)."""
        return count_conv_flops(self, 16) / (16 * self.scale) ** 2


class ResidualGenerator(Generator):
    """A generator whose network reads the LR minus an H&E mean (EDSR's MeanShift) and
    returns a residual, added to the bicubic upscaling of the LR (``bicubic_skip``: the
    network learns the residual) or else to the mean."""

    def __init__(self, scale: int, bicubic_skip: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.bicubic_skip = bicubic_skip
        self.mean: torch.Tensor
        self.register_buffer("mean", he_mean(), persistent=False)

    def centred(self, lr: torch.Tensor) -> torch.Tensor:
        """The network's input: the LR minus the mean."""
        return lr - self.mean

    def skip(self, lr: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """What the residual is added to, at ``scale`` (by default the generator's)."""
        return bicubic_up(lr, scale or self.scale) if self.bicubic_skip else self.mean

    def reach(self, radii: Sequence[int]) -> int:
        """Receptive field of a network with these radii per level (:func:`lr_reach`) and the skip."""
        return max(lr_reach(radii), BICUBIC_REACH if self.bicubic_skip else 0)


class TrunkGenerator(ResidualGenerator):
    """EDSR's layout, shared by SRResNet and RRDBNet: at LR a ``head``, a ``body`` of
    residual blocks and a ``body_tail`` inside one long skip; then ``upsample`` to the
    output size and a ``tail`` to the residual image."""

    head: nn.Module
    body: nn.Module
    body_tail: nn.Module
    upsample: Callable[[torch.Tensor], torch.Tensor]
    tail: nn.Module

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(self.centred(lr))
        x = self.body_tail(self.body(x)) + x
        return self.tail(self.upsample(x)) + self.skip(lr)


def count_conv_flops(model: nn.Module, size: int) -> float:
    """FLOPs of all Conv2d / Linear layers for one ``size x size`` RGB input."""
    total = 0.0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += 2.0 * output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            total += 2.0 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    return total
