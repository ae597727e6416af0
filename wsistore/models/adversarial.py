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

    def regularizer(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """A term added to the discriminator's loss that needs the discriminator itself
        (``real``/``fake``: HR and detached SR images). None by default."""
        return torch.zeros((), device=real.device)


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


class RelativisticPairGAN(AdversarialLoss):
    """Relativistic standard GAN on matched pairs (rVTT T1/T2, seed 000): the probability
    that the HR image of a pair is more realistic than its own SR, ``sigmoid(C(hr) - C(sr))``
    (order-symmetric, so shuffling the pair changes nothing). Logit maps are compared
    position by position: both images of a pair cover the same tissue."""

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return _bce(real - fake, 1.0)

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return _bce(fake - real.detach(), 1.0)


class WassersteinGP(AdversarialLoss):
    """WGAN-GP (Gulrajani et al. 2017; MicroGAN, seed 001): the critic maximises
    ``C(hr) - C(sr)`` with a penalty ``penalty * (|grad C(x)| - 1)**2`` on random
    interpolates of HR and SR; the generator maximises ``C(sr)``."""

    def __init__(self, penalty: float = 10.0) -> None:
        super().__init__()
        self.penalty = penalty

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return fake.float().mean() - real.float().mean()

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return -fake.float().mean()

    def regularizer(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(discriminator(mixed).float().sum(), mixed, create_graph=True)
        return self.penalty * ((grad.float().flatten(1).norm(dim=1) - 1) ** 2).mean()


class TwoClassKLGAN(AdversarialLoss):
    """SQE's discriminator loss (seed 003): the KL divergence from the one-hot class vector
    (HR ``[1, 0]``, SR ``[0, 1]``) to the discriminator's ``[D, 1 - D]``; for one-hot
    targets this equals the cross-entropy. The generator uses the non-saturating loss."""

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return _two_class_kl(real, 0) + _two_class_kl(fake, 1)

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return _two_class_kl(fake, 0)


def _two_class_kl(logits: torch.Tensor, target_class: int) -> torch.Tensor:
    """Mean ``KL(onehot(target_class) || [sigmoid(l), 1 - sigmoid(l)])`` over the logits."""
    logits = logits.float().flatten()
    log_probs = torch.stack([F.logsigmoid(logits), F.logsigmoid(-logits)], dim=1)
    target = F.one_hot(torch.full_like(logits, target_class, dtype=torch.long), 2).float()
    return F.kl_div(log_probs, target, reduction="batchmean")
