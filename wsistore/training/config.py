"""Training recipes: TOML files in ``pipelines/`` loaded into frozen, validated dataclasses.

A recipe names a generator (and a discriminator for GAN stages) from the model registries,
the prepared patch shards, validation and checkpoint policy, and an ordered list of
stages. The loss name ``content`` means VGG-19 when ``[content] vgg19_weights`` names a
local weights file, and the autoencoder manifold loss otherwise (the run records which).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsistore.errors import InputError
from wsistore.models.registry import ADVERSARIAL, DISCRIMINATORS, GENERATORS, LOSSES, Registry
from wsistore.models.settings import at_least, one_of
from wsistore.training.roi import NucleusCropConfig
from wsistore.training.tomlconfig import from_table, parse_value, set_dotted

#: pixel: generator alone; gan: generator and discriminators in turn; discriminator:
#: discriminators alone against the frozen generator (rVTT's T1/T2 stages); autoencoder:
#: pre-training of the manifold loss's autoencoder on HR patches (SQE)
STAGE_KINDS = ("pixel", "gan", "discriminator", "autoencoder")
#: the discriminators a stage can train or play against: on whole patches, and on crops
#: around nuclei (``[roi]``)
DISCRIMINATOR_SLOTS = ("image", "roi")
#: validation metric -> True when higher is better
METRICS = {"psnr": True, "ssim": True, "l1": False}
LR_SCHEDULES = ("step", "cosine")
CONTENT = "content"
#: autoencoder settings that change its architecture (shared by the whole run)
AUTOENCODER_SHAPE = {"features", "latent", "blocks"}


#: CUDA training precisions (``run.precision``)
PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class RunSection:
    """Name, seed, output folder (default ``runs/NAME``), device, CUDA precision and
    logging cadence."""

    name: str
    seed: int = 0
    out: str = ""
    device: str = "auto"
    #: on CUDA: "bf16" autocast with TF32, or "fp32" throughout (the CPU always runs fp32)
    precision: str = "bf16"
    log_every: int = 50
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name must be a non-empty file name")
        one_of("precision", self.precision, PRECISIONS)
        at_least(self, log_every=1, checkpoint_every=1)
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass(frozen=True)
class DataSection:
    """Prepared shards (``wsistore train prepare``), batch size and LR crop side."""

    shards: str = ""
    batch_size: int = 16
    patch: int = 48
    #: random flips/transposes; off by default because codec artefacts are not symmetric
    flips: bool = False

    def __post_init__(self) -> None:
        at_least(self, batch_size=1, patch=4)


@dataclass(frozen=True)
class Component:
    """A registry name and its settings."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LossTerm:
    """One weighted generator loss: a LOSSES name, or ``content``."""

    name: str
    weight: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        at_least(self, weight=0)


@dataclass(frozen=True)
class Stage:
    """A training stage of one of :data:`STAGE_KINDS`. GAN and discriminator stages name
    the ``discriminators`` they train (``image``, ``roi``); a GAN stage updates them
    ``critic_steps`` times per generator step (fresh batches after the first)."""

    name: str
    kind: str = "pixel"
    steps: int = 1000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    #: stage steps at which the learning rates are multiplied by ``lr_gamma``
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    #: "step" (the milestones above) or "cosine": from ``lr`` down to ``lr * lr_floor``
    #: over the stage's steps
    lr_schedule: str = "step"
    lr_floor: float = 0.01
    losses: tuple[LossTerm, ...] = ()
    adversarial: str = "nonsaturating"
    adversarial_weight: float = 1e-3
    discriminator_lr: float = 1e-4
    discriminators: tuple[str, ...] = ("image",)
    critic_steps: int = 1

    def __post_init__(self) -> None:
        one_of("kind", self.kind, STAGE_KINDS)
        if self.steps < 0 or self.lr <= 0 or self.discriminator_lr <= 0 or not 0 < self.lr_gamma <= 1:
            raise ValueError("need steps >= 0, lr > 0, discriminator_lr > 0 and 0 < lr_gamma <= 1")
        if not self.losses and self.kind == "pixel":
            raise ValueError("a pixel stage needs at least one loss")
        if self.losses and self.kind in ("discriminator", "autoencoder"):
            raise ValueError(f"a {self.kind} stage takes no generator losses")
        bad = sorted(set(self.discriminators) - set(DISCRIMINATOR_SLOTS))
        if bad or not self.discriminators or len(set(self.discriminators)) != len(self.discriminators):
            names = ", ".join(DISCRIMINATOR_SLOTS)
            raise ValueError(f"discriminators must be distinct names from {names}, got {list(self.discriminators)}")
        at_least(self, critic_steps=1)
        one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0 <= self.lr_floor <= 1:
            raise ValueError("need 0 <= lr_floor <= 1")
        if self.lr_schedule == "cosine" and self.lr_milestones:
            raise ValueError("a cosine schedule takes no lr_milestones")

    @property
    def trains_generator(self) -> bool:
        return self.kind in ("pixel", "gan")

    @property
    def adversaries(self) -> tuple[str, ...]:
        """The discriminators this stage trains (none for pixel and autoencoder stages)."""
        return self.discriminators if self.kind in ("gan", "discriminator") else ()


