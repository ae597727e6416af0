"""``wsistore serve`` as a command: a real subprocess on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.serve.conftest import fetch
from wsistore.cli import COMMANDS, main


def test_registered() -> None:
    assert "serve" in COMMANDS


def test_missing_archive_is_a_one_line_error(tmp_path: Path, capsys: object) -> None:
    assert main(["serve", str(tmp_path / "none.zarr")]) == 2
    assert main(["serve", str(tmp_path)]) in (2, 3)  # an empty folder holds no archive


def test_serve_subprocess(sample_archive: Path, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "a.zarr").symlink_to(sample_archive, target_is_directory=True)
    (folder / "b.zarr").symlink_to(sample_archive, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [
        sys.executable,
        "-m",
        "wsistore",
        "serve",
        str(folder),
        "--port",
        "0",
        "--model",
        "bicubic",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "the server exited early"
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            url = found[1] if found else None
        assert url is not None
        index = fetch(url + "/")
        assert index.status == 200 and b"/slides/a.dzi" in index.body and b"/slides/b.dzi" in index.body
        assert fetch(url + "/slides/b.dzi").status == 200
        line = proc.stderr.readline()
        assert " GET / 200 " in line
    finally:
        proc.terminate()
        proc.wait(30)
