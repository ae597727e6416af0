"""Nothing the user did not ask to replace is lost: the four commands that once destroyed data
(issue 21), and every other command that writes. The whole class, with kills, is the
``paths`` reliability campaign (tests/reliability/test_paths.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import tifffile

from tests.cli.test_cli import assert_one_line_error, run
from tests.data import TILES

BICUBIC = ("--model", "bicubic", "--quiet")


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (symbolic links by their target's name)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def slide(tmp_path: Path, slide_path: Path) -> Path:
    return Path(shutil.copy(slide_path, tmp_path / "slide.tif"))


@pytest.fixture
def archive(tmp_path: Path, sample_archive: Path) -> Path:
    return Path(shutil.copytree(sample_archive, tmp_path / "a.zarr"))


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    folder = tmp_path / "some" / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("the only copy")
    (folder / "sub" / "results.csv").write_text("1,2,3\n")
    return folder


# -- the four commands of the issue --------------------------------------------------------------
@pytest.mark.parametrize("route", ["slide.tif", "./slide.tif"])
def test_ingest_onto_its_own_source_is_refused(tmp_path: Path, slide: Path, route: str) -> None:
    before = snapshot(tmp_path)
    assert_one_line_error(run("ingest", "slide.tif", route, "--overwrite", cwd=tmp_path), 2, "is the input")
    assert snapshot(tmp_path) == before


def test_restore_onto_its_own_archive_is_refused(tmp_path: Path, archive: Path) -> None:
    before = snapshot(tmp_path)
    result = run("restore", str(archive), str(archive), "--overwrite", *BICUBIC)
    assert_one_line_error(result, 2, "is the input")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["restore-tiff", "restore-zarr", "ingest"])
def test_overwrite_onto_a_foreign_folder_is_refused(
    tmp_path: Path, archive: Path, slide: Path, foreign: Path, command: str
) -> None:
    argv = {
        "restore-tiff": ["restore", str(archive), str(foreign), *BICUBIC],
        "restore-zarr": ["restore", str(archive), str(foreign), "--format", "zarr", *BICUBIC],
        "ingest": ["ingest", str(slide), str(foreign), "--quiet"],
    }[command]
    before = snapshot(tmp_path)
    assert_one_line_error(run(*argv, "--overwrite"), 4, "is a folder holding 2 entries, not a wsistore")
    assert snapshot(tmp_path) == before


def test_non_ascii_names_restore_to_tiff(tmp_path: Path, slide_path: Path) -> None:
    source = Path(shutil.copy(slide_path, tmp_path / "slïde ünï.tif"))
    assert run("ingest", source.name, "ü.zarr", "--quiet", cwd=tmp_path).returncode == 0
    result = run("restore", "ü.zarr", "ü.tif", *BICUBIC, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with tifffile.TiffFile(tmp_path / "ü.tif") as tif:
        description = tif.pages.first.description
    assert "source = sl\\xefde \\xfcn\\xef.tif" in description  # escaped: TIFF text is 7-bit ASCII


# -- what --overwrite may replace ------------------------------------------------------------------
def test_overwrite_replaces_our_own_outputs(tmp_path: Path, archive: Path, slide: Path) -> None:
    assert run("restore", str(archive), str(tmp_path / "r.tif"), *BICUBIC).returncode == 0
    for fmt in ("zarr", "tiff", "zarr"):  # a restore output of either format is ours
        result = run("restore", str(archive), str(tmp_path / "r.tif"), "--format", fmt, "--overwrite", *BICUBIC)
        assert result.returncode == 0, result.stderr
    assert not (tmp_path / "r.tif.partial").exists()
    result = run("ingest", str(slide), str(archive), "--overwrite", "--quality", "60", "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "r.tif", "slide.tif"]


def test_overwrite_refuses_other_kinds(tmp_path: Path, archive: Path, slide: Path) -> None:
    assert run("restore", str(archive), str(tmp_path / "r.tif"), *BICUBIC).returncode == 0
    other = tmp_path / "other.svs"
    shutil.copy(slide, other)
    os.symlink(archive, tmp_path / "link.zarr")
    before = snapshot(tmp_path)
    cases = [
        (["ingest", str(slide), str(tmp_path / "r.tif")], "a wsistore archive"),  # a restored TIFF is not an archive
        (["ingest", str(slide), str(other)], "is a slide or image file"),  # another slide
        (["ingest", str(slide), str(tmp_path / "link.zarr")], "is a symbolic link"),
        (["restore", str(archive), str(other), "--model", "bicubic"], "a wsistore restore output"),
    ]
    for argv, text in cases:
        assert_one_line_error(run(*argv, "--overwrite", "--quiet"), 4, text)
    assert snapshot(tmp_path) == before


def test_a_foreign_partial_folder_is_kept(tmp_path: Path, slide: Path) -> None:
    partial = tmp_path / "x.zarr.partial"
    partial.mkdir()
    (partial / "mine.txt").write_text("keep")
    assert_one_line_error(run("ingest", str(slide), str(tmp_path / "x.zarr"), "--quiet"), 4, "work folder")
    (partial / "mine.txt").unlink()
    (partial / "restore-settings.json").write_text("{}")  # an interrupted restore is not an ingest's to clear
    assert_one_line_error(run("ingest", str(slide), str(tmp_path / "x.zarr"), "--quiet"), 4, "interrupted restore")
    assert (partial / "restore-settings.json").exists()


# -- the other commands that write ---------------------------------------------------------------
def test_info_loss_map_replaces_only_its_own_png(tmp_path: Path, archive: Path, slide: Path) -> None:
    assert_one_line_error(run("info", str(archive), "--loss-map", str(archive / "x.png")), 2, "inside the input")
    assert_one_line_error(run("info", str(archive), "--loss-map", str(slide)), 4, "--loss-map replaces only")
    png = tmp_path / "loss ü.png"
    for _ in range(2):  # the second run replaces the first one's picture
        assert run("info", str(archive), "--loss-map", str(png)).returncode == 0
    assert png.read_bytes().startswith(b"\x89PNG") and sorted(p.name for p in tmp_path.iterdir())[-1] == "slide.tif"


def test_train_prepare_checks_its_output(tmp_path: Path, foreign: Path) -> None:
    tile = Path(shutil.copy(TILES / "kidney_monuseg_B0-5710.png", tmp_path / "tile.png"))
    args = ["--patch", "24", "--patches-per-file", "2", "--quiet"]
    assert_one_line_error(run("train", "prepare", str(tile), str(tile), *args, "--overwrite"), 2, "is the input")
    before = snapshot(tmp_path)
    assert_one_line_error(
        run("train", "prepare", str(tile), str(foreign), *args, "--overwrite"), 4, "not training data"
    )
    assert snapshot(tmp_path) == before
    out = tmp_path / "data"
    assert run("train", "prepare", str(tile), str(out), *args).returncode == 0
    assert run("train", "prepare", str(tile), str(out), *args, "--overwrite").returncode == 0  # ours: replaced


def test_bench_checks_its_output(tmp_path: Path, slide: Path, foreign: Path) -> None:
    quick = ["--quick", "--codecs", "avif:level=75,speed=8", "--hr-codecs", "avif:level=20,speed=8", "--quiet"]
    assert_one_line_error(run("bench", str(slide), "--out", str(slide), *quick), 2, "is the input")
    assert_one_line_error(run("bench", str(slide), "--out", str(tmp_path), *quick), 2, "holds the input")
    before = snapshot(tmp_path)
    assert_one_line_error(run("bench", str(slide), "--out", str(foreign), "--overwrite", *quick), 4, "bench report")
    assert snapshot(tmp_path) == before


def test_batch_outputs_and_summary(tmp_path: Path, archive: Path) -> None:
    archives = [str(archive), str(shutil.copytree(archive, tmp_path / "b.zarr"))]
    notes = tmp_path / "notes.csv"
    notes.write_text("my own table\n")
    result = run("verify", *archives, "--summary", str(notes), "--quiet")
    assert_one_line_error(result, 4, "--summary replaces only")
    assert notes.read_text() == "my own table\n"
    inside = archive / "out"
    result = run("restore", str(archive), "--output-dir", str(inside), *BICUBIC)
    assert_one_line_error(result, 2, "is inside the input")
    assert not inside.exists()
    assert_one_line_error(run("verify", *archives, "--summary", str(archive / "zarr.json")), 2, "inside the input")
    summary = tmp_path / "s.csv"
    for _ in range(2):  # a summary it wrote is its own to rewrite
        assert run("verify", *archives, "--summary", str(summary), "--quiet").returncode == 0