@dataclass(frozen=True)
class ValidationSection:
    """Validate every ``every`` steps on up to ``max_patches`` held-out patches; keep the
    ``keep_best`` best checkpoints of each generator stage by ``metric``."""

    every: int = 1000
    max_patches: int = 256
    batch_size: int = 16
    keep_best: int = 3
    metric: str = "psnr"

    def __post_init__(self) -> None:
        at_least(self, every=1, max_patches=1, batch_size=1, keep_best=1)
        one_of("metric", self.metric, METRICS)


@dataclass(frozen=True)
class ContentSection:
    """What ``content`` means: VGG-19 with weights from a local file, else the
    autoencoder manifold loss, pre-trained on the HR training patches for
    ``autoencoder_steps`` before the first stage (unless the recipe places an
    ``autoencoder`` stage itself, which then sets steps and learning rate)."""

    vgg19_weights: str = ""
    vgg19_layer: str = "conv5_4"
    vgg19_criterion: str = "mse"
    #: scale of a ``content`` term when it is VGG-19 (SRGAN: features / 12.75, squared)
    vgg19_weight: float = 0.006
    autoencoder: dict[str, Any] = field(default_factory=dict)
    autoencoder_steps: int = 2000
    autoencoder_lr: float = 1e-3
    #: scale of a ``content`` term when it is the autoencoder loss
    autoencoder_weight: float = 1.0

    def __post_init__(self) -> None:
        at_least(self, autoencoder_steps=0, vgg19_weight=0, autoencoder_weight=0)
        if self.autoencoder_lr <= 0:
            raise ValueError("need autoencoder_lr > 0")


@dataclass(frozen=True)
class RoiSection:
    """rVTT's T2 (seed 000): a second discriminator that judges ``per_image`` crops of
    ``crop`` HR pixels around nuclei (most haematoxylin after colour deconvolution),
    taken at the same place from each HR patch and its SR."""

    discriminator: Component
    crop: int = 32
    per_image: int = 1

    def __post_init__(self) -> None:
        NucleusCropConfig(self.crop, self.per_image)  # its rules for the crops


