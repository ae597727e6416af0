"""wsistore.outputs: an output is never an input (by every route to the same file), what
``--overwrite`` may replace, the atomic swap, and names of any length."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wsistore.errors import InputError, OutputExistsError
from wsistore.outputs import (
    OutputKind,
    ascii_text,
    check_not_input,
    check_replaceable,
    occupied,
    relation,
    remove_tree,
    swap_in,
    work_path,
)

MARKED = OutputKind("test", "a marked folder", lambda p: (p / "MARK").is_file())


@pytest.fixture
def slide(tmp_path: Path) -> Path:
    path = tmp_path / "slide.svs"
    path.write_bytes(b"slide bytes")
    return path


def test_every_route_to_the_input_is_caught(tmp_path: Path, slide: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    os.symlink(slide, tmp_path / "link.svs")
    os.link(slide, tmp_path / "hard.svs")
    for route in ["slide.svs", "./slide.svs", "sub/../slide.svs", str(slide), "link.svs", "hard.svs"]:
        with pytest.raises(InputError, match=f"the output {route} is the input"):
            check_not_input(route, [slide])
    assert relation("slide.svs", "slide.svs") == "is"


def test_inside_and_holding_are_caught(tmp_path: Path, slide: Path) -> None:
    archive = tmp_path / "a.zarr"
    archive.mkdir()
    assert relation(archive / "x.tif", archive) == "is inside"
    assert relation(f"{archive}/", archive) == "is"
    assert relation(tmp_path, slide) == "holds"
    with pytest.raises(InputError, match="holds the input"):
        check_not_input(tmp_path, [slide])
    os.symlink(archive, tmp_path / "alias.zarr")
    assert relation(tmp_path / "alias.zarr" / "x.tif", archive) == "is inside"
    check_not_input(tmp_path / "other.zarr", [slide, archive])  # apart: no error
    assert relation(tmp_path / "a.zarr2", archive) == ""  # a shared prefix is not "inside"


def test_urls_compare_normalised() -> None:
    assert relation("s3://bucket/a.zarr/", "s3://bucket/a.zarr") == "is"
    assert relation("s3://bucket/x/../a.zarr/b", "s3://bucket/a.zarr") == "is inside"
    assert relation("s3://bucket/a.zarr", "/bucket/a.zarr") == ""


def test_overwrite_replaces_only_its_own_kind(tmp_path: Path, slide: Path) -> None:
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "MARK").write_text("")
    check_replaceable(ours, MARKED)
    foreign = tmp_path / "foreign"
    (foreign / "deep").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="foreign is a folder holding 2 entries, not a marked folder"):
        check_replaceable(foreign, MARKED, "foreign")
    with pytest.raises(OutputExistsError, match="a slide or image file"):
        check_replaceable(slide, MARKED)
    os.symlink(ours, tmp_path / "link")
    with pytest.raises(OutputExistsError, match="a symbolic link"):
        check_replaceable(tmp_path / "link", MARKED)  # even to one of ours: the link is refused
    assert (foreign / "notes.txt").read_text() == "mine" and slide.read_bytes() == b"slide bytes"


def test_an_empty_folder_is_not_occupied(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    assert not occupied(tmp_path / "empty") and not occupied(tmp_path / "none")
    assert occupied(tmp_path / "dangling")


def test_swap_in_exchanges_atomically(tmp_path: Path) -> None:
    new, target = tmp_path / "new", tmp_path / "target.tif"
    new.mkdir()
    (new / "data").write_text("new")
    target.write_text("old")
    old = swap_in(new, target)
    assert (target / "data").read_text() == "new"
    assert old is not None and old.read_text() == "old"  # the old one is where the new one was
    fresh = tmp_path / "fresh"
    fresh.write_text("x")
    assert swap_in(fresh, tmp_path / "absent") is None and (tmp_path / "absent").read_text() == "x"


def test_remove_tree_keeps_the_marker_for_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "old"
    (folder / "sub").mkdir(parents=True)
    (folder / "a").write_text("a")
    (folder / "zarr.json").write_text("{}")
    removed: list[str] = []
    real = Path.unlink

    def spy(self: Path, missing_ok: bool = False) -> None:
        removed.append(self.name)
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", spy)
    remove_tree(folder, last="zarr.json")
    assert removed[-1] == "zarr.json" and not folder.exists()


def test_work_folder_fits_a_long_name(tmp_path: Path) -> None:
    long = tmp_path / ("ä" * 125 + ".zarr")  # 255 bytes: no room for ".partial"
    work = work_path(long)
    assert len(os.fsencode(work.name)) <= 255 and work.name.endswith(".partial")
    work.mkdir()  # the file system takes it
    other = work_path(tmp_path / ("ä" * 125 + ".tiff"[:5]))
    assert other != work and work_path(long) == work  # distinct names, and the same each time
    assert work_path(tmp_path / "a.zarr") == tmp_path / "a.zarr.partial"


def test_ascii_text_escapes() -> None:
    assert ascii_text("slïde – ü.svs") == "sl\\xefde \\u2013 \\xfc.svs"
    assert ascii_text("plain") == "plain"
