"""A disk that fills up at any write of a restore: the run fails, nothing lands at ``OUT``, and
``--resume`` once space is back gives exactly the uninterrupted file.

The full disk is injected in-process at each file write in turn, the way a real one fails: the
write stores part of its data (a short write) and then raises ``ENOSPC``. A journal line torn
this way used to swallow the next row's entry on resume (the row went missing from the final
assembly).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from wsistore.archive.partial import PartialOutput
from wsistore.errors import WsistoreError
from wsistore.restoration.pipeline import RESTORE_OUTPUT, RestoreOptions, restore

#: Three rows of 256-pixel tiles and two levels: 22 file writes, a third of a second a restore.
OPTIONS = RestoreOptions(model="bicubic", device="cpu", tile=256, workers=1, region=(0, 0, 512, 768), progress=False)


class _Disk:
    """Counts file writes; the ``fail_at``-th stores half of its data and raises ENOSPC."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_at: int | None = None
        self.real_open = io.open

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = self.real_open(file, mode, *args, **kwargs)
        return _Full(f, self) if any(c in mode for c in "wax+") else f

    def spend(self, f: Any, data: Any) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            if self.calls == self.fail_at:
                f.write(data[: len(data) // 2])
                f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _Full:
    def __init__(self, f: Any, disk: _Disk) -> None:
        self._f = f
        self._disk = disk

    def write(self, data: Any) -> int:
        self._disk.spend(self._f, data)
        return int(self._f.write(data))

    def __enter__(self) -> _Full:
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._f.__exit__(*exc)

    def __iter__(self) -> Any:
        return iter(self._f)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> _Disk:
    d = _Disk()
    monkeypatch.setattr(builtins, "open", d.open)
    monkeypatch.setattr(io, "open", d.open)
    return d


def test_a_disk_full_at_any_write_resumes_to_the_uninterrupted_tiff(
    disk: _Disk, sample_archive: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference.tif"
    restore(sample_archive, reference, OPTIONS)
    writes = disk.calls
    assert writes >= 10
    expected = reference.read_bytes()
    for n in range(1, writes + 1):
        out = tmp_path / f"out-{n}.tif"
        disk.calls, disk.fail_at = 0, n
        with pytest.raises(WsistoreError, match="No space left on device"):
            restore(sample_archive, out, OPTIONS)
        disk.fail_at = None
        assert not out.exists(), f"write {n}: an incomplete output landed"
        try:
            restore(sample_archive, out, replace(OPTIONS, resume=True))
        except WsistoreError as exc:  # only before the settings were recorded is there nothing to resume
            assert "nothing to resume" in str(exc), f"write {n}: {exc}"
            restore(sample_archive, out, replace(OPTIONS, overwrite=True))
        assert disk.calls >= n
        assert out.read_bytes() == expected, f"full disk at write {n} of {writes}: the resumed TIFF differs"
        assert not Path(str(out) + ".partial").exists()


def test_a_torn_journal_line_is_cut_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    first = PartialOutput.prepare(out, RESTORE_OUTPUT, overwrite=False, resume=False)
    first.start({"a": 1})
    first.journal("row", 0, [1, 2])
    (first.work.path / first.journal_key).open("a").write('{"kind": "row", "index": 1, "da')
    first.release()
    again = PartialOutput.prepare(out, RESTORE_OUTPUT, overwrite=False, resume=True)
    again.start({"a": 1})
    again.journal("row", 1, [3])
    assert again.done("row") == {0: [1, 2], 1: [3]}
    again.release()
