"""Explicit registries: name -> typed settings + constructor, with the one lookup and
settings check every kind of component goes through. Nothing registers itself at import
time; every entry is listed here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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
from wsistore.models.cascaded import CascadedRefinementConfig, CascadedRefinementNet
from wsistore.models.compact import CompactConfig, CompactNet
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

M = TypeVar("M", bound=nn.Module)


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

    def configure(self, settings: Mapping[str, Any] | None = None, where: str = "") -> Any:
        """The checked settings object (None for a component without settings); errors
        start with ``where``."""
        at = f"{where}: " if where else ""
        given = dict(settings or {})
        if self.config is None:
            if given:
                raise InputError(f"{at}{self.name} takes no settings, got {', '.join(sorted(given))}")
            return None
        known = sorted(f.name for f in dataclasses.fields(self.config))
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InputError(f"{at}{self.name} has no setting {', '.join(unknown)}; known: {', '.join(known)}")
        try:
            return self.config(**given)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{at}invalid {self.name} settings {given}: {exc}") from None


class Registry(Mapping[str, Entry], Generic[M]):
    """The entries of one kind of component by name, each building an ``M``."""

    def __init__(self, kind: str, builds: type[Any], entries: Iterable[Entry]) -> None:
        self.kind = kind
        self.builds = builds
        self._entries = {entry.name: entry for entry in entries}

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str, where: str = "") -> Entry:
        """The entry called ``name``, or an error that names the registered ones."""
        if name not in self._entries:
            at = f"{where}: " if where else ""
            raise InputError(f"{at}unknown {self.kind} {name!r}; registered: {', '.join(self._entries)}")
        return self._entries[name]

    def check(self, name: str, settings: Mapping[str, Any] | None = None, where: str = "") -> Entry:
        """The entry called ``name``, its settings checked (nothing is built)."""
        entry = self.entry(name, where)
        entry.configure(settings, where)
        return entry

    def build(self, name: str, settings: Mapping[str, Any] | None = None) -> M:
        """A new component from its name and settings."""
        entry = self.entry(name)
        component = entry.build(entry.configure(settings))
        if not isinstance(component, self.builds):
            raise TypeError(f"{self.kind} {name} built a {type(component).__name__}, not a {self.builds.__name__}")
        return component


def _fixed(make: Callable[[], nn.Module]) -> Callable[[Any], nn.Module]:
    """The constructor of a component without settings."""
    return lambda _: make()


GENERATORS: Registry[Generator] = Registry("generator", Generator, [
    Entry(
        "edsr", EDSRConfig, EDSR, "EDSR residual network with pixel-shuffle upsampling",
        "Techcyte poster (seed 004); Lim et al. 2017", tiny={"blocks": 2, "features": 16},
    ),
    Entry(
        "srresnet", SRResNetConfig, SRResNet, "SRGAN's residual generator (9x9 head/tail, PReLU, pixel shuffle)",
        "Ledig et al. 2017 (SRGAN)", tiny={"blocks": 2, "features": 16},
    ),
    Entry(
        "rrdbnet", RRDBNetConfig, RRDBNet,
        "ESRGAN's residual-in-residual dense blocks, nearest x2 + conv upsampling",
        "Wang et al. 2018 (ESRGAN); SRNet/rVTT (seed 000)", tiny={"blocks": 1, "features": 16, "growth": 8},
    ),
    Entry(
        "trimmed_unet", TrimmedUNetConfig, TrimmedUNet,
        "trimmed U-Net (ReLU, sigmoid image) run on the bicubic-upscaled LR",
        "MicroGAN (seed 001)", tiny={"features": 8, "depth": 2, "convs": 1},
    ),
    Entry(
        "cascaded_refinement", CascadedRefinementConfig, CascadedRefinementNet,
        "x2 modules (bilinear, 3x3 conv, channel layer norm, LeakyReLU) with an image per level; "
        "optional fixed filter bank input",
        "cascaded refinement GAN (seed 002)", tiny={"features": 8, "convs": 1, "orientations": 2},
    ),
    Entry(
        "compact", CompactConfig, CompactNet,
        "CPU-speed generator: PReLU residual blocks at LR, one conv + pixel shuffle x4, bicubic skip",
        "Real-ESRGAN's SRVGGNetCompact (Wang et al. 2021); made for wsistore's CPU restore",
        tiny={"features": 8, "blocks": 1},
    ),
    Entry("bicubic", None, lambda _: InterpolationUpsampler("bicubic"), "bicubic interpolation (baseline)"),
    Entry("nearest", None, lambda _: InterpolationUpsampler("nearest"), "pixel replication: the seeds' i-HR baseline"),
])  # fmt: skip

DISCRIMINATORS: Registry[nn.Module] = Registry("discriminator", nn.Module, [
    Entry(
        "vgg_patch", VGGPatchConfig, VGGPatchDiscriminator,
        "VGG-style conv discriminator returning a map of patch logits",
        "Ledig et al. 2017 (SRGAN); ESRGAN; rVTT T1/T2 (seed 000)", tiny={"features": 8, "stages": 2},
    ),
    Entry(
        "gap_cnn", GAPConfig, GAPDiscriminator, "plain CNN + global average pooling: one logit per image of any size",
        "MicroGAN (seed 001); cascaded refinement GAN (seed 002); SQE (seed 003)",
        tiny={"features": 8, "stages": 2},
    ),
])  # fmt: skip

#: Losses ``loss(sr, hr) -> scalar``, smallest when ``sr == hr``.
LOSSES: Registry[nn.Module] = Registry("loss", nn.Module, [
    Entry("l1", None, _fixed(L1Loss), "mean absolute error"),
    Entry("mse", None, _fixed(MSELoss), "mean squared error", "Techcyte stage 1 (seed 004)"),
    Entry("quasi_norm", QuasiNormConfig, QuasiNormLoss, "robust q-quasi-norm of the residual", "SQE (seed 003)"),
    Entry(
        "ssim", SSIMConfig, SSIMLoss, "1 - SSIM (per channel, Gaussian or uniform window)",
        "SQE perception loss (seed 003)",
    ),
    Entry(
        "vgg19", VGG19Config, VGG19Loss, "VGG-19 feature distance; ImageNet weights from a local file only",
        "SRGAN; Techcyte stage 2 (seed 004)",
    ),
    Entry(
        "autoencoder", AutoencoderConfig, AutoencoderLoss,
        "manifold distance under an autoencoder pre-trained on HR patches",
        "SQE (seed 003)", tiny={"features": 8, "latent": 8, "blocks": 1},
    ),
    Entry(
        "multiscale_filtered_l1", MultiScaleFilteredL1Config, MultiScaleFilteredL1,
        "L1 of the image and its fixed filter-bank responses, summed over the generator's levels",
        "cascaded refinement GAN (seed 002)", tiny={"orientations": 2},
    ),
])  # fmt: skip

#: Adversarial objectives over discriminator logits.
ADVERSARIAL: Registry[AdversarialLoss] = Registry("adversarial loss", AdversarialLoss, [
    Entry(
        "nonsaturating", None, _fixed(NonSaturatingGAN), "cross-entropy GAN, non-saturating generator loss",
        "Goodfellow et al. 2014; SRGAN; Techcyte",
    ),
    Entry("relativistic_average", None, _fixed(RelativisticAverageGAN), "relativistic average GAN (RaGAN)", "ESRGAN"),
    Entry(
        "relativistic_pair", None, _fixed(RelativisticPairGAN),
        "relativistic GAN on matched (HR, SR) pairs: sigmoid(C(hr) - C(sr))",
        "rVTT T1/T2 (seed 000); Jolicoeur-Martineau 2019",
    ),
    Entry(
        "wgan_gp", None, _fixed(WassersteinGP), "Wasserstein critic with gradient penalty 10",
        "MicroGAN (seed 001); Gulrajani et al. 2017",
    ),
    Entry(
        "kl_two_class", None, _fixed(TwoClassKLGAN),
        "KL from one-hot HR/SR classes to [D, 1 - D]; non-saturating generator", "SQE (seed 003)",
    ),
])  # fmt: skip


def build_generator(name: str, settings: Mapping[str, Any] | None = None) -> Generator:
    """A generator from its registry name and settings."""
    return GENERATORS.build(name, settings)


def build_discriminator(name: str, settings: Mapping[str, Any] | None = None) -> nn.Module:
    """A discriminator from its registry name and settings."""
    return DISCRIMINATORS.build(name, settings)


def build_loss(name: str, settings: Mapping[str, Any] | None = None) -> nn.Module:
    """A ``loss(sr, hr)`` module from its registry name and settings."""
    return LOSSES.build(name, settings)


def build_adversarial(name: str) -> AdversarialLoss:
    """An adversarial objective by name."""
    return ADVERSARIAL.build(name)
