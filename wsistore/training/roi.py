"""Regions of interest around nuclei, found by colour deconvolution (no annotations).

rVTT's second Turing test (T2, seed 000) judges SR against HR on the regions that carry
the diagnosis. The paper takes them from annotated masks; wsistore finds them itself: the
haematoxylin channel of Ruifrok & Johnston's colour deconvolution (scikit-image's
``rgb2hed``, reimplemented in torch so training needs no scikit-image and runs on the GPU)
marks nuclei, and the crops with the most haematoxylin are taken, the same boxes from the
HR and the SR image of each pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Stain vectors of haematoxylin, eosin and DAB (rows; Ruifrok & Johnston 2001), as skimage.
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
#: skimage clips RGB at this before the logarithm and divides optical density by its log
_EPS = 1e-6


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> haematoxylin, eosin, DAB densities (skimage's
    ``rgb2hed`` on channels-first tensors)."""
    with torch.autocast(rgb.device.type, enabled=False):
        hed_from_rgb = torch.linalg.inv(torch.tensor(RGB_FROM_HED, dtype=torch.float64)).to(rgb.device, torch.float32)
        density = rgb.float().clamp_min(_EPS).log() / math.log(_EPS)
        return torch.einsum("nchw,cd->ndhw", density, hed_from_rgb).clamp_min(0)


@dataclass(frozen=True)
class NucleusCropConfig:
    """``per_image`` crops of ``crop`` HR pixels from each image, at the windows with the
    most haematoxylin; windows of one image overlap by at most half a crop."""

    crop: int = 32
    per_image: int = 1

    def __post_init__(self) -> None:
        if self.crop < 4 or self.per_image < 1:
            raise ValueError("need crop >= 4 and per_image >= 1")


@torch.no_grad()
def nucleus_boxes(hr: torch.Tensor, config: NucleusCropConfig) -> torch.Tensor:
    """Top-left corners ``(N, per_image, 2)`` (y, x) of the most nuclear crops of ``hr``."""
    c = config.crop
    if hr.shape[-1] < c or hr.shape[-2] < c:
        raise ValueError(f"crop {c} is larger than the {hr.shape[-2]} x {hr.shape[-1]} images")
    density = F.avg_pool2d(rgb_to_hed(hr)[:, :1], c, stride=1)[:, 0]  # mean over every window
    n, h, w = density.shape
    score = density.flatten(1).clone()
    ys = torch.arange(h, device=hr.device).repeat_interleave(w)
    xs = torch.arange(w, device=hr.device).repeat(h)
    boxes = []
    for _ in range(config.per_image):
        best = score.argmax(1)
        y, x = ys[best], xs[best]
        boxes.append(torch.stack([y, x], 1))
        near = ((ys[None] - y[:, None]).abs() < c // 2) & ((xs[None] - x[:, None]).abs() < c // 2)
        score = score.masked_fill(near, -math.inf)
    return torch.stack(boxes, 1)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``(N * per_image, C, size, size)`` crops of ``images`` at ``boxes`` (keeps gradients)."""
    crops = [images[i, :, y : y + size, x : x + size] for i in range(images.shape[0]) for y, x in boxes[i].tolist()]
    return torch.stack(crops)
