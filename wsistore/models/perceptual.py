"""Feature-space content losses: VGG-19 (weights only from a local file) and SQE's
autoencoder manifold loss (an autoencoder pre-trained on HR patches: a perceptual loss
that needs no downloaded weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsistore.errors import InputError
from wsistore.models.layers import ResidualBlock
from wsistore.models.losses import QuasiNormConfig, quasi_norm
from wsistore.models.settings import at_least, one_of

#: torchvision's VGG-19 ``features``: channels per conv, ``M`` for max pooling.
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_layer_names() -> list[str]:
    """Names of ``vgg19().features`` modules by index: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 1
    for item in _VGG19:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


@dataclass(frozen=True)
class VGG19Config:
    """Content loss on VGG-19 features (SRGAN's "VGG54" is ``relu5_4``; ESRGAN uses
    ``conv5_4``, before the activation). ``weights``: a local file with torchvision's
    ImageNet VGG-19 state dict (e.g. ``vgg19-dcbb9e9d.pth``) or a safetensors copy."""

    weights: str = ""
    layer: str = "conv5_4"
    criterion: str = "mse"

    def __post_init__(self) -> None:
        if self.layer not in vgg19_layer_names():
            raise ValueError(f"unknown VGG-19 layer {self.layer!r} (conv1_1 ... relu5_4)")
        one_of("criterion", self.criterion, ("mse", "l1"))


class VGG19Loss(nn.Module):
    """Distance between VGG-19 feature maps of SR and HR (the Techcyte content loss)."""

    def __init__(self, config: VGG19Config | None = None) -> None:
        super().__init__()
        self.config = c = config or VGG19Config()
        depth = vgg19_layer_names().index(c.layer) + 1
        state = _read_vgg19_state(c.weights)
        try:  # torchvision's own VGG-19 layer list ("E"), without the 120M-parameter classifier
            from torchvision.models.vgg import cfgs, make_layers
        except ImportError:
            raise InputError("the vgg19 loss needs torchvision (pip install torchvision)") from None
        features = make_layers(cfgs["E"])[:depth]
        wanted = features.state_dict()
        missing = [k for k, v in wanted.items() if k not in state or state[k].shape != v.shape]
        if missing:
            raise InputError(f"{c.weights}: not VGG-19 ImageNet weights (lacks or mismatches {', '.join(missing[:3])})")
        features.load_state_dict({k: state[k].float() for k in wanted})
        self.features = features.eval().requires_grad_(False)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGG19Loss:
        super().train(mode)
        self.features.eval()  # frozen: never in training mode
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        a = self.features((sr - self.mean) / self.std).float()
        b = self.features((hr - self.mean) / self.std).float().detach()
        return F.mse_loss(a, b) if self.config.criterion == "mse" else F.l1_loss(a, b)


def _read_vgg19_state(weights: str) -> dict[str, torch.Tensor]:
    """``features.*`` tensors of a VGG-19 weights file, keyed like ``vgg19().features``."""
    if not weights:
        raise InputError(
            "the vgg19 content loss needs VGG-19 ImageNet weights from a local file "
            "(set vgg19_weights = PATH, e.g. torchvision's vgg19-dcbb9e9d.pth); wsistore never downloads weights"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InputError(f"VGG-19 weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read VGG-19 weights ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: not a state dict")
    out = {}
    for key, value in raw.items():
        if isinstance(value, torch.Tensor):
            out[key.removeprefix("features.")] = value
    return out


@dataclass(frozen=True)
class AutoencoderConfig:
    """SQE's manifold loss: a small residual autoencoder (x4 spatial reduction to
    ``latent`` channels) pre-trained on HR patches; distance = q-quasi-norm of the
    difference of encodings (q = 0.5 in the paper)."""

    features: int = 32
    latent: int = 64
    blocks: int = 2
    q: float = 0.5
    eps: float = 1e-6

    def __post_init__(self) -> None:
        at_least(self, features=1, latent=1, blocks=0)
        QuasiNormConfig(self.q, self.eps)


class Autoencoder(nn.Module):
    """Conv + residual encoder (two stride-2 stages) and its mirror-symmetric decoder."""

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or AutoencoderConfig()
        f, f2 = c.features, 2 * c.features

        def res(n: int) -> list[nn.Module]:
            return [ResidualBlock(n, nn.ReLU(inplace=True)) for _ in range(c.blocks)]

        self.encoder = nn.Sequential(
            nn.Conv2d(3, f, 3, padding=1), nn.ReLU(inplace=True), *res(f),
            nn.Conv2d(f, f2, 3, stride=2, padding=1), nn.ReLU(inplace=True), *res(f2),
            nn.Conv2d(f2, c.latent, 3, stride=2, padding=1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(c.latent, f2, 3, padding=1), nn.ReLU(inplace=True), *res(f2),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(f2, f, 3, padding=1), nn.ReLU(inplace=True), *res(f),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(f, f, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(f, 3, 3, padding=1),
        )  # fmt: skip

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image * 2 - 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``image`` (sides must be multiples of 4)."""
        return (self.decoder(self.encode(image)) + 1) / 2


class AutoencoderLoss(nn.Module):
    """Manifold distance between SR and HR under a frozen, pre-trained encoder.

    The training loop pre-trains :attr:`autoencoder` on HR patches (see
    ``wsistore.training``) before any stage uses this loss, then freezes it.
    """

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or AutoencoderConfig()
        self.autoencoder = Autoencoder(self.config)

    def freeze(self) -> AutoencoderLoss:
        self.autoencoder.eval().requires_grad_(False)
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        a = self.autoencoder.encode(sr).float()
        b = self.autoencoder.encode(hr).float().detach()
        return quasi_norm(a - b, self.config.q, self.config.eps)