@dataclass(frozen=True)
class TrainConfig:
    """A whole recipe."""

    run: RunSection
    generator: Component
    stages: tuple[Stage, ...]
    data: DataSection = field(default_factory=DataSection)
    discriminator: Component | None = None
    validation: ValidationSection = field(default_factory=ValidationSection)
    content: ContentSection = field(default_factory=ContentSection)
    roi: RoiSection | None = None

    @property
    def content_loss(self) -> str:
        """``vgg19`` or ``autoencoder``: what ``content`` resolves to."""
        return "vgg19" if self.content.vgg19_weights else "autoencoder"

    def resolve(self, term: LossTerm) -> tuple[str, dict[str, Any]]:
        """Registry name and settings of a loss term: ``content`` resolved, and the
        ``[content]`` settings as defaults of ``vgg19`` and ``autoencoder`` terms."""
        name = self.content_loss if term.name == CONTENT else term.name
        c = self.content
        if name == "vgg19":
            vgg19 = {"weights": c.vgg19_weights, "layer": c.vgg19_layer, "criterion": c.vgg19_criterion}
            return name, {**vgg19, **term.settings}
        if name == "autoencoder":
            return name, {**c.autoencoder, **term.settings}
        return name, dict(term.settings)

    def weight(self, term: LossTerm) -> float:
        """A term's weight; ``content`` terms are scaled by what they resolve to."""
        if term.name != CONTENT:
            return term.weight
        scale = self.content.vgg19_weight if self.content_loss == "vgg19" else self.content.autoencoder_weight
        return term.weight * scale

    @property
    def content_losses(self) -> list[str]:
        """Feature-space losses the stages use (``vgg19``, ``autoencoder``), sorted."""
        return sorted({self.resolve(t)[0] for s in self.stages for t in s.losses} & {"vgg19", "autoencoder"})

    @property
    def uses_autoencoder(self) -> bool:
        return any(self.resolve(t)[0] == "autoencoder" for s in self.stages for t in s.losses)

    @property
    def out(self) -> Path:
        return Path(self.run.out or f"runs/{self.run.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        """Digest of everything that changes the result (not output folder or device)."""
        d = self.to_dict()
        d["run"] = {k: v for k, v in d["run"].items() if k not in ("out", "device", "log_every")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def load_config(path: str | Path, overrides: list[str] | None = None, smoke: bool = False) -> TrainConfig:
    """Read a recipe, shrink it for a smoke run when asked, apply ``KEY=VALUE`` overrides
    (see :func:`config_from_dict`), and validate it."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no such config file: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(raw, str(path), overrides, smoke)


def config_from_dict(
    raw: dict[str, Any], where: str, overrides: list[str] | None = None, smoke: bool = False
) -> TrainConfig:
    """The recipe in a raw TOML table (``where`` names it in errors), shrunk by
    :func:`shrink_for_smoke` when ``smoke``, then changed by the ``KEY=VALUE`` overrides."""
    raw = copy.deepcopy(raw)
    if smoke:
        shrink_for_smoke(raw)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override {item!r} is not KEY=VALUE")
        set_dotted(raw, key.strip(), parse_value(value.strip()))
    config = from_table(TrainConfig, raw, where)
    validate(config, where)
    return config


def validate(config: TrainConfig, where: str) -> None:
    """Check names and settings against the registries (builds nothing)."""
    gen = GENERATORS.entry(config.generator.name, where)
    if gen.config is None:
        raise InputError(f"{where}: generator {gen.name!r} has nothing to train")
    gen.configure(config.generator.settings, where)
    if not config.stages:
        raise InputError(f"{where}: no stages")
    names = [s.name for s in config.stages]
    if len(set(names)) != len(names) or "autoencoder" in names:
        raise InputError(f"{where}: stage names must be unique and not 'autoencoder'")
    used = {slot for s in config.stages for slot in s.adversaries}
    if "image" in used:
        if config.discriminator is None:
            raise InputError(f"{where}: GAN stages need a [discriminator]")
        DISCRIMINATORS.check(config.discriminator.name, config.discriminator.settings, where)
    if "roi" in used:
        if config.roi is None:
            raise InputError(f"{where}: stages with the 'roi' discriminator need a [roi] section")
        DISCRIMINATORS.check(config.roi.discriminator.name, config.roi.discriminator.settings, f"{where}: roi")
        if config.roi.crop > config.data.patch * _scale(config):
            hr = f"{config.data.patch} x {_scale(config)}"
            raise InputError(f"{where}: roi crop {config.roi.crop} is larger than the HR patch ({hr})")
    _validate_autoencoder_stages(config, where)
    for stage in config.stages:
        at = f"{where}: stage {stage.name}"
        if stage.adversaries:
            ADVERSARIAL.check(stage.adversarial, where=at)
        for term in stage.losses:
            name, settings = config.resolve(term)
            LOSSES.check(name, settings, at)
            shape = sorted(set(term.settings) & AUTOENCODER_SHAPE)
            if name == "autoencoder" and shape:
                raise InputError(
                    f"{at}: set the autoencoder's {shape[0]} in [content] autoencoder (one autoencoder per run)"
                )


def _scale(config: TrainConfig) -> int:
    return int(config.generator.settings.get("scale", 4))


def _validate_autoencoder_stages(config: TrainConfig, where: str) -> None:
    """At most one explicit autoencoder stage, before every stage whose losses use it."""
    explicit = [i for i, s in enumerate(config.stages) if s.kind == "autoencoder"]
    if not explicit:
        return
    if len(explicit) > 1:
        raise InputError(f"{where}: at most one autoencoder stage")
    if not config.uses_autoencoder:
        raise InputError(f"{where}: an autoencoder stage, but no stage uses the autoencoder loss")
    uses = [any(config.resolve(t)[0] == "autoencoder" for t in s.losses) for s in config.stages]
    first_use = config.stages[uses.index(True)]
    if explicit[0] > uses.index(True):
        raise InputError(f"{where}: the autoencoder stage must come before stage {first_use.name}, which uses it")


#: Steps per stage of a smoke run: tiny models and two steps (CI runs every recipe so).
SMOKE_STEPS = 2


def shrink_for_smoke(raw: dict[str, Any]) -> None:
    """Rewrite a raw recipe in place into a seconds-long CPU run of the same structure."""
    roi = raw.get("roi")
    tables: list[tuple[Any, Registry[Any]]] = [
        (raw.get("generator"), GENERATORS),
        (raw.get("discriminator"), DISCRIMINATORS),
    ]
    if isinstance(roi, dict):
        tables.append((roi.get("discriminator"), DISCRIMINATORS))
    for table, registry in tables:
        if isinstance(table, dict) and table.get("name") in registry:
            table["settings"] = {**table.get("settings", {}), **registry[table["name"]].tiny}
    if isinstance(roi, dict):
        roi["crop"] = min(int(roi.get("crop", 16)), 16)
    for stage in raw.get("stages", []):
        if isinstance(stage, dict):
            stage["steps"] = SMOKE_STEPS
            stage["lr_milestones"] = []
    content = raw.setdefault("content", {})
    content["autoencoder"] = {**content.get("autoencoder", {}), **LOSSES["autoencoder"].tiny}
    content["autoencoder_steps"] = SMOKE_STEPS
    data = raw.setdefault("data", {})
    data["batch_size"] = 2
    data["patch"] = min(int(data.get("patch", 12)), 12)
    raw["validation"] = {**raw.get("validation", {}), "every": 1, "max_patches": 4, "batch_size": 4}
    run = raw.setdefault("run", {})
    run["log_every"] = 1
    run["checkpoint_every"] = 1
