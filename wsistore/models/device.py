"""Which torch device a name means, for training and restoration alike."""

from __future__ import annotations

import torch

from wsistore.errors import InputError


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device}: no CUDA GPU is available (use cpu)")
        return torch.device("cuda", dev.index or 0)
    if dev.type != "cpu":
        raise InputError(f"unsupported device {device!r}; use auto, cpu or cuda[:N]")
    return dev
