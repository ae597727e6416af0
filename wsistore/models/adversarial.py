"""Adversarial losses over discriminator logits (any shape; averaged over every logit)."""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class AdversarialLoss(nn.Module):
    """A GAN objective: one loss for the discriminator, one for the generator."""

    @abstractmethod
    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``real``/``fake``: logits of HR and (detached) SR images."""

    @abstractmethod
    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``fake``: logits of SR images (with gradient); ``real``: of HR (constant)."""


class NonSaturatingGAN(AdversarialLoss):
    """Goodfellow's cross-entropy GAN with the non-saturating generator loss
    ``-log D(G(x))`` (SRGAN, Techcyte, SQE)."""

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return _bce(real, 1.0) + _bce(fake, 0.0)

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return _bce(fake, 1.0)


class RelativisticAverageGAN(AdversarialLoss):
    """Relativistic average GAN (Jolicoeur-Martineau 2019; ESRGAN, rVTT): is a real image
    more realistic than the average fake, and a fake less realistic than the average real?"""

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return (_bce(real - fake.mean(), 1.0) + _bce(fake - real.mean(), 0.0)) / 2

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real = real.detach()
        return (_bce(real - fake.mean(), 0.0) + _bce(fake - real.mean(), 1.0)) / 2
