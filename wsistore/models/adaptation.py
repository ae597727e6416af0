"""Per-slide adaptation of a generator: a small subset of its parameters, tuned at ingest on
the slide's own (LR as stored, HR) pairs (:mod:`wsistore.training.adapt`), stored in the
archive and applied on restore.

The subset is every convolution's bias and every PReLU slope (1,008 numbers for the default
compact generator): the weights stay the shipped ones, so an adaptation is a few KB and can
only shift and re-gate what the base already computes. It is stored as the subset's
values in fp16 (like the shipped weights), 2 bytes a number in a fixed order, and the
archive's metadata names the base generator's sha256; applying it to any other base is
refused.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch
from torch import nn

from wsistore.errors import ArchiveError
from wsistore.models.weights import LoadedGenerator

#: The parameters an adaptation tunes (recorded in the archive).
SUBSET = "conv biases + PReLU slopes"


def adapted_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter of the subset: every convolution's bias and every PReLU's slopes."""
    modules = dict(model.named_modules())
    found: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        module = modules[owner]
        if (isinstance(module, nn.Conv2d) and leaf == "bias") or (isinstance(module, nn.PReLU) and leaf == "weight"):
            found[name] = param
    return found


def encode(model: nn.Module) -> bytes:
    """The subset's values, fp16 little-endian, in :func:`adapted_parameters`' order (fixed
    by the architecture): 2 bytes a number, nothing else."""
    values = [p.detach().reshape(-1).cpu() for p in adapted_parameters(model).values()]
    return torch.cat(values).half().numpy().astype("<f2").tobytes()


def apply(base: LoadedGenerator, payload: bytes, base_sha256: str) -> LoadedGenerator:
    """A copy of ``base`` with the adaptation ``payload`` (made for weights ``base_sha256``)
    loaded into its subset."""
    if base_sha256 != base.weights_sha256:
        raise ArchiveError(
            f"the archive's adaptation was made for generator weights {base_sha256[:12]}..., "
            f"not {base.name} ({(base.weights_sha256 or 'no weights')[:12]}...); restore with --model to use another"
        )
    model = copy.deepcopy(base.model)
    params = adapted_parameters(model)
    sizes = [p.numel() for p in params.values()]
    if len(payload) != 2 * sum(sizes):
        raise ArchiveError(
            f"the archive's adaptation has {len(payload)} bytes; its base's subset needs {2 * sum(sizes)}"
        )
    values = torch.from_numpy(np.frombuffer(payload, dtype="<f2").astype(np.float32))
    with torch.no_grad():
        for p, part in zip(params.values(), torch.split(values, sizes), strict=True):
            p.copy_(part.view_as(p))
    sha = hashlib.sha256(payload).hexdigest()
    card = {**base.card, "adaptation": {"sha256": sha, "subset": SUBSET}}
    return LoadedGenerator(model.eval(), f"{base.name}+adapted", base.weights_sha256, card, adaptation_sha256=sha)
