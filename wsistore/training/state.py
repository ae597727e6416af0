"""Run state for exact resume: weights, optimizers, schedulers and RNG states in one
``torch.save`` file (tensors and plain values only; loaded with ``weights_only``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from wsistore.errors import InputError, WsistoreError, first_line

STATE_FILE = "state.pt"
STATE_VERSION = 1


def rng_state(sampler: torch.Generator) -> dict[str, Any]:
    """Every random state training draws from."""
    state: dict[str, Any] = {"sampler": sampler.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], sampler: torch.Generator) -> None:
    """Put back the random states :func:`rng_state` saved."""
    sampler.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous state."""
    path = out / STATE_FILE
    tmp = path.with_suffix(".tmp")
    try:
        torch.save({"version": STATE_VERSION, **state}, tmp)
    except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise WsistoreError(
            f"cannot write {path}: {write_failure(out, exc)}; the previous state is kept, "
            "rerun with --resume once fixed"
        ) from exc
    os.replace(tmp, path)


def write_failure(where: Path, exc: BaseException) -> str:
    """Why a write into ``where`` failed, in words: a full disk is named as one, whatever
    the library that hit it says."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    try:
        st = os.statvfs(where)
        if st.f_bavail * st.f_frsize < 1 << 20:
            return "no space left on device"
    except OSError:
        pass
    return first_line(exc)


def load_state(out: Path) -> dict[str, Any]:
    """The run state saved in ``out``, checked."""
    path = out / STATE_FILE
    if not path.is_file():
        raise InputError(f"{out}: nothing to resume ({STATE_FILE} missing)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: unreadable run state ({type(exc).__name__})") from None
    if state.get("version") != STATE_VERSION:
        raise InputError(f"{path}: run state version {state.get('version')} is not {STATE_VERSION}")
    return dict(state)


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s weights on the CPU, for the run state."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}
