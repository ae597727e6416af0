"""Generator weights: safetensors files that carry their own model card.

The card (JSON in the safetensors metadata under ``wsistore_card``) names the registry
architecture and its settings, so a weights file is all restore needs. Shipped weights
live in ``wsistore/weights`` and are listed with their sha256 in ``registry.json``;
loading one whose bytes differ is refused. Each entry records the archive LR its model was
trained on (``"lr"``: :func:`lr_setting`); the entry marked ``"default"`` is the model used
when none is named, unless an archive's LR matches another of its family better
(:func:`default_model`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from wsistore.checksums import sha256_file
from wsistore.errors import InputError
from wsistore.models.base import Generator
from wsistore.models.registry import GENERATORS, build_generator

if TYPE_CHECKING:
    from wsistore.codecs import ImageCodec

CARD_KEY = "wsistore_card"
#: Generators that need no weights.
INTERPOLATIONS = ("bicubic", "nearest")
#: The model when none is given and no trained weights ship with this release.
FALLBACK_MODEL = "bicubic"


@dataclass
class LoadedGenerator:
    """A ready generator and where it came from (recorded in every restore's output)."""

    model: Generator
    name: str
    weights_sha256: str | None
    card: dict[str, Any] = field(default_factory=dict)
    #: the per-slide adaptation applied on top of the weights (:mod:`wsistore.models.adaptation`)
    adaptation_sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        architecture = self.card.get("architecture", self.name)
        described = {"name": self.name, "weights_sha256": self.weights_sha256, "architecture": architecture}
        if self.adaptation_sha256:
            described["adaptation_sha256"] = self.adaptation_sha256
        return described


def shipped_weights() -> dict[str, dict[str, Any]]:
    """Name -> {"file", "sha256", ...} of the weights shipped inside the package."""
    text = resources.files("wsistore.weights").joinpath("registry.json").read_text()
    return dict(json.loads(text))


def lr_setting(codec: ImageCodec | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The LR setting a generator is matched on (a registry entry's ``"lr"``): the codec's zarr
    name and its quality knob, e.g. ``{"codec": "imagecodecs_avif", "level": 75}`` (the name
    alone for a lossless codec); encoder effort (speed) does not count. ``codec`` is an
    :class:`ImageCodec` or its recorded ``{"name": ..., "configuration": ...}``; None (LR not
    coded) gives None."""
    if codec is None:
        return None
    from wsistore.codecs import ImageCodec, codec_from_config  # zarr and imagecodecs: not for training

    if not isinstance(codec, ImageCodec):
        codec = codec_from_config(dict(codec))
    key = codec.quality_key
    return {"codec": codec.zarr_name, **({key: getattr(codec, key)} if key else {})}


def default_model(codec: ImageCodec | Mapping[str, Any] | None = None) -> str:
    """The shipped weights used when no model is named, or bicubic when none ship.

    Without ``codec``: the entry marked ``"default"`` (else the first). With the codec an
    archive's LR is stored with: the default if it was trained on that LR setting
    (:func:`lr_setting`), else a shipped entry of the default's architecture trained on
    exactly that setting (the one marked ``"default_for_lr"`` first), else the default.
    """
    shipped = shipped_weights()
    marked = [name for name, entry in shipped.items() if entry.get("default")]
    default = (marked or list(shipped) or [FALLBACK_MODEL])[0]
    wanted = lr_setting(codec)
    if wanted is None or default not in shipped or shipped[default].get("lr") == wanted:
        return default
    family = shipped[default]["architecture"]
    matched = [n for n, e in shipped.items() if e["architecture"] == family and e.get("lr") == wanted]
    matched.sort(key=lambda name: not shipped[name].get("default_for_lr"))
    return (matched or [default])[0]


def save_generator(path: str | Path, model: Generator, card: dict[str, Any], half: bool = True) -> str:
    """Write weights (fp16 by default) with their card; returns the file's sha256."""
    if "architecture" not in card or card["architecture"] not in GENERATORS:
        raise ValueError("the card must name a registered architecture")
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()
    }
    save_file(tensors, str(path), metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
    return sha256_file(Path(path))


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card stored in a weights file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable safetensors weights file ({exc})") from None
    if CARD_KEY not in meta:
        raise InputError(f"{path}: weights carry no wsistore model card")
    return dict(json.loads(meta[CARD_KEY]))


def load_generator(spec: str, device: str | torch.device = "cpu") -> LoadedGenerator:
    """``bicubic``/``nearest``, a shipped name, or a path to a ``.safetensors`` file."""
    if spec in INTERPOLATIONS:
        return LoadedGenerator(build_generator(spec).to(device).eval(), spec, None, {"architecture": spec, "scale": 4})
    shipped = shipped_weights()
    if spec in shipped:
        entry = shipped[spec]
        path = Path(str(resources.files("wsistore.weights").joinpath(entry["file"])))
        expected: str | None = entry["sha256"]
        name = spec
    else:
        path = Path(spec)
        if not path.is_file():
            known = ", ".join([*INTERPOLATIONS, *shipped]) or "none"
            raise InputError(f"unknown model {spec!r}: not a shipped name ({known}) nor a weights file")
        sidecar = path.with_name(path.name + ".sha256")
        expected = sidecar.read_text().split()[0] if sidecar.is_file() else None
        name = path.stem
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        raise InputError(
            f"weights {path.name} fail their checksum (sha256 {digest[:12]}..., expected {expected[:12]}...)"
        )
    card = read_card(path)
    model = build_generator(card["architecture"], card.get("config", {}))
    try:
        state = load_file(str(path))
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, SafetensorError) as exc:
        raise InputError(f"weights {path.name} do not fit {card['architecture']}: {str(exc).splitlines()[0]}") from None
    return LoadedGenerator(model.to(device).eval(), name, digest, card)
