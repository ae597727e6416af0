"""Explicit registries: name -> typed config + constructor. Nothing registers itself at
import time; every entry is listed here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from wsistore.errors import InputError
from wsistore.models.adversarial import (
    AdversarialLoss,
    NonSaturatingGAN,
    RelativisticAverageGAN,
    RelativisticPairGAN,
    TwoClassKLGAN,
    WassersteinGP,
)
from wsistore.models.base import Generator
from wsistore.models.compact import CompactConfig, CompactNet
from wsistore.models.cascaded import CascadedRefinementConfig, CascadedRefinementNet
from wsistore.models.discriminators import GAPConfig, GAPDiscriminator, VGGPatchConfig, VGGPatchDiscriminator
from wsistore.models.edsr import EDSR, EDSRConfig, InterpolationUpsampler
from wsistore.models.losses import (
    L1Loss,
    MSELoss,
    MultiScaleFilteredL1,
    MultiScaleFilteredL1Config,
    QuasiNormConfig,
    QuasiNormLoss,
    SSIMConfig,
    SSIMLoss,
)
from wsistore.models.perceptual import AutoencoderConfig, AutoencoderLoss, VGG19Config, VGG19Loss
from wsistore.models.rrdbnet import RRDBNet, RRDBNetConfig
from wsistore.models.srresnet import SRResNet, SRResNetConfig
from wsistore.models.unet import TrimmedUNet, TrimmedUNetConfig


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    name: str
    config: type | None  # a frozen dataclass, or None when it takes no settings
    build: Callable[[Any], nn.Module]
    summary: str
    paper: str = ""
    #: settings of a tiny preset, for smoke tests and CPU demos
    tiny: Mapping[str, Any] = field(default_factory=dict)

    def make(self, settings: dict[str, Any] | None = None) -> nn.Module:
        settings = dict(settings or {})
        if self.config is None:
            if settings:
                raise InputError(f"{self.name} takes no settings, got {sorted(settings)}")
            return self.build(None)
        known = {f.name for f in dataclasses.fields(self.config)}
        unknown = set(settings) - known
        if unknown:
            raise InputError(f"{self.name} has no setting {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        try:
            return self.build(self.config(**settings))
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid {self.name} settings {settings}: {exc}") from None


GENERATORS: dict[str, Entry] = {
    "edsr": Entry(
        "edsr", EDSRConfig, EDSR, "EDSR residual network with pixel-shuffle upsampling",
        "Techcyte poster (seed 004); Lim et al. 2017", tiny={"blocks": 2, "features": 16},
    ),
    "srresnet": Entry(
        "srresnet", SRResNetConfig, SRResNet, "SRGAN's residual generator (9x9 head/tail, PReLU, pixel shuffle)",
        "Ledig et al. 2017 (SRGAN)", tiny={"blocks": 2, "features": 16},
    ),
    "rrdbnet": Entry(
        "rrdbnet", RRDBNetConfig, RRDBNet, "ESRGAN's residual-in-residual dense blocks, nearest x2 + conv upsampling",
        "Wang et al. 2018 (ESRGAN); SRNet/rVTT (seed 000)", tiny={"blocks": 1, "features": 16, "growth": 8},
    ),
    "trimmed_unet": Entry(
        "trimmed_unet", TrimmedUNetConfig, TrimmedUNet, "trimmed U-Net (ReLU, sigmoid image) run on the bicubic-upscaled LR",
        "MicroGAN (seed 001)", tiny={"features": 8, "depth": 2, "convs": 1},
    ),
    "cascaded_refinement": Entry(
        "cascaded_refinement", CascadedRefinementConfig, CascadedRefinementNet,
        "x2 modules (bilinear, 3x3 conv, channel layer norm, LeakyReLU) with an image per level; optional fixed filter bank input",
        "cascaded refinement GAN (seed 002)", tiny={"features": 8, "convs": 1, "orientations": 2},
    ),
    "compact": Entry(
        "compact", CompactConfig, CompactNet,
        "CPU-speed generator: PReLU residual blocks at LR, one conv + pixel shuffle x4, bicubic skip",
        "Real-ESRGAN's SRVGGNetCompact (Wang et al. 2021); made for wsistore's CPU restore", tiny={"features": 8, "blocks": 1},
    ),
    "bicubic": Entry("bicubic", None, lambda _: InterpolationUpsampler("bicubic"), "bicubic interpolation (baseline)"),
    "nearest": Entry("nearest", None, lambda _: InterpolationUpsampler("nearest"), "pixel replication: the seeds' i-HR baseline"),
}


DISCRIMINATORS: dict[str, Entry] = {
    "vgg_patch": Entry(
        "vgg_patch", VGGPatchConfig, VGGPatchDiscriminator, "VGG-style conv discriminator returning a map of patch logits",
        "Ledig et al. 2017 (SRGAN); ESRGAN; rVTT T1/T2 (seed 000)", tiny={"features": 8, "stages": 2},
    ),
    "gap_cnn": Entry(
        "gap_cnn", GAPConfig, GAPDiscriminator, "plain CNN + global average pooling: one logit per image of any size",
        "MicroGAN (seed 001); cascaded refinement GAN (seed 002); SQE (seed 003)", tiny={"features": 8, "stages": 2},
    ),
}

#: Losses ``loss(sr, hr) -> scalar``, smallest when ``sr == hr``.
LOSSES: dict[str, Entry] = {
    "l1": Entry("l1", None, lambda _: L1Loss(), "mean absolute error"),
    "mse": Entry("mse", None, lambda _: MSELoss(), "mean squared error", "Techcyte stage 1 (seed 004)"),
    "quasi_norm": Entry("quasi_norm", QuasiNormConfig, QuasiNormLoss, "robust q-quasi-norm of the residual", "SQE (seed 003)"),
    "ssim": Entry("ssim", SSIMConfig, SSIMLoss, "1 - SSIM (per channel, Gaussian or uniform window)", "SQE perception loss (seed 003)"),
    "vgg19": Entry(
        "vgg19", VGG19Config, VGG19Loss, "VGG-19 feature distance; ImageNet weights from a local file only",
        "SRGAN; Techcyte stage 2 (seed 004)",
    ),
    "autoencoder": Entry(
        "autoencoder", AutoencoderConfig, AutoencoderLoss, "manifold distance under an autoencoder pre-trained on HR patches",
        "SQE (seed 003)", tiny={"features": 8, "latent": 8, "blocks": 1},
    ),
    "multiscale_filtered_l1": Entry(
        "multiscale_filtered_l1", MultiScaleFilteredL1Config, MultiScaleFilteredL1,
        "L1 of the image and its fixed filter-bank responses, summed over the generator's levels",
        "cascaded refinement GAN (seed 002)", tiny={"orientations": 2},
    ),
}

#: Adversarial objectives over discriminator logits.
ADVERSARIAL: dict[str, Entry] = {
    "nonsaturating": Entry("nonsaturating", None, lambda _: NonSaturatingGAN(), "cross-entropy GAN, non-saturating generator loss", "Goodfellow et al. 2014; SRGAN; Techcyte"),
    "relativistic_average": Entry(
        "relativistic_average", None, lambda _: RelativisticAverageGAN(), "relativistic average GAN (RaGAN)", "ESRGAN"
    ),
    "relativistic_pair": Entry(
        "relativistic_pair", None, lambda _: RelativisticPairGAN(), "relativistic GAN on matched (HR, SR) pairs: sigmoid(C(hr) - C(sr))",
        "rVTT T1/T2 (seed 000); Jolicoeur-Martineau 2019",
    ),
    "wgan_gp": Entry(
        "wgan_gp", None, lambda _: WassersteinGP(), "Wasserstein critic with gradient penalty 10", "MicroGAN (seed 001); Gulrajani et al. 2017"
    ),
    "kl_two_class": Entry(
        "kl_two_class", None, lambda _: TwoClassKLGAN(),
        "KL from one-hot HR/SR classes to [D, 1 - D]; non-saturating generator", "SQE (seed 003)",
    ),
}


def _lookup(registry: dict[str, Entry], kind: str, name: str) -> Entry:
    try:
        return registry[name]
    except KeyError:
        raise InputError(f"unknown {kind} {name!r}; registered: {', '.join(registry)}") from None


def build_discriminator(name: str, settings: dict[str, Any] | None = None) -> nn.Module:
    """A discriminator from its registry name and settings."""
    return _lookup(DISCRIMINATORS, "discriminator", name).make(settings)


def build_loss(name: str, settings: dict[str, Any] | None = None) -> nn.Module:
    """A ``loss(sr, hr)`` module from its registry name and settings."""
    return _lookup(LOSSES, "loss", name).make(settings)


def build_adversarial(name: str) -> AdversarialLoss:
    """An adversarial objective by name."""
    loss = _lookup(ADVERSARIAL, "adversarial loss", name).make(None)
    assert isinstance(loss, AdversarialLoss)
    return loss


def build_generator(name: str, settings: dict[str, Any] | None = None) -> Generator:
    """A generator from its registry name and settings."""
    try:
        entry = GENERATORS[name]
    except KeyError:
        raise InputError(f"unknown generator {name!r}; registered: {', '.join(GENERATORS)}") from None
    model = entry.make(settings)
    assert isinstance(model, Generator)
    return model
