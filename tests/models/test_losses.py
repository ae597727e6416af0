"""Losses: finite, smallest for identical inputs, differentiable; SSIM against
torchmetrics; VGG-19 only from a local weights file; adversarial objectives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from tests.data import TILES
from wsistore.errors import InputError
from wsistore.models.losses import SSIMConfig, ssim
from wsistore.models.registry import LOSSES, build_adversarial, build_loss


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    """Two real 64 x 64 H&E patches."""
    image = np.asarray(Image.open(TILES / "colon_monuseg_A6-6782.png").convert("RGB"))
    patches = np.stack([image[100:164, 200:264], image[500:564, 640:704]])
    return torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VGG-19 state dict in torchvision's layout (random weights: the test checks the
    loading path and the loss, not ImageNet features; nothing is downloaded)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def _settings(name: str, vgg_file: Path) -> dict[str, object]:
    if name == "vgg19":
        return {"weights": str(vgg_file), "layer": "relu2_2"}
    return dict(LOSSES[name].tiny)


@pytest.mark.parametrize("name", list(LOSSES))
def test_finite_minimal_at_identity_and_differentiable(name: str, hr: torch.Tensor, vgg_file: Path) -> None:
    torch.manual_seed(0)
    loss = build_loss(name, _settings(name, vgg_file))
    same = loss(hr, hr)
    assert torch.isfinite(same) and abs(float(same)) < 1e-6
    for noise in (0.01, 0.05, 0.2):
        sr = (hr + noise * torch.randn_like(hr)).clamp(0, 1).requires_grad_(True)
        value = loss(sr, hr)
        assert torch.isfinite(value) and float(value) > float(same)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    blurred = torch.nn.functional.avg_pool2d(hr, 3, 1, 1)
    assert float(loss(blurred, hr)) > float(same)


@pytest.mark.parametrize("config", [SSIMConfig(), SSIMConfig(sigma=0.8), SSIMConfig(window="uniform", kernel_size=5)])
def test_ssim_matches_torchmetrics(hr: torch.Tensor, config: SSIMConfig) -> None:
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    ours = ssim(sr, hr, config)
    if config.window == "uniform":
        ref = tm_ssim(sr, hr, gaussian_kernel=False, kernel_size=config.kernel_size, data_range=1.0, reduction="none")
    else:
        ref = tm_ssim(sr, hr, sigma=config.sigma, data_range=1.0, reduction="none")
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)
    assert float(build_loss("ssim", {})(sr, hr)) == pytest.approx(1 - float(tm_ssim(sr, hr, data_range=1.0)), abs=1e-5)


def test_vgg19_needs_a_local_weights_file(tmp_path: Path, vgg_file: Path) -> None:
    with pytest.raises(InputError, match="never downloads"):
        build_loss("vgg19", {})
    with pytest.raises(InputError, match="not found"):
        build_loss("vgg19", {"weights": str(tmp_path / "missing.pth")})
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, wrong)
    with pytest.raises(InputError, match="not VGG-19"):
        build_loss("vgg19", {"weights": str(wrong)})
    with pytest.raises(InputError, match="layer"):
        build_loss("vgg19", {"weights": str(vgg_file), "layer": "conv9_1"})
    loss = build_loss("vgg19", {"weights": str(vgg_file), "layer": "conv5_4"})
    assert not any(p.requires_grad for p in loss.parameters())  # frozen
    loss.train()
    assert not loss.features.training  # type: ignore[union-attr]


def test_vgg19_features_are_torchvisions(hr: torch.Tensor, vgg_file: Path) -> None:
    """The loss is MSE of torchvision VGG-19 features of ImageNet-normalised inputs."""
    from torchvision.models import vgg19

    with torch.device("meta"):
        assert len(vgg19(weights=None).features) == 37  # torchvision's layout, built cheaply
    from torchvision.models.vgg import cfgs, make_layers

    reference = make_layers(cfgs["E"])[:9].eval()
    reference.load_state_dict(
        {k.removeprefix("features."): v for k, v in torch.load(vgg_file).items() if int(k.split(".")[1]) < 9}
    )
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(reference((sr - mean) / std), reference((hr - mean) / std))
        got = build_loss("vgg19", {"weights": str(vgg_file), "layer": "relu2_2"})(sr, hr)
    assert torch.allclose(got, expected, rtol=1e-5)


def test_autoencoder_loss_passes_gradient_only_to_sr(hr: torch.Tensor) -> None:
    loss = build_loss("autoencoder", dict(LOSSES["autoencoder"].tiny))
    loss.freeze()  # type: ignore[operator]
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1).requires_grad_(True)
    loss(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    assert loss.autoencoder(hr).shape == hr.shape  # type: ignore[operator]


@pytest.mark.parametrize(
    "name", ["nonsaturating", "relativistic_average", "relativistic_pair", "wgan_gp", "kl_two_class"]
)
def test_adversarial_objectives(name: str) -> None:
    adv = build_adversarial(name)
    confident = torch.full((4, 1, 3, 3), 5.0)
    # the discriminator's loss is low when it scores real high and fake low
    good, bad = adv.discriminator_loss(confident, -confident), adv.discriminator_loss(-confident, confident)
    assert torch.isfinite(good) and float(good) < 0.05 < float(bad)
    # the generator's loss falls as its fakes score higher
    fake = torch.zeros(4, 1, 3, 3, requires_grad=True)
    values = [float(adv.generator_loss(confident, fake + shift)) for shift in (-3.0, 0.0, 3.0)]
    assert values[0] > values[1] > values[2]
    adv.generator_loss(confident, fake).backward()
    assert fake.grad is not None and (fake.grad < 0).all()  # raising fake logits lowers the loss
    with pytest.raises(InputError, match="unknown adversarial"):
        build_adversarial("wgan")
