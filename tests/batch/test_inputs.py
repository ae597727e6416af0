"""What a batch's inputs expand to, where outputs land, and the summary file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.batch.conftest import SLIDES
from wsistore.batch import FAILED, OK, SlideResult, Summary, Task, expand_inputs, plan, run_batch
from wsistore.errors import InputError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of slide links, a note and an archive-looking folder."""
    for slide in SLIDES[:3]:
        (tmp_path / slide.name).symlink_to(slide)
    (tmp_path / "notes.md").write_text("not a slide\n")
    (tmp_path / "old.zarr").mkdir()
    (tmp_path / "old.zarr" / "zarr.json").write_text("{}")
    return tmp_path


def test_files_folders_globs_and_lists(folder: Path) -> None:
    links = sorted(folder / s.name for s in SLIDES[:3])
    assert expand_inputs([str(folder)]) == links
    assert expand_inputs([str(folder / "*-2_*.svs")]) == [links[1]]
    listing = folder / "batch.txt"
    listing.write_text(f"# the batch\n{links[2].name}\n\n{SLIDES[3]}\n{links[2]}\n")
    assert expand_inputs([str(listing)]) == [links[2], SLIDES[3]]
    assert expand_inputs([f"@{listing}", str(links[0])]) == [links[2], SLIDES[3], links[0]]
    assert expand_inputs([str(folder)], archives=True) == [folder / "old.zarr"]
    assert expand_inputs([str(folder / "missing.svs")]) == [folder / "missing.svs"]  # fails as its own row


@pytest.mark.parametrize(
    ("items", "text"),
    [(["{tmp}/*.svs"], "no inputs match"), (["{tmp}"], "holds no slides"), (["@{tmp}/none.txt"], "cannot read")],
)
def test_inputs_that_name_nothing(tmp_path: Path, items: list[str], text: str) -> None:
    with pytest.raises(InputError, match=text):
        expand_inputs([i.format(tmp=tmp_path) for i in items])


def test_outputs_are_named_by_stem_and_never_shared(tmp_path: Path) -> None:
    tasks = plan([Path("a/b.svs"), Path("c.tif"), Path("x/s.zarr")], tmp_path, ".zarr")
    assert [t.output for t in tasks] == [str(tmp_path / f"{n}.zarr") for n in "bcs"]
    with pytest.raises(InputError, match="would both write"):
        plan([Path("a/b.svs"), Path("c/b.svs")], tmp_path, ".zarr")


def _echo(task: Task) -> SlideResult:
    return SlideResult(task.source, task.output, FAILED if "bad" in task.source else OK, bytes_in=4, bytes_out=2)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_the_summary_holds_every_row_as_it_finishes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"summary{suffix}"
    seen: list[int] = []

    def count(row: SlideResult) -> None:  # the file already holds the row handed on
        text = path.read_text()
        seen.append(len(json.loads(text)) if suffix == ".json" else len(list(csv.DictReader(text.splitlines()))))

    tasks = [Task(name, "") for name in ("a", "bad", "c")]
    rows = run_batch(tasks, _echo, summary=path, on_result=count, progress=False)
    assert [r.status for r in rows] == [OK, FAILED, OK] and seen == [1, 2, 3]
    if suffix == ".json":
        assert json.loads(path.read_text())[1]["status"] == FAILED
    else:
        written = list(csv.DictReader(path.read_text().splitlines()))
        assert list(written[0]) == ["slide", "output", "status", "error", "bytes_in", "bytes_out", "ratio", "seconds"]
        assert written[2]["bytes_in"] == "4" and written[2]["bytes_out"] == "2"
    with pytest.raises(InputError, match=".csv or .json"):
        Summary(tmp_path / "summary.txt")
