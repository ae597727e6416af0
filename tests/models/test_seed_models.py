"""Components of the four other seed systems: MicroGAN's trimmed U-Net and size-invariant
critic, the cascaded refinement generator with its filter bank and multi-scale loss,
rVTT's relativistic pair loss and nucleus crops, WGAN-GP and SQE's two-class KL loss.

The registry-wide contracts (4x on odd sizes at scales 2 and 4, gradients to every
parameter, exact receptive field, tile equals crop, losses minimal on identical inputs)
run for these components too in tests/models/test_models.py and tests/models/test_losses.py, which
iterate over the registries; this file adds what is particular to each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.data import TILES
from wsistore.errors import InputError
from wsistore.models.cascaded import ChannelLayerNorm, bilinear_up2
from wsistore.models.filters import FilterBank, FilterBankConfig, bank_kernels
from wsistore.models.registry import (
    DISCRIMINATORS,
    GENERATORS,
    LOSSES,
    build_adversarial,
    build_discriminator,
    build_generator,
    build_loss,
)
from wsistore.models.weights import load_generator, save_generator
from wsistore.training.roi import NucleusCropConfig, crop_boxes, nucleus_boxes, rgb_to_hed

SEED_GENERATORS = ["trimmed_unet", "cascaded_refinement"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def real(size: tuple[int, int], y: int = 100, x: int = 120, name: str = "kidney_monuseg_B0-5710.png") -> torch.Tensor:
    image = np.asarray(Image.open(TILES / name).convert("RGB"))[y : y + size[0], x : x + size[1]]
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


def tiny(name: str, **extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(name, {**GENERATORS[name].tiny, **extra}).eval()


# -- generators ---------------------------------------------------------------------------------
def test_default_generators_as_documented() -> None:
    """docs/seeds.md quotes these numbers."""
    unet, crn = build_generator("trimmed_unet"), build_generator("cascaded_refinement")
    assert unet.parameter_count == 1_862_979 and unet.receptive_field == 7 and unet.alignment == 1
    assert crn.parameter_count == 127_302 and crn.receptive_field == 6 and crn.alignment == 1
    assert build_generator("cascaded_refinement", {"filters": "none"}).receptive_field == 3
    with pytest.raises(InputError, match="depth"):
        build_generator("trimmed_unet", {"depth": 5})
    with pytest.raises(InputError, match="filter bank"):
        build_generator("cascaded_refinement", {"filters": "dpf"})


def test_unet_output_is_a_sigmoid_image_unless_residual() -> None:
    lr = real((10, 13))
    with torch.no_grad():
        image = tiny("trimmed_unet")(lr)
        residual = tiny("trimmed_unet", bicubic_skip=True)(lr)
    assert image.shape == residual.shape == (1, 3, 40, 52)
    assert 0 < float(image.min()) and float(image.max()) < 1
    assert float(residual.min()) < 0.05 or float(residual.max()) > 0.95  # unbounded around bicubic


def test_deep_unet_receptive_field_holds_for_both_pooling_phases() -> None:
    """Depth 3 pools by 8 HR = 2 LR pixels, so an LR pixel's reach may depend on its
    phase: ``receptive_field`` bounds both and is reached."""
    model = tiny("trimmed_unet", depth=3)
    r, s = model.receptive_field, model.scale
    assert model.alignment == 2
    n = 2 * r + 10
    reached = []
    for c in (n // 2, n // 2 + 1):
        lr = real((n, n)).requires_grad_(True)
        model(lr)[..., s * c : s * c + s, s * c : s * c + s].sum().backward()
        assert lr.grad is not None
        reached.append(int(((lr.grad.abs().sum((0, 1)) > 0).nonzero() - c).abs().max()))
    assert max(reached) == r


def _tile_vs_crop(model: torch.nn.Module, y0: int, x0: int) -> torch.Tensor:
    r, s = model.receptive_field, model.scale
    image = real((2 * r + 40, 2 * r + 44))
    th, tw = 16, 18
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        whole = model(image)
        tile = model(image[..., y0 - r : y0 + th + r, x0 - r : x0 + tw + r])
    return (
        tile[..., s * r : s * (r + th), s * r : s * (r + tw)]
        - whole[..., s * y0 : s * (y0 + th), s * x0 : s * (x0 + tw)]
    ).abs()


def test_deep_unet_tiles_exactly_on_its_alignment() -> None:
    """Tiles starting at a multiple of ``alignment`` LR pixels are exact (restore's windows
    start at multiples of 8); an odd start shifts the pooling grid and shows."""
    model = tiny("trimmed_unet", depth=3)
    y0 = model.receptive_field + 6  # the tile starts at LR pixel 6, a multiple of 2
    assert float(_tile_vs_crop(model, y0, y0).max()) == 0
    assert float(_tile_vs_crop(model, y0 + 1, y0).max()) > 1e-6  # not rounding: that is 0 here


def test_cascaded_refinement_makes_an_image_per_level() -> None:
    model = tiny("cascaded_refinement")
    lr = real((9, 11))
    with torch.no_grad():
        levels = model.forward_pyramid(lr)
        assert [tuple(x.shape[-2:]) for x in levels] == [(18, 22), (36, 44)]
        assert torch.equal(levels[-1], model(lr))
        plain = tiny("cascaded_refinement", filters="none")
    assert plain.bank is None and plain.levels[0].body[0].in_channels == 3
    assert model.levels[0].body[0].in_channels == 3 + 3 * 4  # RGB + 2 orientations x (cos, sin) per channel


def test_cascaded_refinement_does_not_mix_pixels() -> None:
    """Layer norm over channels only and the fixed bilinear blends: the torch reference
    values, and no pixel depends on another beyond the receptive field."""
    x = torch.randn(2, 16, 9, 7)
    norm = ChannelLayerNorm(16)
    reference = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(norm(x), reference, atol=1e-5)
    assert torch.allclose(
        bilinear_up2(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), atol=1e-6
    )
    changed = x.clone()
    changed[..., 0, 0] += 10  # one far pixel
    assert torch.equal(norm(changed)[..., 4:, 4:], norm(x)[..., 4:, 4:])


@pytest.mark.parametrize("name", SEED_GENERATORS)
def test_seed_generator_weights_round_trip(tmp_path: Path, name: str) -> None:
    model = tiny(name)
    path = tmp_path / f"{name}.safetensors"
    save_generator(path, model, {"architecture": name, "config": dict(GENERATORS[name].tiny)}, half=False)
    loaded = load_generator(str(path))
    lr = real((10, 10))
    with torch.no_grad():
        assert torch.equal(loaded.model(lr), model(lr))


# -- filter bank ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gabor", "derivative"])
def test_filter_bank_is_fixed_zero_mean_and_oriented(kind: str) -> None:
    config = FilterBankConfig(kind, orientations=4, sigma=1.0)
    kernels = bank_kernels(config)
    assert kernels.shape == (config.count, 7, 7)
    assert torch.allclose(kernels.sum((1, 2)), torch.zeros(config.count), atol=1e-6)
    assert torch.allclose(kernels.abs().sum((1, 2)), torch.ones(config.count), atol=1e-6)
    bank = FilterBank(config)
    assert not list(bank.parameters()) and not bank.state_dict()  # never trained, never stored
    flat = bank(torch.full((1, 3, 20, 20), 0.6))
    assert flat.shape == (1, 3 * config.count, 20, 20) and float(flat[..., 4:-4, 4:-4].abs().max()) < 1e-6
    edge = torch.zeros(1, 3, 20, 20)
    edge[..., 10:, :] = 1.0  # a horizontal edge: varies along y
    energy = bank(edge)[0, : config.count, 4:-4, 4:-4].abs().sum((1, 2))  # red channel, off the zero padding
    along_x, along_y = (1, 5) if kind == "gabor" else (0, 2)  # odd filters at theta = 0 (x) and 90 degrees (y)
    assert float(energy[along_y]) > 10 * float(energy[along_x])


# -- losses ---------------------------------------------------------------------------------------
def test_multiscale_filtered_l1_judges_every_level() -> None:
    hr = real((64, 64))
    loss = build_loss("multiscale_filtered_l1", dict(LOSSES["multiscale_filtered_l1"].tiny))
    exact = [F.avg_pool2d(hr, 2), hr]
    assert float(loss.pyramid(exact, hr)) == 0  # type: ignore[operator]
    wrong_coarse = [exact[0] + 0.05 * torch.randn_like(exact[0]), hr]
    assert float(loss.pyramid(wrong_coarse, hr)) > 0  # type: ignore[operator]
    # one image: compared at its own scale and its x2 reduction (levels = 2)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    assert torch.allclose(loss(sr, hr), loss.pyramid([F.avg_pool2d(sr, 2), sr], hr))  # type: ignore[operator]
    plain = build_loss("multiscale_filtered_l1", {"filters": "none", "levels": 1})
    assert torch.allclose(plain(sr, hr), F.l1_loss(sr, hr))
    assert float(loss(sr, hr)) > float(plain(sr, hr))  # the filtered images add terms


# -- discriminators -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [{}, {"kernel": 3, "norm": "layer", "downsampling": "maxpool"}, {"kernel": 3, "norm": "batch"}],
    ids=["microgan", "crn", "sqe"],
)
def test_gap_discriminator_judges_any_size(settings: dict[str, object]) -> None:
    torch.manual_seed(0)
    d = build_discriminator("gap_cnn", {**DISCRIMINATORS["gap_cnn"].tiny, **settings}).train()
    for size in ((48, 64), (37, 53), (16, 16)):
        assert d(real(size).expand(2, -1, -1, -1)).shape == (2, 1)
    d(real((37, 53)).expand(2, -1, -1, -1)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    with pytest.raises(InputError, match="odd"):
        build_discriminator("gap_cnn", {"kernel": 4, "downsampling": "maxpool"})


def test_relativistic_pair_compares_each_pair() -> None:
    """T(hr, sr) = sigmoid(C(hr) - C(sr)): only the difference within a pair counts."""
    adv = build_adversarial("relativistic_pair")
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    assert torch.allclose(adv.discriminator_loss(real + 3, fake + 3), adv.discriminator_loss(real, fake))
    expected = -F.logsigmoid(real - fake).mean()
    assert torch.allclose(adv.discriminator_loss(real, fake), expected)
    assert torch.allclose(adv.generator_loss(real, fake), -F.logsigmoid(fake - real).mean())


def test_wgan_gradient_penalty_of_a_linear_critic() -> None:
    """For C(x) = <w, x> the gradient everywhere is w: the penalty is 10 (|w| - 1)^2."""
    adv = build_adversarial("wgan_gp")
    critic = torch.nn.Conv2d(3, 1, 4, bias=False)  # on 4 x 4 images: a linear functional
    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    norm = float(critic.weight.norm())
    assert float(adv.regularizer(critic, real, fake)) == pytest.approx(10 * (norm - 1) ** 2, rel=1e-4)
    with torch.no_grad():
        critic.weight.div_(norm)
    assert float(adv.regularizer(critic, real, fake)) == pytest.approx(0, abs=1e-8)
    penalty = adv.regularizer(critic, real, fake.requires_grad_(True))
    penalty.backward()  # differentiable in the critic's weights (create_graph)
    assert fake.grad is None  # never through the images themselves
    assert float(build_adversarial("nonsaturating").regularizer(critic, real, fake)) == 0


def test_two_class_kl_is_the_cross_entropy_of_one_hot_targets() -> None:
    kl, ns = build_adversarial("kl_two_class"), build_adversarial("nonsaturating")
    real, fake = torch.randn(8, 1), torch.randn(8, 1)
    assert torch.allclose(kl.discriminator_loss(real, fake), ns.discriminator_loss(real, fake), atol=1e-6)
    assert torch.allclose(kl.generator_loss(real, fake), ns.generator_loss(real, fake), atol=1e-6)
    assert float(kl.discriminator_loss(real, fake)) >= 0


# -- regions of interest --------------------------------------------------------------------------
def test_colour_deconvolution_matches_scikit_image() -> None:
    from skimage.color import rgb2hed

    image = np.asarray(Image.open(TILES / "colon_monuseg_A6-6782.png").convert("RGB"))[:200, :240]
    ours = rgb_to_hed(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    assert np.allclose(ours, rgb2hed(image), atol=1e-5)


def test_nucleus_crops_sit_on_nuclei_of_a_real_tile() -> None:
    hr = torch.cat([real((128, 128), 200, 300), real((128, 128), 500, 600, "lung_monuseg_18-5592.png")])
    config = NucleusCropConfig(crop=32, per_image=3)
    boxes = nucleus_boxes(hr, config)
    assert boxes.shape == (2, 3, 2) and int(boxes.min()) >= 0 and int(boxes.max()) <= 128 - 32
    haematoxylin = rgb_to_hed(hr)[:, 0]
    for i in range(2):
        means = [float(haematoxylin[i, y : y + 32, x : x + 32].mean()) for y, x in boxes[i].tolist()]
        assert min(means) > 1.2 * float(haematoxylin[i].mean())  # more nuclear stain than the image
        assert means == sorted(means, reverse=True)  # best window first
        for a in range(3):
            for b in range(a):
                assert int((boxes[i, a] - boxes[i, b]).abs().max()) >= 16  # at most half a crop overlap
    sr = hr.clone().requires_grad_(True)
    crops = crop_boxes(sr, boxes, 32)
    y, x = boxes[0, 0].tolist()
    assert crops.shape == (6, 3, 32, 32) and torch.equal(crops[0], hr[0, :, y : y + 32, x : x + 32])
    crops.sum().backward()
    assert sr.grad is not None and 0 < float((sr.grad > 0).float().mean()) < 1
    with pytest.raises(ValueError, match="larger"):
        nucleus_boxes(hr[..., :20, :20], config)
