"""``--resume`` where a run was killed before it left anything to continue starts afresh and
says so, giving what a run without ``--resume`` gives; everything else ``--resume`` did is kept:
a complete output is not replaced without ``--overwrite``, a work folder that is not ours is
refused, and a partial output's settings must match (tests/restoration/test_errors.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability.faults import compare_archives
from tests.cli.test_cli import assert_one_line_error, run
from tests.cli.test_output_safety import BICUBIC, snapshot

INGEST = ("--chunk", "128", "--shard", "256", "--workers", "2", "--quiet")
RESTORE = (*BICUBIC, "--region", "0,0,1024,512", "--tile", "256")
NOTICE = "wsistore: nothing to resume at {}: starting afresh"


def _notice(stderr: str, out: Path) -> bool:
    return stderr.splitlines() == [NOTICE.format(out)]


@pytest.fixture(scope="module")
def reference_archive(tmp_path_factory: pytest.TempPathFactory, slide_path: Path) -> Path:
    out = tmp_path_factory.mktemp("reference") / "a.zarr"
    result = run("ingest", str(slide_path), str(out), *INGEST)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("left", ["nothing", "an empty work folder", "a torn settings file"])
def test_ingest_resume_with_nothing_to_resume_starts_afresh(
    tmp_path: Path, slide_path: Path, reference_archive: Path, left: str
) -> None:
    out = tmp_path / "a.zarr"
    if left != "nothing":  # killed after making its work folder, or inside its first write
        (tmp_path / "a.zarr.partial").mkdir()
    if left == "a torn settings file":
        (tmp_path / "a.zarr.partial" / "ingest-settings.json.tmp").write_text('{"cod')
    result = run("ingest", str(slide_path), str(out), *INGEST, "--resume")
    assert result.returncode == 0 and _notice(result.stderr, out), result.stderr
    assert "resumed" not in result.stdout
    assert compare_archives(out, reference_archive) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_restore_resume_with_nothing_to_resume_starts_afresh(tmp_path: Path, sample_archive: Path) -> None:
    fresh, resumed = tmp_path / "fresh.tif", tmp_path / "resumed.tif"
    assert run("restore", str(sample_archive), str(fresh), *RESTORE).returncode == 0
    result = run("restore", str(sample_archive), str(resumed), *RESTORE, "--resume")
    assert result.returncode == 0 and _notice(result.stderr, resumed), result.stderr
    assert resumed.read_bytes() == fresh.read_bytes()
    # a killed --overwrite run that left nothing: --overwrite --resume replaces the output afresh
    result = run("restore", str(sample_archive), str(resumed), *RESTORE, "--tile", "512", "--overwrite", "--resume")
    assert result.returncode == 0 and _notice(result.stderr, resumed), result.stderr
    assert resumed.read_bytes() != fresh.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.tif", "resumed.tif"]


def test_resume_onto_a_complete_output_is_refused_as_before(tmp_path: Path, slide_path: Path) -> None:
    out = tmp_path / "a.zarr"
    assert run("ingest", str(slide_path), str(out), *INGEST).returncode == 0
    before = snapshot(tmp_path)
    result = run("ingest", str(slide_path), str(out), *INGEST, "--resume")
    assert_one_line_error(result, 4, "already exists; use --overwrite to replace it")
    assert snapshot(tmp_path) == before


def test_resume_onto_a_work_folder_not_ours_is_refused(tmp_path: Path, slide_path: Path) -> None:
    partial = tmp_path / "x.zarr.partial"
    partial.mkdir()
    (partial / "mine.txt").write_text("keep")
    result = run("ingest", str(slide_path), str(tmp_path / "x.zarr"), *INGEST, "--resume")
    assert_one_line_error(result, 4, "work folder")
    (partial / "mine.txt").unlink()
    (partial / "restore-settings.json").write_text("{}")  # an interrupted restore is not an ingest's
    result = run("ingest", str(slide_path), str(tmp_path / "x.zarr"), *INGEST, "--resume")
    assert_one_line_error(result, 4, "interrupted restore")
    assert sorted(p.name for p in partial.iterdir()) == ["restore-settings.json"]


def test_a_batch_resumes_a_slide_killed_before_its_settings(
    tmp_path: Path, slide_path: Path, reference_archive: Path
) -> None:
    out_dir = tmp_path / "out"
    out = out_dir / f"{slide_path.stem}.zarr"
    (out_dir / f"{out.name}.partial").mkdir(parents=True)  # killed right after making its work folder
    result = run("ingest", str(slide_path), "--output-dir", str(out_dir), *INGEST, "--resume")
    assert result.returncode == 0 and "ingest: 1 ok, 0 skipped, 0 failed of 1" in result.stdout, result.stdout
    assert compare_archives(out, reference_archive) == []
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name]
