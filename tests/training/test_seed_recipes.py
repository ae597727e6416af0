"""The four seed recipes (pipelines/rvtt.toml, microgan.toml, crn.toml, sqe.toml): each
is the paper's, the trainer extensions they need behave (discriminator-only stages, the
nucleus-crop discriminator, critic steps, an explicit autoencoder stage, exact resume),
and a short CPU run of each on real tiles lowers its validation loss.

Every pipeline also runs as a two-steps-per-stage smoke test in tests/training/test_training.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data import ROOT, TRAINING_FILES
from wsistore.errors import InputError
from wsistore.models.weights import read_card
from wsistore.training.config import TrainConfig, config_from_dict, load_config
from wsistore.training.state import load_state
from wsistore.training.trainer import Trainer, plan

FILES = list(TRAINING_FILES)
SEEDS = ("rvtt", "microgan", "crn", "sqe")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe(name: str, data: Path, out: Path, *extra: str, smoke: bool = True) -> TrainConfig:
    """A seed recipe shrunk to tiny models (``--smoke``) on the prepared tiles."""
    base = [f'data.shards="{data}"', f'run.out="{out}"', "run.checkpoint_every=1000", "validation.max_patches=16"]
    return load_config(ROOT / "pipelines" / f"{name}.toml", base + list(extra), smoke=smoke)


# -- the recipes are the papers -------------------------------------------------------------------
def test_rvtt_recipe_is_the_paper() -> None:
    c = load_config(ROOT / "pipelines" / "rvtt.toml")
    assert c.generator.name == "rrdbnet" and c.generator.settings["blocks"] == 23
    recon, t1, t2, adversarial = c.stages
    assert [s.kind for s in c.stages] == ["pixel", "discriminator", "discriminator", "gan"]
    assert [t.name for t in recon.losses] == ["l1", "content"] and recon.losses == adversarial.losses
    assert (
        t1.discriminators == ("image",)
        and t2.discriminators == ("roi",)
        and adversarial.discriminators == ("image", "roi")
    )
    assert {s.adversarial for s in c.stages[1:]} == {"relativistic_pair"}
    assert (
        {s.lr for s in c.stages} == {1e-4}
        and adversarial.lr_milestones == (100000, 200000, 300000)
        and adversarial.lr_gamma == 0.5
    )
    assert c.roi is not None and c.roi.discriminator.name == c.discriminator.name == "vgg_patch"  # type: ignore[union-attr]


def test_microgan_recipe_is_the_paper() -> None:
    c = load_config(ROOT / "pipelines" / "microgan.toml")
    assert c.generator.name == "trimmed_unet" and c.generator.settings["bicubic_skip"] is False
    assert (
        c.discriminator is not None and c.discriminator.name == "gap_cnn" and c.discriminator.settings["norm"] == "none"
    )
    (gan,) = c.stages
    assert (gan.kind, gan.adversarial, gan.critic_steps, gan.lr) == ("gan", "wgan_gp", 4, 1e-4)
    assert [(t.name, t.weight) for t in gan.losses] == [("content", 100.0)] and gan.adversarial_weight == 1.0
    with_vgg = load_config(ROOT / "pipelines" / "microgan.toml", ['content.vgg19_weights="/w/vgg19.pth"'])
    assert with_vgg.resolve(gan.losses[0])[1]["layer"] == "conv3_3"  # DeblurGAN's perceptual layer


def test_crn_recipe_is_the_paper() -> None:
    c = load_config(ROOT / "pipelines" / "crn.toml")
    g = c.generator.settings
    assert c.generator.name == "cascaded_refinement" and g["filters"] == "gabor"
    assert c.discriminator is not None
    d = c.discriminator.settings
    assert (d["kernel"], d["norm"], d["downsampling"], d["stages"]) == (3, "layer", "maxpool", 4)
    warmup, gan = c.stages
    assert warmup.kind == "pixel" and (gan.kind, gan.adversarial, gan.critic_steps) == ("gan", "nonsaturating", 1)
    assert [t.name for t in gan.losses] == ["multiscale_filtered_l1"] and gan.losses[0].settings["filters"] == g[
        "filters"
    ]


def test_sqe_recipe_is_the_paper() -> None:
    c = load_config(ROOT / "pipelines" / "sqe.toml")
    manifold, gan = c.stages
    assert manifold.kind == "autoencoder" and [p.name for p in plan(c)] == [
        "manifold",
        "gan",
    ]  # no implicit pre-training
    weights = {t.name: t.weight for t in gan.losses}
    assert weights == {"quasi_norm": 1.0, "autoencoder": 0.2, "ssim": 2.0} and gan.adversarial_weight == 0.016
    assert gan.losses[0].settings["q"] == 0.5 and c.content.autoencoder["q"] == 0.5
    assert gan.losses[2].settings == {"window": "uniform", "kernel_size": 5}
    assert gan.adversarial == "kl_two_class" and c.data.patch == 64  # 64 x 64 LR -> 256 x 256 HR
    with_vgg = load_config(ROOT / "pipelines" / "sqe.toml", ['content.vgg19_weights="/w/vgg19.pth"'])
    assert with_vgg.content_losses == ["autoencoder"]  # the manifold loss is always the autoencoder


def test_seed_config_errors_name_the_problem() -> None:
    base = {
        "run": {"name": "t"},
        "generator": {"name": "edsr"},
        "data": {"patch": 16},
        "discriminator": {"name": "vgg_patch"},
    }
    pixel = {"name": "p", "losses": [{"name": "l1"}]}
    roi = {"discriminator": {"name": "gap_cnn"}, "crop": 32}
    cases = [
        ([{"name": "t2", "kind": "discriminator", "discriminators": ["roi"]}], {}, "need a [roi] section"),
        ([{"name": "t2", "kind": "discriminator", "discriminators": ["cells"]}], {}, "discriminators must be"),
        ([{"name": "t1", "kind": "discriminator", "losses": [{"name": "l1"}]}], {}, "takes no generator losses"),
        ([{"name": "g", "kind": "gan", "critic_steps": 0}], {}, "critic_steps"),
        (
            [{"name": "t2", "kind": "discriminator", "discriminators": ["roi"]}],
            {"roi": {**roi, "crop": 96}},
            "larger than the HR patch",
        ),
        ([{"name": "ae", "kind": "autoencoder"}, pixel], {}, "no stage uses the autoencoder"),
        (
            [{"name": "p", "losses": [{"name": "autoencoder"}]}, {"name": "ae", "kind": "autoencoder"}],
            {},
            "must come before stage p",
        ),
    ]
    for stages, extra, message in cases:
        with pytest.raises(InputError) as info:
            config_from_dict({**base, **extra, "stages": stages}, "t")
        assert message in str(info.value)
    ok = config_from_dict(
        {**base, "roi": roi, "stages": [{"name": "t2", "kind": "discriminator", "discriminators": ["roi"]}]}, "t"
    )
    assert ok.roi is not None and ok.roi.crop == 32 and ok.roi.per_image == 1


# -- trainer extensions ---------------------------------------------------------------------------
def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rvtt_stages_train_what_they_name_and_resume_exactly(prepared: Path, tmp_path: Path) -> None:
    """Stopped after each stage and resumed: the T1 stage changes only T1, the T2 stage only
    T2, the generator stays put in both; the resumed run equals an uninterrupted one."""
    whole = Trainer(recipe("rvtt", prepared, tmp_path / "a"), progress=False).run()
    assert whole.finished and whole.step == 10  # autoencoder, reconstruction, t1, t2, adversarial
    states = []
    for stop in (4, 6, 8, None):  # after reconstruction, t1, t2, and the end
        trainer = Trainer(recipe("rvtt", prepared, tmp_path / "b"), progress=False)
        trainer.run(resume=stop != 4, stop_after=stop)
        states.append(load_state(tmp_path / "b"))
    recon, t1, t2, end = states
    assert _same(recon["generator"], t1["generator"]) and _same(t1["generator"], t2["generator"])
    assert not _same(recon["discriminator"], t1["discriminator"]) and _same(
        recon["roi_discriminator"], t1["roi_discriminator"]
    )
    assert _same(t1["discriminator"], t2["discriminator"]) and not _same(
        t1["roi_discriminator"], t2["roi_discriminator"]
    )
    assert not any(_same(t2[k], end[k]) for k in ("generator", "discriminator", "roi_discriminator"))
    a = load_state(tmp_path / "a")
    assert all(_same(a[k], end[k]) for k in ("generator", "discriminator", "roi_discriminator", "autoencoder"))
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    assert not list((tmp_path / "a" / "checkpoints").glob("t1-*")) and list(
        (tmp_path / "a" / "checkpoints").glob("adversarial-*")
    )


def test_roi_discriminator_sees_crops_around_nuclei(prepared: Path, tmp_path: Path) -> None:
    config = recipe("rvtt", prepared, tmp_path / "run", "roi.crop=20", "roi.per_image=3")
    trainer = Trainer(config, progress=False)
    shapes: list[tuple[int, ...]] = []
    trainer.adversaries.models["roi"].register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))
    trainer.run()
    batch = config.data.batch_size
    assert shapes and set(shapes) == {(batch * 3, 3, 20, 20)}  # t2 and adversarial stages, HR and SR crops


def test_critic_steps_per_generator_step(prepared: Path, tmp_path: Path) -> None:
    """MicroGAN: four WGAN-GP critic updates per generator update, fresh batches after the first."""
    config = recipe("microgan", prepared, tmp_path / "run", "stages.0.steps=3")
    Trainer(config, progress=False).run(stop_after=2 + 3)  # autoencoder pre-training, then the GAN stage
    optim = load_state(tmp_path / "run")["optim"]["optimizers"]
    steps = {name: int(next(iter(o["state"].values()))["step"]) for name, o in optim.items()}
    assert steps == {"generator": 3, "discriminator": 12}
    log = [
        line
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"wgan"' in line and '"discriminator"' in line
    ]
    assert log  # the critic's loss (with its gradient penalty) is logged


def test_explicit_autoencoder_stage_pretrains_then_freezes(prepared: Path, tmp_path: Path) -> None:
    config = recipe("sqe", prepared, tmp_path / "run", "stages.0.steps=3", "stages.1.steps=2")
    initial = {k: v.clone() for k, v in Trainer(config, progress=False).autoencoder.state_dict().items()}  # type: ignore[union-attr]
    trainer = Trainer(config, progress=False)
    trainer.run(stop_after=3, overwrite=True)
    pretrained = load_state(tmp_path / "run")["autoencoder"]
    Trainer(config, progress=False).run(resume=True)
    assert not _same(initial, pretrained) and _same(pretrained, load_state(tmp_path / "run")["autoencoder"])
    card = read_card(tmp_path / "run" / "final.safetensors")
    assert card["content_loss_detail"]["autoencoder"]["pretrain_steps"] == 3 and card["steps_done"] == {
        "manifold": 3,
        "gan": 2,
    }


# -- short CPU runs on real tiles -----------------------------------------------------------------
#: steps (and learning rates) of each recipe's stages for a seconds-long CPU run
CPU_RUNS = {
    "rvtt": [
        "content.autoencoder_steps=20",
        "stages.0.steps=30",
        "stages.0.lr=1e-3",
        "stages.1.steps=5",
        "stages.2.steps=5",
        "stages.3.steps=10",
        "stages.3.lr=1e-3",
    ],
    "microgan": ["content.autoencoder_steps=20", "stages.0.steps=40", "stages.0.lr=1e-3"],
    "crn": ["stages.0.steps=30", "stages.0.lr=1e-3", "stages.1.steps=10"],
    "sqe": ["stages.0.steps=20", "stages.1.steps=40", "stages.1.lr=1e-3"],
}


@pytest.mark.parametrize("name", SEEDS)
def test_short_cpu_run_lowers_validation_loss(name: str, prepared: Path, tmp_path: Path) -> None:
    extra = ["data.batch_size=8", "data.patch=16", "validation.every=10", *CPU_RUNS[name]]
    result = Trainer(recipe(name, prepared, tmp_path / "run", *extra), progress=False).run()
    first, last = result.validations[0]["val"], result.validations[-1]["val"]
    print(
        f"\n{name}: {result.step} steps in {result.seconds:.1f} s: val L1 {first['l1']:.4f} -> {last['l1']:.4f}, "
        f"PSNR {first['psnr']:.2f} -> {last['psnr']:.2f} dB "
        f"(bicubic {result.baseline['l1']:.4f} / {result.baseline['psnr']:.2f} dB)"
    )
    assert last["l1"] < 0.8 * first["l1"] and last["psnr"] > first["psnr"]
