"""``wsistore ingest|verify|restore|bench`` on many inputs: a line per slide, a summary, an exit
code that says some failed, ``--resume``; and single-input use unchanged."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from benchmarks.reliability.faults import compare_archives
from tests.batch.conftest import OPTIONS, SLIDES, ingest_tasks
from tests.cli.test_cli import assert_one_line_error, run
from wsistore.archive.writer import _Ingest
from wsistore.batch import IngestJob, run_batch
from wsistore.cli._options import BATCH_FAILED


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {Path(r["slide"]).name: r for r in csv.DictReader(f)}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder: two real slides (links) and a text file named like a slide."""
    folder = tmp_path / "in"
    folder.mkdir()
    for slide in SLIDES[1:3]:
        (folder / slide.name).symlink_to(slide)
    (folder / "broken.svs").write_text("not a slide\n")
    return folder


def test_a_bad_slide_is_reported_and_skipped_and_resume_skips_the_done(
    tmp_path: Path, inputs: Path, serial_archives: Path
) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.csv"
    result = run("ingest", str(inputs), "--output-dir", str(out), "--summary", str(summary), "--workers", "1")
    assert result.returncode == BATCH_FAILED, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 2 and "FAILED broken.svs: " in result.stdout
    assert lines[-1] == f"ingest: 2 ok, 0 skipped, 1 failed of 3; summary in {summary}"
    assert "slide/s" in result.stderr  # the one overall bar
    rows = _rows(summary)
    assert rows["broken.svs"]["status"] == "failed" and "not a slide" in rows["broken.svs"]["error"]
    for slide in SLIDES[1:3]:
        row = rows[slide.name]
        assert row["status"] == "ok" and int(row["bytes_in"]) == slide.stat().st_size
        assert float(row["ratio"]) == pytest.approx(int(row["bytes_in"]) / int(row["bytes_out"]))
        name = slide.stem + ".zarr"
        assert compare_archives(out / name, serial_archives / name) == []

    (inputs / "broken.svs").unlink()
    shutil.rmtree(out / (SLIDES[2].stem + ".zarr"))
    result = run(
        "ingest", f"{inputs}/*.svs", "--output-dir", str(out), "--resume", "--summary", str(summary), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert {n: r["status"] for n, r in _rows(summary).items()} == {SLIDES[1].name: "skipped", SLIDES[2].name: "ok"}


def test_an_interrupted_batch_keeps_its_rows_and_resume_finishes_it(
    tmp_path: Path, serial_archives: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _Ingest.store_shard

    def interrupted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.slide_path == SLIDES[2]:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_Ingest, "store_shard", interrupted)
    summary = tmp_path / "summary.json"
    with pytest.raises(KeyboardInterrupt):
        run_batch(ingest_tasks(tmp_path / "out"), IngestJob(OPTIONS), summary=summary, progress=False)
    assert [r["status"] for r in json.loads(summary.read_text())] == ["ok", "ok"]
    assert (tmp_path / "out" / (SLIDES[2].stem + ".zarr.partial")).is_dir()
    monkeypatch.setattr(_Ingest, "store_shard", original)

    rows = run_batch(ingest_tasks(tmp_path / "out"), IngestJob(OPTIONS, resume=True), summary=summary, progress=False)
    assert [r.status for r in rows] == ["skipped", "skipped", "ok", "ok"]
    for slide in SLIDES:
        name = slide.stem + ".zarr"
        assert compare_archives(tmp_path / "out" / name, serial_archives / name) == []


def test_verify_and_restore_batches(tmp_path: Path, serial_archives: Path, tiny_edsr: Path) -> None:
    archives = tmp_path / "archives"
    shutil.copytree(serial_archives, archives)
    damaged = archives / (SLIDES[0].stem + ".zarr")
    shard = next(p for p in (damaged / "0").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.write_bytes(b"\0" * shard.stat().st_size)
    result = run("verify", str(archives), "--quiet", "--summary", str(tmp_path / "v.csv"))
    assert result.returncode == BATCH_FAILED and f"FAILED {damaged.name}: " in result.stdout
    assert [r["status"] for r in _rows(tmp_path / "v.csv").values()].count("ok") == 3

    listing = tmp_path / "restore.txt"
    listing.write_text("\n".join(f"archives/{s.stem}.zarr" for s in SLIDES[1:3]) + "\n")
    out = tmp_path / "restored"
    args = ["restore", f"@{listing}", "--output-dir", str(out), "--model", str(tiny_edsr), "--device", "cpu"]
    result = run(*args, "--quiet", "--cluster", "local:2", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [s.stem + ".tif" for s in SLIDES[1:3]]
    assert run(*args, "--quiet", "--resume").stdout.splitlines()[-1] == "restore: 0 ok, 2 skipped, 0 failed of 2"


def test_bench_batch_writes_a_report_per_input(tmp_path: Path) -> None:
    args = [
        "bench",
        str(SLIDES[2]),
        "--quick",
        "--crop",
        "256",
        "--codecs",
        "jpeg:level=80",
        "--hr-codecs",
        "jpeg:level=80",
    ]
    result = run(*args, "--output-dir", str(tmp_path), "--quiet", "--summary", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / "s.json").read_text())
    assert row["status"] == "ok" and row["bytes_in"] > row["bytes_out"] > 0
    assert (tmp_path / SLIDES[2].stem / "report.md").is_file()
    assert_one_line_error(run(*args), 2, "--out DIR")


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["ingest", "a.svs", "b.svs", "c.zarr"], "--output-dir"),
        (["ingest", "{slide}", "{tmp}/a.zarr", "--summary", "s.csv"], "apply to batches"),
        (["ingest", "{slide}", "--output-dir", "{tmp}/o", "--cluster", "remote:2"], "local:N"),
        (["verify", "{tmp}/x.zarr", "{tmp}/y.zarr", "--against", "{slide}"], "--against"),
        (["ingest", "{slide}", "--output-dir", "{tmp}/o", "--summary", "{tmp}/s.txt"], ".csv or .json"),
    ],
)
def test_single_inputs_and_batch_options_are_checked(tmp_path: Path, args: list[str], text: str) -> None:
    argv = [a.format(tmp=tmp_path, slide=SLIDES[2]) for a in args]
    assert_one_line_error(run(*argv), 2, text)
