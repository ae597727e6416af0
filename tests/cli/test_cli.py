"""The command line: real runs, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsistore", *args], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wsistore: error:"), result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.stderr


def test_ingest_info_verify(tmp_path: Path, slide_path: Path) -> None:
    out = tmp_path / "a.zarr"
    result = run("ingest", str(slide_path), str(out), "--codec", "avif", "--quality", "60", "--quiet", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "9/9 chunks" in result.stdout
    info = json.loads(run("info", str(out), "--json").stdout)
    assert info["codec"]["name"] == "imagecodecs_avif" and info["codec"]["configuration"]["level"] == 60
    assert info["mpp"] == [0.499, 0.499] and info["dimensions"] == [2220, 2967]
    assert 0 < info["bits_per_source_pixel"] < 24
    text = run("info", str(out)).stdout
    assert "bits per source pixel" in text and "0.499" in text
    result = run("verify", str(out), "--against", str(slide_path), "--quiet")
    assert result.returncode == 0 and result.stdout.startswith("OK:")


def test_dicom_ingest_verify_info_restore(tmp_path: Path) -> None:
    """A real DICOM WSI file (auto-detected; no Pixel Spacing, so no mpp) through the commands;
    a copy cut short is refused in one line."""
    from tests.data import DICOM_SLIDE

    out = tmp_path / "d.zarr"
    result = run("ingest", str(DICOM_SLIDE), str(out), "--quiet", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "12/12 chunks" in result.stdout
    info = json.loads(run("info", str(out), "--json").stdout)
    assert info["dimensions"] == [3236, 2638] and info["mpp"] is None
    assert "dicom" in run("info", str(out)).stdout
    result = run("verify", str(out), "--against", str(DICOM_SLIDE), "--quiet")
    assert result.returncode == 0 and result.stdout.startswith("OK:") and "sha256" in result.stdout
    tif = tmp_path / "r.tif"
    result = run("restore", str(out), str(tif), "--model", "bicubic", "--region", "1000,1000,256,256", "--quiet")
    assert result.returncode == 0, result.stderr
    import tifffile

    assert tifffile.TiffFile(tif).pages[0].shape == (256, 256, 3)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(DICOM_SLIDE.read_bytes()[:800_000])
    assert_one_line_error(run("ingest", str(cut), str(tmp_path / "c.zarr"), "--reader", "dicom"), 2, "truncated")


def test_lossless_flag(tmp_path: Path, slide_path: Path) -> None:
    out = tmp_path / "l.zarr"
    assert run("ingest", str(slide_path), str(out), "--lossless", "--quiet").returncode == 0
    assert json.loads(run("info", str(out), "--json").stdout)["codec"]["configuration"]["lossless"] is True


def test_missing_slide(tmp_path: Path) -> None:
    assert_one_line_error(run("ingest", str(tmp_path / "no.svs"), str(tmp_path / "a.zarr")), 2, "no such file")


def test_not_a_slide(tmp_path: Path) -> None:
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    assert_one_line_error(run("ingest", str(text), str(tmp_path / "a.zarr")), 2, "not a slide")
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "a.zarr.partial").exists()


def test_existing_destination(tmp_path: Path, slide_path: Path) -> None:
    (tmp_path / "a.zarr").mkdir()
    (tmp_path / "a.zarr" / "notes.txt").write_text("mine")
    assert_one_line_error(run("ingest", str(slide_path), str(tmp_path / "a.zarr")), 4, "--overwrite")


@pytest.mark.parametrize(
    "extra, text",
    [
        (["--codec", "gif"], "unknown codec"),
        (["--quality", "200", "--codec", "avif"], "level"),
        (["--chunk", "100"], "chunk must be a multiple of 16"),
        (["--lossless", "--quality", "3"], "exclude"),
        (["--workers", "x"], "invalid int"),
    ],
)
def test_invalid_options(tmp_path: Path, slide_path: Path, extra: list[str], text: str) -> None:
    result = run("ingest", str(slide_path), str(tmp_path / "a.zarr"), *extra)
    assert result.returncode == 2
    assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_destination_inside_a_file(tmp_path: Path, slide_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    assert_one_line_error(run("ingest", str(slide_path), str(tmp_path / "file.txt" / "a.zarr")), 2, "does not exist")


def test_info_on_damaged_and_incomplete_archives(tmp_path: Path, archive_copy: Path) -> None:
    (archive_copy / "manifest.json").unlink()
    assert_one_line_error(run("info", str(archive_copy)), 3, "incomplete")
    assert_one_line_error(run("info", str(tmp_path / "none.zarr")), 3, "no archive")
    (tmp_path / "plain").mkdir()
    assert_one_line_error(run("verify", str(tmp_path / "plain")), 3, "not a Zarr archive")


def test_verify_exit_code_names_the_problem(archive_copy: Path) -> None:
    (archive_copy / "1" / "c" / "0" / "0" / "0").unlink()
    result = run("verify", str(archive_copy), "--quiet")
    assert result.returncode == 3
    assert "PROBLEM: shard 1/c/0/0/0 is missing" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("FAILED")


def test_demo_runs_on_the_embedded_sample(tmp_path: Path) -> None:
    result = run("demo", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "OK:" in result.stdout and "source matches" in result.stdout
    assert (tmp_path / "demo" / "sample.zarr" / "manifest.json").is_file()
