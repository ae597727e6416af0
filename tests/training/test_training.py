"""Training: patch preparation exactly as the archive degrades, typed recipes, every
pipeline as a smoke test, a tiny real CPU run, exact resume, model cards, and a run
path that needs neither zarr nor imagecodecs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data import ROOT, TILES, TRAINING_FILES
from wsistore.cli import main
from wsistore.codecs import DEFAULT_CODEC, make_codec
from wsistore.degradation import Downsample, degrade
from wsistore.models.weights import load_generator, read_card
from wsistore.training.config import config_from_dict, load_config
from wsistore.training.evaluate import evaluate
from wsistore.training.prepare import PrepareOptions, choose_validation
from wsistore.training.shards import load_validation, read_manifest
from wsistore.training.state import load_state
from wsistore.training.trainer import Trainer, plan

PIPELINES = sorted((ROOT / "pipelines").glob("*.toml"))
FILES = list(TRAINING_FILES)
VAL_FILE = "breast_monuseg_AO-A0J2.png"


def shard_arrays(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = read_manifest(root)
    shards = [s for s in m["shards"] if s["split"] == split]
    return tuple(np.concatenate([np.load(root / s[k]) for s in shards]) for k in ("lr", "hr", "index"))  # type: ignore[return-value]


def smoke_overrides(data: Path, out: Path) -> list[str]:
    return [f"data.shards={json.dumps(str(data))}", f"run.out={json.dumps(str(out))}"]


# -- prepare ----------------------------------------------------------------------------------
def test_prepared_pairs_align_and_carry_the_codec(prepared: Path) -> None:
    m = read_manifest(prepared)
    assert m["scale"] == 4 and m["patch"] == 24 and m["chunk"] == 256
    assert m["codec"]["name"] == f"imagecodecs_{DEFAULT_CODEC}" and m["downsample"]["version"] == 1
    assert m["split"]["val_files"] == [VAL_FILE]
    assert any("CC BY-NC-SA 4.0" in x for x in m["licences"]) and any("Apache-2.0" in x for x in m["licences"])
    lr, hr, index = shard_arrays(prepared, "train")
    assert lr.shape[1:] == (3, 24, 24) and hr.shape[1:] == (3, 96, 96) and len(lr) == m["counts"]["train"] > 40
    down = Downsample(4)
    for i in range(0, len(lr), 7):
        number, x, y = (int(v) for v in index[i, :3])
        image = np.asarray(Image.open(TILES / m["files"][number]["name"]).convert("RGB"))
        assert np.array_equal(hr[i].transpose(1, 2, 0), image[4 * y : 4 * y + 96, 4 * x : 4 * x + 96])
        coded = lr[i].transpose(1, 2, 0).astype(float)
        error = np.mean((coded - down.reduce_region(image, (x, y, x + 24, y + 24))) ** 2)
        shifted = np.mean((coded - down.reduce_region(image, (x + 1, y, x + 25, y + 24))) ** 2)
        assert 0 < error < 40 and shifted > 3 * error, (error, shifted)  # coded, and aligned with the HR


def test_prepare_like_an_archive_reproduces_its_stored_lr(
    sample_archive: Path, slide_path: Path, tmp_path: Path
) -> None:
    """Patches from the real SVS prepared --like its archive equal the archive's stored LR
    bit for bit, edge chunks included; only tissue patches are kept."""
    from wsistore.archive.reader import Archive

    out = tmp_path / "svs"
    assert (
        main(
            [
                "train",
                "prepare",
                str(slide_path),
                str(out),
                "--like",
                str(sample_archive),
                "--patch",
                "64",
                "--patches-per-file",
                "200",
                "--val-fraction",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    m = read_manifest(out)
    archive = Archive.open(sample_archive)
    assert m["codec"] == archive.metadata.codec and m["like"] == str(sample_archive)
    lr, _, index = shard_arrays(out, "train")
    lw, lh = archive.levels[0].width, archive.levels[0].height
    edge = 0
    for patch, (_, x, y) in zip(lr, index[:, :3], strict=True):
        stored = archive.read_lr(0, (int(x), int(y), int(x) + 64, int(y) + 64)).transpose(2, 0, 1)
        assert np.array_equal(patch, stored)
        edge += int(y) + 64 > lh // 256 * 256 or int(x) + 64 > lw // 256 * 256
    assert edge > 0  # some patches lie in the padded edge chunks
    record = m["files"][0]
    assert record["grid_candidates"] > record["tissue_candidates"] >= len(lr) > 10  # the slide has glass
    glass = lambda im: (im.min(axis=-3) > 215) & (np.ptp(im, axis=-3) < 15)  # noqa: E731  bright, grey
    slide_lr = Downsample(4).reduce_region(_whole(slide_path))
    per_patch = glass(lr.astype(int)).mean(axis=(1, 2))
    assert per_patch.max() < 0.9 and per_patch.mean() < 0.5 * glass(slide_lr.transpose(2, 0, 1).astype(int)).mean()


def test_an_archive_as_source_means_its_slide_degraded_like_it(slide_path: Path, tmp_path: Path) -> None:
    """An archive among the SOURCES: its source slide (found beside it, sha256 checked),
    degraded with the archive's own codec (here WebP), chunk and fill."""
    from wsistore.archive.reader import Archive

    (tmp_path / slide_path.name).symlink_to(slide_path)
    archive = tmp_path / "skin.zarr"
    assert (
        main(
            [
                "ingest",
                str(tmp_path / slide_path.name),
                str(archive),
                "--codec",
                "webp",
                "--quality",
                "70",
                "--chunk",
                "128",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "patches"
    assert (
        main(["train", "prepare", str(archive), str(out), "--patch", "48", "--patches-per-file", "12", "--quiet"]) == 0
    )
    m = read_manifest(out)
    assert m["codec"]["name"] == "imagecodecs_webp" and m["chunk"] == 128 and m["files"][0]["name"] == slide_path.name
    stored = Archive.open(archive)
    lr, _, index = shard_arrays(out, "train")
    for patch, (_, x, y) in zip(lr, index[:, :3], strict=True):
        assert np.array_equal(patch, stored.read_lr(0, (int(x), int(y), int(x) + 48, int(y) + 48)).transpose(2, 0, 1))
    (tmp_path / slide_path.name).unlink()
    assert main(["train", "prepare", str(archive), str(tmp_path / "o2"), "--quiet"]) == 2


def _whole(slide_path: Path) -> np.ndarray:
    from wsistore.readers import open_slide

    with open_slide(slide_path) as slide:
        return slide.read_region((0, 0), 0, slide.dimensions)


def test_dihedral_and_phase_variants_are_archived_exactly(tmp_path: Path) -> None:
    """Every LR patch of a variant is what an archive of the flipped/rotated and cropped
    HR image stores (transform and crop before downsampling and coding), bit for bit; the
    HR is the same pixels; validation files stay identity + grid; random positions never
    repeat within a variant."""
    train, val = "pancreas_cryonuseg_S4-A8RO.png", "lung_deepliif-ki67_Lung1.png"
    out = tmp_path / "variants"
    args = [
        "train",
        "prepare",
        str(TILES / train),
        str(TILES / val),
        str(out),
        "--patch",
        "32",
        "--patches-per-file",
        "48",
        "--positions",
        "random",
        "--dihedral",
        "--phases",
        "2",
        "--val-file",
        val,
        "--quiet",
    ]
    assert main(args) == 0
    m = read_manifest(out)
    assert m["version"] == 2 and m["dihedral"] and m["phases"] == 2 and m["positions"] == "random"
    record = next(r for r in m["files"] if r["name"] == train)
    assert [v["transform"] for v in record["variants"]] == [t for t in range(8) for _ in range(2)]
    assert all(v["offset"] == [0, 0] for v in record["variants"][::2]) and all(
        min(v["offset"]) > 0 for v in record["variants"][1::2]
    )
    assert [(v["transform"], v["offset"]) for v in next(r for r in m["files"] if r["name"] == val)["variants"]] == [
        (0, [0, 0])
    ]
    lr, hr, index = shard_arrays(out, "train")
    assert len(lr) == record["patches"] >= 40
    image = np.asarray(Image.open(TILES / train).convert("RGB"))
    degraded: dict[tuple[int, int, int], np.ndarray] = {}
    for patch, target, (_, x, y, t, ox, oy) in zip(lr, hr, index.tolist(), strict=True):
        variant = np.rot90(image, t % 4)
        variant = np.ascontiguousarray((variant[:, ::-1] if t >= 4 else variant)[4 * oy :, 4 * ox :])
        if (t, ox, oy) not in degraded:
            fill = next(v["fill"] for v in record["variants"] if v["transform"] == t and v["offset"] == [ox, oy])
            degraded[t, ox, oy] = degrade(variant, make_codec(DEFAULT_CODEC), fill=fill)
        assert np.array_equal(patch.transpose(1, 2, 0), degraded[t, ox, oy][y : y + 32, x : x + 32])
        assert np.array_equal(target.transpose(1, 2, 0), variant[4 * y : 4 * y + 128, 4 * x : 4 * x + 128])
    keys = [tuple(row[1:]) for row in index.tolist()]
    assert len(set(keys)) == len(keys)
    _, _, val_index = shard_arrays(out, "val")
    assert (val_index[:, 3:] == 0).all() and len(val_index) == m["counts"]["val"] > 0
    assert len({(x % 32, y % 32) for x, y in val_index[:, 1:3].tolist()}) == 1  # one non-overlapping grid


def test_stain_jitter_restains_before_degradation(tmp_path: Path) -> None:
    """With --stain-jitter the training image is re-stained in HED space by seeded factors
    within the bounds, and both sides of every pair come from the re-stained image (the LR
    exactly as an archive of it stores); validation files keep their own stain."""
    from wsistore.training.prepare import restain

    train, val = "pancreas_cryonuseg_S4-A8RO.png", "lung_deepliif-ki67_Lung1.png"
    out = tmp_path / "stained"
    args = ["train", "prepare", str(TILES / train), str(TILES / val), str(out), "--patch", "32"]
    assert main([*args, "--patches-per-file", "16", "--stain-jitter", "0.03", "--val-file", val, "--quiet"]) == 0
    m = read_manifest(out)
    record = next(r for r in m["files"] if r["name"] == train)
    (variant,) = record["variants"]
    stain = tuple(variant["stain"])
    assert m["stain_jitter"] == 0.03 and len(stain) == 6 and stain != (1, 1, 1, 0, 0, 0)
    assert all(0.97 <= f <= 1.03 for f in stain[:3]) and all(-0.03 <= b <= 0.03 for b in stain[3:])
    assert next(r for r in m["files"] if r["name"] == val)["variants"][0]["stain"] == []
    stained = restain(np.asarray(Image.open(TILES / train).convert("RGB")), stain)
    degraded = degrade(stained, make_codec(DEFAULT_CODEC), fill=variant["fill"])
    lr, hr, index = shard_arrays(out, "train")
    assert len(lr) == record["patches"] > 0
    for patch, target, (_, x, y, *_) in zip(lr, hr, index.tolist(), strict=True):
        assert np.array_equal(patch.transpose(1, 2, 0), degraded[y : y + 32, x : x + 32])
        assert np.array_equal(target.transpose(1, 2, 0), stained[4 * y : 4 * y + 128, 4 * x : 4 * x + 128])


def test_validation_split_is_by_file_and_deterministic(prepared: Path) -> None:
    m = read_manifest(prepared)
    val_numbers = {i for i, f in enumerate(m["files"]) if f["split"] == "val"}
    assert {m["files"][i]["name"] for i in val_numbers} == {VAL_FILE}
    assert set(shard_arrays(prepared, "val")[2][:, 0]) == val_numbers
    assert not set(shard_arrays(prepared, "train")[2][:, 0]) & val_numbers
    names = sorted(p.name for p in TILES.glob("*.png"))
    first = choose_validation(names, PrepareOptions(codec=None))
    assert first == choose_validation(list(reversed(names)), PrepareOptions(codec=None)) and len(first) == round(
        0.15 * len(names)
    )
    assert first != choose_validation(names, PrepareOptions(codec=None, seed=1))


def test_prepare_errors_are_one_line(
    prepared: Path, sample_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tile = str(TILES / FILES[0])
    assert main(["train", "prepare", tile, str(prepared), "--quiet"]) == 4
    assert main(["train", "prepare", tile, str(tmp_path / "o"), "--like", str(sample_archive), "--codec", "avif"]) == 2
    assert main(["train", "prepare", str(tmp_path / "none.png"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "--overwrite" in err[0] and "come from the archive" in err[1] and "no such file" in err[2]


# -- recipes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_every_pipeline_runs_as_a_smoke_test(pipeline: Path, prepared: Path, tmp_path: Path) -> None:
    full = load_config(pipeline)
    assert full.stages and all(s.steps >= 1 for s in full.stages)
    out = tmp_path / "run"
    assert main(["train", "run", str(pipeline), "--smoke", "--data", str(prepared), "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["finished"] and run["step"] == 2 * len(plan(full))
    loaded = load_generator(str(out / "final.safetensors"))
    assert loaded.card["architecture"] == full.generator.name and loaded.card["recipe"] == full.run.name
    for stage in full.stages:
        if not stage.trains_generator:
            continue  # discriminator and autoencoder stages leave the generator as it was
        kept = list((out / "checkpoints").glob(f"{stage.name}-*.safetensors"))
        assert 1 <= len(kept) <= full.validation.keep_best


def test_techcyte_recipe_is_the_paper() -> None:
    c = load_config(ROOT / "pipelines" / "techcyte.toml")
    assert (
        c.generator.name == "edsr" and c.generator.settings["blocks"] == 32 and c.generator.settings["features"] == 64
    )
    pixel, gan = c.stages
    assert (pixel.kind, pixel.steps, [t.name for t in pixel.losses]) == ("pixel", 20000, ["mse"])
    assert (gan.kind, gan.steps, gan.adversarial, [t.name for t in gan.losses]) == (
        "gan",
        30000,
        "nonsaturating",
        ["content"],
    )
    assert c.validation.keep_best == 3 and c.content_loss == "autoencoder"
    with_vgg = load_config(ROOT / "pipelines" / "techcyte.toml", ['content.vgg19_weights="/w/vgg19.pth"'])
    assert with_vgg.content_losses == ["vgg19"] and with_vgg.resolve(gan.losses[0])[1]["layer"] == "relu5_4"


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    base = {"run": {"name": "t"}, "generator": {"name": "edsr"}, "stages": [{"name": "a", "losses": [{"name": "l1"}]}]}
    assert config_from_dict(base, "t").stages[0].steps == 1000
    cases = [
        ({"run": {"name": "t", "sede": 1}}, "unknown key 'sede'"),
        ({"stages": [{"name": "a", "steps": "ten", "losses": [{"name": "l1"}]}]}, "expected an integer"),
        ({"stages": [{"name": "a", "losses": [{"name": "perceptual"}]}]}, "unknown loss"),
        ({"stages": [{"name": "a", "kind": "gan", "losses": []}]}, "need a [discriminator]"),
        ({"generator": {"name": "bicubic"}}, "nothing to train"),
        ({"generator": {"name": "edsr", "settings": {"blocks": 0}}}, "invalid edsr settings"),
        ({"validation": {"metric": "lpips"}}, "metric must be"),
        ({"run": {"name": "t", "precision": "fp16"}}, "precision must be"),
    ]
    from wsistore.errors import InputError

    for change, message in cases:
        with pytest.raises(InputError) as info:
            config_from_dict({**base, **change}, "t")
        assert message in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname = 1")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)


# -- real runs ---------------------------------------------------------------------------------
TINY = """
[run]
name = "tiny"
seed = 3
log_every = 10
checkpoint_every = 1000
[data]
batch_size = 8
patch = 16
[generator]
name = "edsr"
settings = {{ blocks = 2, features = 16 }}
[validation]
every = 40
keep_best = 2
metric = "l1"
[[stages]]
name = "pixel"
steps = {steps}
lr = 1e-3
losses = [{{ name = "l1" }}]
"""


def test_tiny_cpu_run_lowers_validation_l1(prepared: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.toml"
    config_file.write_text(TINY.format(steps=160))
    config = load_config(config_file, smoke_overrides(prepared, tmp_path / "run"))
    result = Trainer(config, progress=False).run()
    first, last = result.validations[0]["val"], result.validations[-1]["val"]
    print(
        f"\ntiny EDSR 2x16, 160 steps: val L1 {first['l1']:.4f} -> {last['l1']:.4f}, "
        f"PSNR {first['psnr']:.2f} -> {last['psnr']:.2f} dB "
        f"(bicubic {result.baseline['l1']:.4f} / {result.baseline['psnr']:.2f} dB), "
        f"{result.steps_per_second:.1f} steps/s"
    )
    assert last["l1"] < 0.8 * first["l1"] and last["psnr"] > first["psnr"]
    best = result.best["pixel"]
    assert len(best) == 2 and best[0]["l1"] <= best[1]["l1"]
    # a kept checkpoint reproduces its recorded validation metrics
    card = read_card(tmp_path / "run" / best[0]["file"])
    loaded = load_generator(str(tmp_path / "run" / best[0]["file"]))
    val_lr, val_hr = load_validation(prepared, config.validation.max_patches)
    assert evaluate(loaded.model, val_lr, val_hr, torch.device("cpu"), 16)["l1"] == pytest.approx(
        card["metrics"]["val_l1"], rel=1e-6
    )
    assert card["data"]["split"]["val_files"] == [VAL_FILE] and card["codec"]["name"] == f"imagecodecs_{DEFAULT_CODEC}"
    assert card["downsample"]["version"] == 1 and card["step"] == best[0]["step"] and card["precision"] == "fp32"
    assert {f["licence"] for f in card["data"]["files"]} == set(card["data"]["licences"])
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val" in r] == [0, 40, 80, 120, 160]


def test_interrupted_run_resumes_bit_exact(prepared: Path, tmp_path: Path) -> None:
    """Stopped inside the pixel stage and again inside the GAN stage, then resumed: same
    weights (generator, discriminator, autoencoder), same log, same kept checkpoints."""
    techcyte = ROOT / "pipelines" / "techcyte.toml"
    extra = [
        "stages.0.steps=4",
        "stages.1.steps=4",
        "content.autoencoder_steps=3",
        "run.checkpoint_every=100",
        "validation.every=3",
    ]

    def trainer(out: Path) -> Trainer:
        return Trainer(load_config(techcyte, smoke_overrides(prepared, out) + extra, smoke=True), progress=False)

    whole = trainer(tmp_path / "a").run()
    assert not trainer(tmp_path / "b").run(stop_after=5).finished
    assert not trainer(tmp_path / "b").run(resume=True, stop_after=9).finished
    resumed = trainer(tmp_path / "b").run(resume=True)
    assert whole.finished and resumed.finished and whole.step == resumed.step == 11
    a, b = load_state(tmp_path / "a"), load_state(tmp_path / "b")
    for part in ("generator", "discriminator", "autoencoder"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    strip = lambda best: {k: [(r["step"], r["psnr"]) for r in v] for k, v in best.items()}  # noqa: E731
    assert strip(whole.best) == strip(resumed.best)
    # and resuming a finished run with another recipe is refused
    changed = Trainer(
        load_config(techcyte, smoke_overrides(prepared, tmp_path / "b") + extra + ["run.seed=9"], smoke=True),
        progress=False,
    )
    from wsistore.errors import InputError

    with pytest.raises(InputError, match="recipe changed"):
        changed.run(resume=True)


def test_vgg19_content_loss_is_recorded(prepared: Path, tmp_path: Path) -> None:
    from torchvision.models.vgg import cfgs, make_layers

    weights = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}, weights)
    out = tmp_path / "run"
    args = [
        "train",
        "run",
        str(ROOT / "pipelines" / "techcyte.toml"),
        "--smoke",
        "--data",
        str(prepared),
        "--out",
        str(out),
        "--vgg19-weights",
        str(weights),
        "--quiet",
    ]
    assert main(args) == 0
    card = read_card(out / "final.safetensors")
    assert card["content_loss"] == "vgg19" and card["content_loss_detail"]["vgg19"]["weights"] == "vgg19.pth"
    assert "autoencoder" not in card["steps_done"]  # no autoencoder pre-training without need
    smoke = read_card(next((out / "checkpoints").glob("gan-*.safetensors")))
    assert smoke["stage"] == "gan" and smoke["content_loss"] == "vgg19"


def test_run_errors_are_one_line(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def train(*extra: str) -> int:
        techcyte = str(ROOT / "pipelines" / "techcyte.toml")
        return main(["train", "run", techcyte, "--smoke", "--quiet", "--out", str(tmp_path / "r"), *extra])

    assert train() == 2
    assert train("--data", str(tmp_path)) == 2
    assert train("--data", str(prepared), "--set", "stages.0.steps=1", "--set", "stages.1.steps=0") == 0
    assert train("--data", str(prepared)) == 4
    assert train("--data", str(prepared), "--set", "stages.7.steps=1") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("wsistore: error:") for line in err)
    assert (
        "data.shards is not set" in err[0]
        and "no prepared patches" in err[1]
        and "resume it" in err[2]
        and "no item 7" in err[3]
    )


def test_resume_with_no_saved_state_starts_afresh(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed before its first state (its config and checkpoint folder written): ``--resume``
    starts it afresh, says so, and trains what a fresh run trains; a finished run is not retrained."""
    from safetensors.torch import load_file

    techcyte = str(ROOT / "pipelines" / "techcyte.toml")
    argv = ["train", "run", techcyte, "--smoke", "--quiet", "--data", str(prepared), "--set", "stages.1.steps=0"]
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    assert main([*argv, "--out", str(fresh)]) == 0
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "config.json").write_text("{}")
    capsys.readouterr()
    assert main([*argv, "--out", str(killed), "--resume"]) == 0
    assert capsys.readouterr().err.splitlines() == [f"wsistore: nothing to resume at {killed}: starting afresh"]
    a, b = load_file(fresh / "final.safetensors"), load_file(killed / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (killed / "state.pt").unlink(missing_ok=True)  # a finished run with no state: nothing to resume, as before
    assert main([*argv, "--out", str(killed), "--resume"]) == 2
    assert "nothing to resume (state.pt missing)" in capsys.readouterr().err


def test_run_path_needs_no_zarr_or_imagecodecs(prepared: Path, tmp_path: Path) -> None:
    """The GPU training machine may have only torch, numpy and safetensors."""
    blocked = [
        "zarr",
        "imagecodecs",
        "numcodecs",
        "dask",
        "tifffile",
        "tiffslide",
        "openslide",
        "PIL",
        "scipy",
        "tqdm",
        "torchvision",
        "torchmetrics",
        "piq",
        "skimage",
        "fsspec",
    ]
    argv = ["train", "run", str(ROOT / "pipelines" / "techcyte.toml"), "--smoke", "--data", str(prepared)]
    argv += ["--out", str(tmp_path / "r")]
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from wsistore.cli import main\n"
        f"code = main({argv!r})\n"
        f"assert not [m for m in {blocked!r} if sys.modules.get(m) is not None]\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trained techcyte" in result.stdout and (tmp_path / "r" / "final.safetensors").is_file()


def test_cosine_schedule_ends_at_its_floor() -> None:
    """``lr_schedule = "cosine"`` anneals each stage from ``lr`` to ``lr * lr_floor``; a
    cosine stage refuses milestones."""
    from wsistore.training.config import LossTerm, Stage
    from wsistore.training.trainer import _Optim

    stage = Stage("pixel", steps=10, lr=1e-3, lr_schedule="cosine", lr_floor=0.01, losses=(LossTerm("l1"),))
    optim = _Optim.make({"generator": torch.nn.Linear(2, 2)}, stage.lr, stage.betas, stage)
    rates = []
    for _ in range(stage.steps):
        optim.optimizers["generator"].step()
        optim.schedule()
        rates.append(optim.lr())
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="milestones"):
        Stage("pixel", lr_schedule="cosine", lr_milestones=(5,), losses=(LossTerm("l1"),))
    with pytest.raises(ValueError, match="lr_schedule"):
        Stage("pixel", lr_schedule="linear", losses=(LossTerm("l1"),))
