"""Validation metrics on held-out patches: PSNR, SSIM and L1 of the 8-bit output."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from wsistore.models.losses import ssim
from wsistore.psnr import psnr_from_mse


def autocast(device: torch.device, bf16: bool = True) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA (unless ``bf16`` is false); plain fp32 elsewhere."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``, channels_last on CUDA."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


@torch.no_grad()
def evaluate(
    model: nn.Module, lr: torch.Tensor, hr: torch.Tensor, device: torch.device, batch: int, bf16: bool = True
) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and L1 over patches, output clamped and rounded to 8 bits as
    restore stores it."""
    was_training = model.training
    model.eval()
    psnr, sim, l1 = [], [], []
    try:
        for i in range(0, lr.shape[0], batch):
            x, y = to_device(lr[i : i + batch], device), hr[i : i + batch].to(device)
            with autocast(device, bf16):
                out = model(x)
            out = (out.float().clamp(0, 1) * 255).round() / 255
            mse = ((out - y) ** 2).flatten(1).mean(1)
            psnr += [psnr_from_mse(float(m), peak=1.0) for m in mse]
            sim += ssim(out, y).tolist()
            l1 += (out - y).abs().flatten(1).mean(1).tolist()
    finally:
        model.train(was_training)
    n = len(psnr)
    return {"psnr": sum(psnr) / n, "ssim": sum(sim) / n, "l1": sum(l1) / n, "patches": n}
