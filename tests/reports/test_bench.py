"""wsistore bench --quick on a crop of the real sample: all files, every method and
metric, bits per pixel equal to real encoded bytes, identical inputs identical."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wsistore.codecs import parse_codec
from wsistore.degradation import Downsample, encode_on_grid
from wsistore.models.weights import default_model
from wsistore.readers import open_slide
from wsistore.reports.methods import QUICK_ARCHIVE_SWEEP, QUICK_HR_SWEEP, QUICK_HYBRID_LAMBDAS, code_full_resolution
from wsistore.reports.metrics import METRICS
from wsistore.tissue import detect_tissue

REGION = (512, 1536, 1024, 1024)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory, sample_path: Path) -> Path:
    out = tmp_path_factory.mktemp("bench") / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsistore",
            "bench",
            str(sample_path),
            "--out",
            str(out),
            "--quick",
            "--quiet",
            "--region",
            ",".join(map(str, REGION)),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return out


def test_writes_three_files(quick_report: Path) -> None:
    for name in ("results.json", "report.md", "report.html"):
        assert (quick_report / name).stat().st_size > 500
    html = (quick_report / "report.html").read_text()
    assert "<img" in html and re.search(r'src="(?!data:)', html) is None  # self-contained
    md = (quick_report / "report.md").read_text()
    assert "Who wins at equal bytes" in md and "i-HR" in md
    assert all((quick_report / m.group(1)).is_file() for m in re.finditer(r"!\[[^]]*\]\(([^)]+)\)", md))


def test_every_method_and_metric(quick_report: Path) -> None:
    results = json.loads((quick_report / "results.json").read_text())
    records = results["records"]
    archive = {(r["setting"], r["upscaler"]) for r in records if r["family"] == "archive"}
    default = default_model()  # scored unless --models says otherwise: the archive as restore gives it
    assert archive == {(s, u) for s in QUICK_ARCHIVE_SWEEP for u in ("nearest", "bicubic", default)}
    assert {r["setting"] for r in records if r["family"] == "hr_codec"} == set(QUICK_HR_SWEEP)
    hybrid = {(r["setting"], r["upscaler"], r["hybrid"]["lambda"]) for r in records if r["family"] == "hybrid"}
    assert hybrid == {(s, default, lam) for s in QUICK_ARCHIVE_SWEEP for lam in QUICK_HYBRID_LAMBDAS}
    assert sum(r["family"] == "source" for r in records) == 1
    for r in records:
        assert set(METRICS) <= set(r["metrics"])
        assert r["bpp"] > 0 and r["bytes"] > 0
    assert results["lpips"]["available"] is False and "weights" in results["lpips"]["reason"]


def test_bits_per_pixel_are_real_encoded_bytes(quick_report: Path, sample_path: Path) -> None:
    records = json.loads((quick_report / "results.json").read_text())["records"]
    x, y, w, h = REGION
    with open_slide(sample_path) as slide:
        hr = slide.read_region((x, y), 0, (w, h))
    setting = "jpegxl:distance=1.0"
    with open_slide(sample_path) as slide:
        fill = detect_tissue(slide).fill_value
    _, sizes = encode_on_grid(Downsample(4).reduce_region(hr), parse_codec(setting), 256, fill, (y // 4, x // 4))
    nbytes = sum(sizes.values())
    rec = next(r for r in records if r["setting"] == setting and r["upscaler"] == "bicubic")
    assert rec["bytes"] == nbytes and rec["bpp"] == pytest.approx(8 * nbytes / (w * h))
    hr_setting = QUICK_HR_SWEEP[0]
    rec = next(r for r in records if r["setting"] == hr_setting)
    assert rec["bytes"] == code_full_resolution(hr, hr_setting, (y, x)).nbytes  # tiles on the archive's grid


def test_identical_scores_identical(quick_report: Path) -> None:
    source = next(
        r for r in json.loads((quick_report / "results.json").read_text())["records"] if r["family"] == "source"
    )
    m = source["metrics"]
    assert m["psnr"] == 100.0 and m["ssim"] == pytest.approx(1.0) and m["gmsd"] == pytest.approx(0.0, abs=1e-7)
    assert m["haarpsi"] == pytest.approx(1.0, abs=1e-5) and m["nuclei_f1"] == 1.0
    assert np.isclose(source["ratio_to_source"], 1.0)


def test_bad_inputs(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "wsistore", "bench", str(tmp_path / "none.svs"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    region = subprocess.run(
        [sys.executable, "-m", "wsistore", "bench", "x", "--out", "o", "--region", "1,2"],
        capture_output=True,
        text=True,
    )
    assert region.returncode == 2 and "x,y,w,h" in region.stderr


def test_the_default_setting_is_the_archive_default_codec() -> None:
    from wsistore.codecs import DEFAULT_CODEC, make_codec, parse_codec
    from wsistore.reports.run import DEFAULT_SETTING

    assert parse_codec(DEFAULT_SETTING) == make_codec(DEFAULT_CODEC)


def test_the_adaptation_is_scored_with_its_bytes(tmp_path: Path, tile: np.ndarray) -> None:
    """``MODEL+adapted`` is tuned on the coded LR as ingest tunes it; its bytes count only when kept."""
    from PIL import Image

    from tests.archive.test_adaptation import QUICK_ADAPT
    from wsistore.reports.run import DEFAULT_SETTING, BenchOptions, run_bench

    Image.fromarray(tile).save(tmp_path / "tile.png")
    options = BenchOptions(
        inputs=[tmp_path / "tile.png"],
        out=tmp_path / "report",
        archive_codecs=[DEFAULT_SETTING],
        hr_codecs=["jpeg:level=50"],
        progress=False,
        adapt=QUICK_ADAPT,
    )
    records = run_bench(options)["records"]
    base = next(r for r in records if r["upscaler"] == default_model())
    adapted = next(r for r in records if r["upscaler"] == default_model() + "+adapted")
    info = adapted["adaptation"]
    assert info["steps"] == QUICK_ADAPT.steps and info["bytes_added"] == (info["bytes"] if info["kept"] else 0)
    assert adapted["bytes"] == base["bytes"] + info["bytes_added"]
    if not info["kept"]:  # 1 MP: 2 KB costs 0.22 dB at AVIF's slope, more than this short tuning gains
        assert adapted["metrics"] == base["metrics"]
