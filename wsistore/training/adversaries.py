"""The discriminators of a run: one on whole patches (``image``) and, for rVTT's second
Turing test, one on crops around nuclei (``roi``), with their generator losses and
their updates. A stage names the ones it uses (``Stage.discriminators``)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from wsistore.models.adversarial import AdversarialLoss
from wsistore.models.registry import build_discriminator
from wsistore.training.config import DISCRIMINATOR_SLOTS, Stage, TrainConfig
from wsistore.training.evaluate import autocast
from wsistore.training.roi import NucleusCropConfig, crop_boxes, nucleus_boxes
from wsistore.training.state import cpu_state_dict

#: optimizer and run-state name of each slot (``discriminator`` as before there were two)
STATE_NAMES = {"image": "discriminator", "roi": "roi_discriminator"}
#: metric names: the generator's adversarial loss and the discriminator's own loss
LOG_NAMES = {"image": ("adversarial", "discriminator"), "roi": ("adversarial_roi", "roi_discriminator")}
#: seed offsets (the run seed plus these), so adding a model never changes another's initialisation
SEED_OFFSETS = {"image": 1, "roi": 3}


class Stepper(Protocol):
    """What updates a named model from a loss (the trainer's optimizers)."""

    def step(self, name: str, loss: torch.Tensor) -> None: ...


class Adversaries:
    """The discriminators a recipe's stages use, built from the run seed."""

    def __init__(self, config: TrainConfig, seed: int) -> None:
        used = {slot for stage in config.stages for slot in stage.adversaries}
        self.models: dict[str, nn.Module] = {}
        for slot in DISCRIMINATOR_SLOTS:
            component = config.discriminator if slot == "image" else (config.roi.discriminator if config.roi else None)
            if slot in used and component is not None:
                torch.manual_seed(seed + SEED_OFFSETS[slot])
                self.models[slot] = build_discriminator(component.name, component.settings)
        self.crops = NucleusCropConfig(config.roi.crop, config.roi.per_image) if "roi" in used and config.roi else None

    def modules(self, stage: Stage) -> dict[str, nn.Module]:
        """Optimizer name -> discriminator, for the ones this stage trains."""
        return {STATE_NAMES[slot]: self.models[slot] for slot in stage.adversaries}

    def train(self, stage: Stage) -> None:
        for slot in stage.adversaries:
            self.models[slot].train()

    def _pairs(self, stage: Stage, hr: torch.Tensor, sr: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """What each discriminator compares: the whole patches, or the same nucleus crops of both."""
        pairs = {}
        for slot in stage.adversaries:
            if slot == "image":
                pairs[slot] = (hr, sr)
            else:
                assert self.crops is not None
                boxes = nucleus_boxes(hr, self.crops)
                pairs[slot] = (crop_boxes(hr, boxes, self.crops.crop), crop_boxes(sr, boxes, self.crops.crop))
        return pairs

    def generator_losses(
        self, stage: Stage, objective: AdversarialLoss, hr: torch.Tensor, sr: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The generator's adversarial loss against each discriminator (frozen meanwhile)."""
        for slot in stage.adversaries:
            self.models[slot].requires_grad_(False)
        losses = {}
        for slot, (real_input, fake_input) in self._pairs(stage, hr, sr).items():
            d = self.models[slot]
            with torch.no_grad():
                real = d(real_input)
            losses[LOG_NAMES[slot][0]] = objective.generator_loss(real, d(fake_input))
        return losses

    def update(
        self, stage: Stage, objective: AdversarialLoss, optim: Stepper, hr: torch.Tensor, sr: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One optimizer step of each of the stage's discriminators on HR vs (detached) SR."""
        logs = {}
        for slot, (real_input, fake_input) in self._pairs(stage, hr, sr.detach()).items():
            d = self.models[slot].requires_grad_(True)
            with autocast(hr.device):
                loss = objective.discriminator_loss(d(real_input), d(fake_input))
                loss = loss + objective.regularizer(d, real_input, fake_input)
            optim.step(STATE_NAMES[slot], loss)
            logs[LOG_NAMES[slot][1]] = loss.detach()
        return logs

    def state(self) -> dict[str, dict[str, torch.Tensor] | None]:
        """Weights for the run state (None for a slot the recipe does not use)."""
        return {
            STATE_NAMES[slot]: cpu_state_dict(self.models[slot]) if slot in self.models else None
            for slot in DISCRIMINATOR_SLOTS
        }

    def load(self, state: dict[str, object]) -> None:
        for slot, model in self.models.items():
            model.load_state_dict(state[STATE_NAMES[slot]])  # type: ignore[arg-type]
