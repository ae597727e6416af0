"""The shared models module: generator contracts (4x on any size, gradients everywhere,
receptive field, seamless tiling), the discriminator, registries and weights files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data import TILES
from wsistore.errors import InputError
from wsistore.models.base import Generator
from wsistore.models.registry import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator
from wsistore.models.weights import load_generator, read_card, save_generator

TRAINABLE = [name for name, entry in GENERATORS.items() if entry.config is not None]


def tiny(name: str, **extra: object) -> Generator:
    torch.manual_seed(0)
    model = build_generator(name, {**GENERATORS[name].tiny, **extra}).eval()
    if name == "compact":  # its residual tail starts at zero (the model starts as bicubic): make it a trained state
        with torch.no_grad():
            model.tail[0].weight.normal_(0, 0.05)  # type: ignore[index]
    return model


def has_setting(name: str, setting: str) -> bool:
    config = GENERATORS[name].config
    return config is not None and setting in {f.name for f in dataclasses.fields(config)}


def real_lr(size: tuple[int, int], y: int = 100, x: int = 120) -> torch.Tensor:
    """A crop of a real H&E tile, as a (1, 3, h, w) float tensor."""
    image = np.asarray(Image.open(TILES / "kidney_monuseg_B0-5710.png").convert("RGB"))[
        y : y + size[0], x : x + size[1]
    ]
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


def test_registry_lists_the_seed_generators() -> None:
    assert {"edsr", "srresnet", "rrdbnet", "bicubic", "nearest"} <= set(GENERATORS)
    assert build_generator("rrdbnet").config.blocks == 23  # type: ignore[attr-defined]
    assert build_generator("rrdbnet", {"blocks": 3}).config.blocks == 3  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="unknown generator"):
        build_generator("unet")
    with pytest.raises(InputError, match="no setting"):
        build_generator("srresnet", {"depth": 3})


@pytest.mark.parametrize("name", [*TRAINABLE, "bicubic", "nearest"])
@pytest.mark.parametrize("scale", [2, 4])
def test_odd_sizes_map_to_exactly_scale(name: str, scale: int) -> None:
    model = tiny(name, scale=scale) if name in TRAINABLE else build_generator(name)
    lr = real_lr((13, 7))
    out = model(lr)
    s = model.scale
    assert out.shape == (1, 3, 13 * s, 7 * s) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TRAINABLE)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = tiny(name).train()
    lr = real_lr((9, 11))
    images = model.forward_pyramid(lr)  # every level's image (side outputs included)
    assert torch.equal(images[-1], model(lr))
    loss = sum(((image - torch.rand_like(image)) ** 2).mean() for image in images)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(
    ("name", "bicubic_skip"),
    [(n, skip) for n in TRAINABLE for skip in (True, False) if skip or has_setting(n, "bicubic_skip")],
)
def test_receptive_field_is_exact_for_every_subpixel(name: str, bicubic_skip: bool) -> None:
    """Gradient of the 4 x 4 HR pixels of the centre LR pixel: nonzero exactly within
    ``receptive_field`` LR pixels (an upper bound that is also tight)."""
    model = tiny(name, **({"bicubic_skip": bicubic_skip} if has_setting(name, "bicubic_skip") else {}))
    r, s = model.receptive_field, model.scale
    n = 2 * r + 9
    c = n // 2
    lr = real_lr((n, n)).requires_grad_(True)
    model(lr)[..., s * c : s * c + s, s * c : s * c + s].sum().backward()
    assert lr.grad is not None
    reached = (lr.grad.abs().sum((0, 1)) > 0).nonzero() - c
    assert int(reached.abs().max()) == r


def test_default_configs_match_the_papers() -> None:
    """Seed 004's EDSR 32 x 64 (BRIEF: 0.395 MFLOP/px), ESRGAN's 23-block RRDB (2.24)."""
    edsr, rrdb = build_generator("edsr"), build_generator("rrdbnet")
    assert edsr.flops_per_output_pixel() == pytest.approx(0.395e6, rel=0.01)
    assert rrdb.flops_per_output_pixel() == pytest.approx(2.24e6, rel=0.01)
    assert (
        edsr.receptive_field == 68 and rrdb.receptive_field == 349 and build_generator("srresnet").receptive_field == 40
    )


def _tile_and_crop(model: Generator) -> tuple[torch.Tensor, torch.Tensor]:
    r, s = model.receptive_field, model.scale
    image = real_lr((2 * r + 30, 2 * r + 37))
    y0, x0, th, tw = r + 5, r + 9, 17, 21
    with torch.no_grad():
        whole = model(image)
        tile = model(image[..., y0 - r : y0 + th + r, x0 - r : x0 + tw + r])
    return tile[..., s * r : s * (r + th), s * r : s * (r + tw)], whole[
        ..., s * y0 : s * (y0 + th), s * x0 : s * (x0 + tw)
    ]


@pytest.mark.parametrize("name", TRAINABLE)
def test_tile_output_equals_crop_of_whole_output(name: str) -> None:
    """With a halo of ``receptive_field`` LR pixels, a tile's output is exactly the
    matching crop of the whole image's output (CPU, fp32, native convolutions: oneDNN's
    kernels round differently by input size, by at most an ulp or two)."""
    model = tiny(name, **({"batch_norm": True} if name == "srresnet" else {}))
    with torch.backends.mkldnn.flags(enabled=False):
        tile, crop = _tile_and_crop(model)
    assert torch.equal(tile, crop)
    tile, crop = _tile_and_crop(model)
    assert (tile - crop).abs().max() <= 4e-7


def test_compact_is_cheap_and_starts_as_bicubic() -> None:
    """The CPU family: every layer at LR (about 17 k multiply-adds per HR pixel at 48 x 6
    blocks, against 22 k for EDSR 8 x 32), one LR pixel of reach per 3 x 3 convolution,
    and an untrained model is exactly bicubic (its residual tail starts at zero)."""
    compact, edsr = build_generator("compact"), build_generator("edsr", {"blocks": 8, "features": 32})
    assert compact.receptive_field == 14 and compact.flops_per_output_pixel() / 2 == pytest.approx(16.9e3, rel=0.01)
    assert edsr.flops_per_output_pixel() / 2 == pytest.approx(22.2e3, rel=0.01)
    lr = real_lr((20, 24))
    with torch.no_grad():
        assert torch.allclose(
            compact(lr), torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic"), atol=1e-6
        )


def test_tile_without_enough_halo_differs() -> None:
    """The test above can fail: one pixel less halo than the receptive field shows."""
    model = tiny("edsr")
    r, s = model.receptive_field, model.scale
    image = real_lr((2 * r + 20, 2 * r + 20))
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        whole = model(image)
        tile = model(image[..., 1:, 1:])  # pixel (r, r) keeps only r - 1 pixels of halo
    assert not torch.equal(
        tile[..., s * (r - 1) : s * r, s * (r - 1) : s * r], whole[..., s * r : s * r + s, s * r : s * r + s]
    )


def test_batch_norm_srresnet_is_tile_safe_only_at_inference() -> None:
    """Batch statistics mix images in training; at inference each tile is independent."""
    model = tiny("srresnet", batch_norm=True)
    a, b = real_lr((12, 12)), real_lr((12, 12), y=400, x=300)
    with torch.no_grad():
        assert (model(a) - model(torch.cat([a, b]))[:1]).abs().max() < 1e-6
        model.train()
        assert (model(a) - model(torch.cat([a, b]))[:1]).abs().max() > 1e-3


def test_discriminator_judges_any_patch_size() -> None:
    torch.manual_seed(0)
    d = build_discriminator("vgg_patch", DISCRIMINATORS["vgg_patch"].tiny)
    hr = real_lr((48, 64))
    logits = d(hr)
    assert logits.shape == (1, 1, 12, 16)
    logits.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    assert build_discriminator("vgg_patch")(torch.rand(2, 3, 96, 96)).shape == (2, 1, 6, 6)
    with pytest.raises(InputError, match="norm"):
        build_discriminator("vgg_patch", {"norm": "layer"})


@pytest.mark.parametrize("name", ["srresnet", "rrdbnet"])
def test_weights_round_trip_with_card(tmp_path: Path, name: str) -> None:
    model = tiny(name)
    path = tmp_path / f"{name}.safetensors"
    save_generator(path, model, {"architecture": name, "config": dict(GENERATORS[name].tiny)}, half=False)
    loaded = load_generator(str(path))
    assert read_card(path)["architecture"] == name and loaded.weights_sha256
    lr = real_lr((10, 10))
    with torch.no_grad():
        assert torch.equal(loaded.model(lr), model(lr))


def test_models_command_lists_everything(capsys: pytest.CaptureFixture[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "wsistore", "models", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    gens = {g["name"]: g for g in info["generators"]}
    assert gens["edsr"]["receptive_field"] == 68 and gens["edsr"]["parameters"] > 2_000_000
    assert {d["name"] for d in info["discriminators"]} == {"vgg_patch", "gap_cnn"}
    assert {"l1", "mse", "ssim", "vgg19", "autoencoder", "multiscale_filtered_l1"} <= {
        item["name"] for item in info["losses"]
    }
    assert {a["name"] for a in info["adversarial"]} == {
        "nonsaturating",
        "relativistic_average",
        "relativistic_pair",
        "wgan_gp",
        "kl_two_class",
    }
    assert "shipped_weights" in info
    from wsistore.cli import main

    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "rrdbnet" in text and "relativistic_average" in text and "0.395 MFLOP/px" in text
