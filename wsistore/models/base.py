"""What every generator promises: RGB in [0, 1], ``(N, 3, h, w) -> (N, 3, s h, s w)``,
its receptive field in LR pixels, parameter count and FLOPs per output pixel.

Generators must not mix pixels across the image (no batch statistics at inference, no
normalisation over H and W), so a tile's output never depends on pixels beyond the
receptive field: restore relies on this for seamless tiling.
"""

from __future__ import annotations

import torch
from torch import nn


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
