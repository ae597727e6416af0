"""Bad output paths campaign (issue 21): every command that writes refuses an output that is
one of its inputs (by any route: ``./x``, ``dir/../x``, a trailing slash, an absolute path, a
symbolic or hard link), lies inside one or holds one; ``--overwrite`` replaces only an output of
the command's own kind; the old output survives a refused, failed or killed run; odd names
(non-ASCII, spaces, quotes, a leading ``-``, 240 bytes of UTF-8) work everywhere.

Every case is built in a fresh temporary folder from real files (the sample SVS, real tiles,
and archives, restored TIFFs and OME-Zarrs made from them, each made once), runs
``python -m wsistore ...`` there in a subprocess, and is judged:

* ``refused``: the expected exit code; exactly one stderr line, ``wsistore: error: ...``,
  saying what the case expects; no traceback; every file, folder and link that was in the
  folder before byte-identical afterwards (the new output's own ``*.partial`` work folder
  aside), and nothing new: nothing at the output that was not there before;
* ``accepted``: exit 0, no traceback, the output complete and sound (``verify`` passes for an
  archive, a TIFF opens with tiffslide at the slide's size, ...), no work folder left, and
  everything but the output as it was;
* ``survived``: an ``--overwrite`` run killed with SIGKILL at a random moment (seeded, drawn
  between the moment the reference run's work folder appeared and its end) left either the
  old output byte for byte or the complete new one, and a rerun with ``--overwrite`` succeeds;
* ``wrong``: anything else; ``skipped``: cannot be staged here (no tmpfs for the disk cases).

    python -m benchmarks.reliability.paths [--quick] [--kills N] [--seed S] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import html
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.reliability import faults
from benchmarks.reliability.bad_inputs import looks_complete
from tests.data import SLIDE, TILES

PY = sys.executable
#: The child's environment: faults' (one thread per process, no debug tracebacks, the
#: checkout importable from any folder), with Python's default warning filters.
ENV = {k: v for k, v in faults.ENV.items() if k != "PYTHONWARNINGS"}
#: Exit codes: a bad input or option (InputError), an output in the way (OutputExistsError).
BAD_INPUT, IN_THE_WAY = 2, 4
PREFIX = "wsistore: error: "
TRACEBACK = "Traceback (most recent call last)"
IS_INPUT = ("is the input", "is inside the input", "holds the input")
NOT_OURS = ("--overwrite replaces only",)
ALREADY = ("already exists",)
#: Small archives of the sample slide (30 chunks, about 2 s).
INGEST = ["--chunk", "128", "--shard", "128", "--quiet"]
RESTORE = ["--model", "bicubic", "--device", "cpu", "--quiet"]
#: The fastest bench report: one 512-pixel region, one archive and one full-resolution setting.
BENCH = ["--quick", "--region", "0,0,512,512", "--codecs", "avif:level=75,speed=8", "--hr-codecs", "jpeg:level=50"]
BENCH += ["--device", "cpu", "--quiet"]
PREPARE = ["--patch", "24", "--patches-per-file", "4", "--quiet"]
#: The sample slide's level-0 size, and the default AVIF level and restore JPEG quality.
SIZE = (2220, 2967)
DEFAULT_LEVEL, DEFAULT_QUALITY = 75, 90
TRAIN_TILES = {"kidney.png": "kidney_monuseg_B0-5710.png", "lung.png": "lung_monuseg_18-5592.png"}
#: Odd file names (stems): what each one tries.
ODD_NAMES = {
    "non-ASCII and a space": "slïde ünï",
    "runs of spaces": "two  spaces   here",
    "single quotes": "it's 'quoted'",
    "double quotes": 'say "cheese"',
    "a leading dash (after --)": "-dash-first",
    "240 bytes of UTF-8": "ü" * 118,
}
LONG = ODD_NAMES["240 bytes of UTF-8"]

Step = Callable[[Path], None]
#: (case folder, the command's stdout) -> "" when the output is sound, else why not.
Check = Callable[[Path, str], str]


class SetupError(Exception):
    """A case or fixture could not be staged."""


@dataclass
class Case:
    """One command line and what it must do."""

    name: str
    group: str
    args: list[str]  # the wsistore arguments, run in the case folder; {DIR} is its absolute path
    codes: tuple[int, ...] = (BAD_INPUT,)  # the acceptable exit codes; (0,): accepted
    output: str = ""  # the output as given, relative to the case folder
    says: tuple[str, ...] = ()  # refused: the error line holds one of these
    names: tuple[str, ...] = ()  # refused: ... and every one of these, verbatim
    setup: Sequence[Step] = ()
    check: Check | None = None  # accepted: the output's soundness
    teardown: Sequence[Step] = ()
    quick: bool = False  # in the --quick subset
    serve: bool = False  # run as a server, fetch pages from it, stop it
    skip: str = ""

    @property
    def accepted(self) -> bool:
        return self.codes == (0,)


@dataclass
class Outcome:
    """What one case did."""

    name: str
    group: str
    command: str
    expected: str
    exit_code: int | None
    stderr: str  # the error line (the last stderr line)
    verdict: str  # refused, accepted, survived, wrong, skipped
    why: str = ""
    seconds: float = 0.0
    traceback: bool = False
    ended: str = ""  # a kill: whether the old or the new output was left


# -- running wsistore ---------------------------------------------------------------------------
def wsistore(args: Sequence[str], cwd: Path, timeout: float = 600) -> tuple[int | None, str, str, float]:
    """``python -m wsistore ARGS`` in ``cwd``: exit code (None: timed out), stdout, stderr, seconds."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [PY, "-m", "wsistore", *args],
            cwd=cwd,
            env=ENV,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout:.0f} s", time.perf_counter() - start
    out, err = (b.decode("utf-8", "backslashreplace") for b in (proc.stdout, proc.stderr))
    return proc.returncode, out, err, time.perf_counter() - start


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _last(text: str) -> str:
    lines = _lines(text)
    return lines[-1] if lines else ""


def _must(args: Sequence[str], cwd: Path) -> None:
    code, out, err, _ = wsistore(args, cwd)
    if code != 0:
        raise SetupError(f"wsistore {shlex.join(args)}: exit {code}: {_last(err) or _last(out)}")


def interrupted(args: Sequence[str], cwd: Path, marker: Path, after: float = 0.3) -> None:
    """Start ``wsistore ARGS`` in ``cwd`` and kill it (SIGKILL) ``after`` seconds after
    ``marker`` appears: what a crash leaves."""
    for wait in (after, after / 3, 0.0):
        proc = subprocess.Popen([PY, "-m", "wsistore", *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(wait)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            return
        for leftover in (marker.parent, cwd / args[2]):  # it finished first: try again, sooner
            faults._remove(leftover)
    raise SetupError(f"wsistore {shlex.join(args)} finished before it could be killed")


# -- what is in a folder ------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """Every file (its sha256), folder and link (its target) under ``root``, by relative path;
    a file or link ``root`` itself is the entry ``""``."""
    if root.is_symlink() or root.is_file():
        return {"": _entry(root)}
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = _entry(path)
    return found


def _entry(path: Path) -> str:
    if path.is_symlink():
        return f"link -> {os.readlink(path)}"
    if path.is_dir():
        return "folder"
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return "other"


def _is_work(name: str) -> bool:
    """A work folder's name: ``OUT.partial``, its shortened form, or a parked ``.partial.old``."""
    return name.endswith((".partial", ".partial.old"))


def _in_new_work(key: str, before: dict[str, str]) -> bool:
    """Whether ``key`` is (in) a work folder that was not there before."""
    parts = Path(key).parts
    for i in range(len(parts)):
        prefix = str(Path(*parts[: i + 1]))
        if _is_work(parts[i]) and prefix not in before:
            return True
    return False


def _work_part(key: str) -> bool:
    """Whether ``key`` is, or lies in, a work folder."""
    return any(_is_work(part) for part in Path(key).parts)


def _under(key: str, output: str) -> bool:
    if not output:
        return False
    top = os.path.normpath(output)
    return key == top or key.startswith(top + os.sep)


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [k for k, v in before.items() if after.get(k) != v]


def _show(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- the real files the cases copy --------------------------------------------------------------
class Fixtures:
    """Real inputs and outputs, each made once on first use (a failure too, so it is not
    retried for every case) under ``root``: the sample slide, archives of it, restores of those,
    a Zarr folder of another kind, work folders left by ``kill -9``, a bench report."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path | SetupError] = {}
        self._locks: dict[str, threading.Lock] = {}  # cases may run in parallel: one lock per fixture
        self._guard = threading.Lock()

    def get(self, name: str) -> Path:
        return self._once(name, getattr(self, f"_make_{name}"))

    def odd_archive(self, stem: str, archive: str) -> Path:
        """An archive ``archive`` ingested from the slide copied as ``stem.svs``."""

        def make() -> Path:
            folder = self.root / f"odd-{hashlib.sha256(f'{stem}/{archive}'.encode()).hexdigest()[:12]}"
            folder.mkdir()
            shutil.copy(SLIDE, folder / f"{stem}.svs")
            _must(["ingest", *INGEST, "--", f"{stem}.svs", archive], folder)
            return folder / archive

        return self._once(f"odd {stem} {archive}", make)

    def _once(self, key: str, make: Callable[[], Path]) -> Path:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._made:
                try:
                    self._made[key] = make()
                except (SetupError, OSError) as exc:
                    self._made[key] = SetupError(f"fixture {key}: {exc}")
            made = self._made[key]
        if isinstance(made, SetupError):
            raise made
        return made

    def _made_by(self, name: str, args: list[str]) -> Path:
        _must(args, self.root)
        return self.root / name

    def _make_slide(self) -> Path:
        shutil.copy(SLIDE, self.root / "slide.svs")
        return self.root / "slide.svs"

    def _make_archive(self) -> Path:
        self.get("slide")
        return self._made_by("archive.zarr", ["ingest", "slide.svs", "archive.zarr", *INGEST])

    def _make_old_archive(self) -> Path:
        """Made with other settings (``--quality 60``): what a killed ``--overwrite`` may leave."""
        self.get("slide")
        return self._made_by(
            "old-archive.zarr", ["ingest", "slide.svs", "old-archive.zarr", *INGEST, "--quality", "60"]
        )

    def _make_tiff(self) -> Path:
        self.get("archive")
        return self._made_by("restored.tif", ["restore", "archive.zarr", "restored.tif", *RESTORE])

    def _make_old_tiff(self) -> Path:
        self.get("archive")
        return self._made_by("old.tif", ["restore", "archive.zarr", "old.tif", *RESTORE, "--quality", "50"])

    def _make_ome(self) -> Path:
        self.get("archive")
        return self._made_by(
            "restored.zarr", ["restore", "archive.zarr", "restored.zarr", *RESTORE, "--format", "zarr"]
        )

    def _make_foreign_zarr(self) -> Path:
        """A Zarr v3 group with one array of real pixels, that no wsistore command wrote."""
        import numpy as np
        import zarr
        from PIL import Image

        path = self.root / "foreign.zarr"
        group = zarr.open_group(path, mode="w", zarr_format=3)
        group.attrs["written_by"] = "another tool"
        pixels = np.asarray(Image.open(TILES / TRAIN_TILES["kidney.png"]).convert("RGB"))[:256, :256]
        group.create_array("image", shape=pixels.shape, dtype=pixels.dtype, chunks=(128, 128, 3))[:] = pixels
        return path

    def _make_plain_tiff(self) -> Path:
        """A TIFF of a real tile that restore did not write."""
        import numpy as np
        import tifffile
        from PIL import Image

        path = self.root / "plain.tif"
        pixels = np.asarray(Image.open(TILES / TRAIN_TILES["lung.png"]).convert("RGB"))
        tifffile.imwrite(path, pixels, tile=(256, 256), photometric="rgb", compression="zlib")
        return path

    def _make_interrupted_ingest(self) -> Path:
        """``OUT.partial`` of an ingest killed while writing."""
        self.get("slide")
        args = ["ingest", "slide.svs", "cut.zarr", *INGEST, "--workers", "1"]
        interrupted(args, self.root, self.root / "cut.zarr.partial" / "ingest-settings.json")
        return self.root / "cut.zarr.partial"

    def _make_interrupted_restore(self) -> Path:
        self.get("archive")
        args = ["restore", "archive.zarr", "cut.tif", *RESTORE, "--workers", "1", "--tile", "256"]
        interrupted(args, self.root, self.root / "cut.tif.partial" / "restore-settings.json", after=0.1)
        return self.root / "cut.tif.partial"

    def _make_report(self) -> Path:
        self.get("slide")
        return self._made_by("report", ["bench", "slide.svs", "--out", "report", *BENCH])


# -- setup steps --------------------------------------------------------------------------------
def put(fx: Fixtures, fixture: str, name: str) -> Step:
    """Copy fixture ``fixture`` (a file, or a folder with its links) to ``name``."""

    def step(folder: Path) -> None:
        source, target = fx.get(fixture), folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)

    return step


def put_odd(fx: Fixtures, stem: str, archive: str, name: str = "") -> Step:
    """Copy the archive ingested from ``stem.svs`` to ``name`` (default: ``archive``)."""

    def step(folder: Path) -> None:
        target = folder / (name or archive)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(fx.odd_archive(stem, archive), target, symlinks=True)

    return step


def tile(name: str, real: str) -> Step:
    def step(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TILES / real, folder / name)

    return step


def mkdir(name: str) -> Step:
    return lambda folder: (folder / name).mkdir(parents=True, exist_ok=True)


def text(name: str, content: str = "field notes, not wsistore's\n" * 40) -> Step:
    def step(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content, encoding="utf-8")

    return step


def foreign_folder(name: str) -> Step:
    """A folder of someone's files, with subfolders and a hidden file."""

    def step(folder: Path) -> None:
        root = folder / name
        (root / "sub" / "deeper").mkdir(parents=True)
        (root / "notes.txt").write_text("my notes\n" * 50)
        (root / ".hidden").write_text("x")
        (root / "sub" / "table.csv").write_text("a,b\n1,2\n")
        (root / "sub" / "deeper" / "raw.bin").write_bytes(random.Random(7).randbytes(8192))
        shutil.copy2(TILES / TRAIN_TILES["lung.png"], root / "sub" / "tile.png")

    return step


def link(name: str, target: str) -> Step:
    return lambda folder: os.symlink(target, folder / name)


def hardlink(name: str, target: str) -> Step:
    return lambda folder: os.link(folder / target, folder / name)


def first(*args: str) -> Step:
    """Run a wsistore command first (what the case then runs onto)."""
    return lambda folder: _must(args, folder)


def interrupt(args: Sequence[str], marker: str, after: float = 0.3) -> Step:
    """Kill a real run of ``args`` in the case folder while it writes."""
    return lambda folder: interrupted(args, folder, folder / marker, after)


def tmpfs(fx: Fixtures, name: str, fixture: str, as_name: str, spare: int, readonly: bool = False) -> Step:
    """Mount a tmpfs at ``name`` just big enough for a copy of ``fixture`` (as ``as_name``)
    plus ``spare`` bytes, copy it in, and (``readonly``) remount it read-only."""

    def step(folder: Path) -> None:
        source = fx.get(fixture)
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        pages = sum(-(-p.stat().st_size // 4096) * 4096 for p in files)
        where = folder / name
        where.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", f"size={pages + spare}", "tmpfs", str(where)]
        if subprocess.run(mount, capture_output=True).returncode:
            raise SetupError(f"cannot mount a tmpfs at {where}")
        put(fx, fixture, f"{name}/{as_name}")(folder)
        if readonly:
            remount = ["mount", "-o", "remount,ro", str(where)]
            if subprocess.run(remount, capture_output=True).returncode:
                raise SetupError(f"cannot remount {where} read-only")

    return step


def unmount(name: str) -> Step:
    def step(folder: Path) -> None:
        if os.path.ismount(folder / name):
            subprocess.run(["umount", "-l", str(folder / name)], capture_output=True)

    return step


# -- checks of an accepted output ---------------------------------------------------------------
def all_of(*checks: Check) -> Check:
    def check(folder: Path, stdout: str) -> str:
        for one in checks:
            why = one(folder, stdout)
            if why:
                return why
        return ""

    return check


def shows(text: str) -> Check:
    """The command's output names ``text`` as given (not escaped, not mangled)."""
    return lambda folder, stdout: "" if text in stdout else f"its output does not show {text!r}: {_last(stdout)!r}"


def archive_ok(name: str, level: int | None = DEFAULT_LEVEL) -> Check:
    """A complete archive that ``verify`` passes, coded at AVIF ``level`` (the settings asked for)."""

    def check(folder: Path, stdout: str) -> str:
        path = folder / name
        if not looks_complete(path):
            return f"{name} is not a complete archive"
        code, out, err, _ = wsistore(["verify", "--quiet", "--", name], folder)
        if code != 0:
            return f"verify {name}: exit {code}: {_last(err) or _last(out)}"
        if level is not None:
            meta = json.loads((path / "zarr.json").read_text())["attributes"]["wsistore"]
            got = meta["codec"].get("configuration", {}).get("level")
            if got != level:
                return f"{name} is coded at level {got}, not the {level} asked for"
        return ""

    return check


def tiff_ok(name: str, quality: int = DEFAULT_QUALITY) -> Check:
    """A TIFF that tiffslide opens at the slide's size, every page decoding, its tiles at
    JPEG ``quality`` (the settings asked for)."""

    def check(folder: Path, stdout: str) -> str:
        import tifffile
        import tiffslide

        path = folder / name
        if not path.is_file() or path.is_symlink():
            return f"{name} is not a file"
        try:
            with tiffslide.TiffSlide(path) as slide:
                size = slide.dimensions
                slide.read_region((0, 0), 0, (256, 256))
            with tifffile.TiffFile(path) as tif:
                description = tif.pages.first.description
        except Exception as exc:
            return f"{name} does not open: {type(exc).__name__}: {exc}"
        if tuple(size) != SIZE:
            return f"{name} is {size[0]} x {size[1]}, not {SIZE[0]} x {SIZE[1]}"
        if f"JPEG quality {quality}" not in description:
            return f"{name} is not at JPEG quality {quality}"
        return faults.check_tiff(path)

    return check


def ome_ok(name: str) -> Check:
    """An OME-Zarr folder whose level 0 is the slide's size and reads."""

    def check(folder: Path, stdout: str) -> str:
        import zarr

        path = folder / name
        if not path.is_dir() or path.is_symlink():
            return f"{name} is not a folder"
        try:
            group = zarr.open_group(path, mode="r")
            level0: Any = group["0"]
            level0[:, :256, :256]
            attrs = dict(group.attrs)
        except Exception as exc:
            return f"{name} does not open: {type(exc).__name__}: {exc}"
        if tuple(level0.shape) != (3, SIZE[1], SIZE[0]):
            return f"{name} level 0 is {level0.shape}, not (3, {SIZE[1]}, {SIZE[0]})"
        return "" if "ome" in attrs else f"{name} has no OME metadata"

    return check


def report_ok(name: str) -> Check:
    def check(folder: Path, stdout: str) -> str:
        path = folder / name
        missing = [f for f in ("results.json", "report.md", "report.html") if not (path / f).is_file()]
        if missing:
            return f"{name} lacks {', '.join(missing)}"
        records = json.loads((path / "results.json").read_text()).get("records")
        return "" if records else f"{name}/results.json has no records"

    return check


def loss_map_ok(name: str) -> Check:
    def check(folder: Path, stdout: str) -> str:
        from PIL import Image

        try:
            with Image.open(folder / name) as image:
                image.load()
                kind = image.format
        except Exception as exc:
            return f"{name} does not open: {exc}"
        return "" if kind == "PNG" else f"{name} is {kind}, not PNG"

    return check


def summary_ok(name: str, rows: int) -> Check:
    def check(folder: Path, stdout: str) -> str:
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if path.suffix == ".json":
            found = json.loads(path.read_text(encoding="utf-8"))
        else:
            found = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
        return "" if len(found) == rows else f"{name} has {len(found)} rows, not {rows}"

    return check


def prepared_ok(name: str) -> Check:
    def check(folder: Path, stdout: str) -> str:
        manifest = folder / name / "manifest.json"
        return "" if manifest.is_file() and json.loads(manifest.read_text()) else f"{name}/manifest.json missing"

    return check


def json_names(text: str) -> Check:
    """``--json`` output that parses and holds ``text`` in one of its strings."""

    def strings(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    def check(folder: Path, stdout: str) -> str:
        try:
            found = strings(json.loads(stdout))
        except ValueError as exc:
            return f"--json output does not parse: {exc}"
        return "" if any(text in s for s in found) else f"--json output does not hold {text!r}"

    return check


# -- the cases ----------------------------------------------------------------------------------
def build_cases(fx: Fixtures) -> list[Case]:
    """Every case (those marked ``quick`` make the --quick subset)."""
    cases: list[Case] = []
    codes: tuple[int, ...]  # the loops below share these names
    says: tuple[str, ...]

    def add(name: str, group: str, args: list[str], **kw: Any) -> None:
        cases.append(Case(name, group, args, **kw))

    slide = put(fx, "slide", "slide.svs")
    archive = put(fx, "archive", "a.zarr")

    # -- the output is the input, by every route, with and without --overwrite
    group = "output is the input"

    def routes(given: str, ext: str, hard: bool) -> list[tuple[str, str, list[Step], bool]]:
        """(label, the output naming ``given`` that way, its setup, in the quick subset)."""
        found: list[tuple[str, str, list[Step], bool]] = [
            ("the same path", given, [], True),
            ("./x", f"./{given}", [], False),
            ("dir/../x", f"sub/../{given}", [mkdir("sub")], False),
            ("x/ (trailing slash)", f"{given}/", [], False),
            ("its absolute path", f"{{DIR}}/{given}", [], False),
            ("a symlink to it", f"link.{ext}", [link(f"link.{ext}", given)], True),
        ]
        if hard:  # folders cannot be hard-linked
            found.append(("a hard link to it", f"hard.{ext}", [hardlink(f"hard.{ext}", given)], True))
        return found

    for label, out, extra, quick in routes("slide.svs", "zarr", hard=True):
        for flag in ([], ["--overwrite"]):
            add(
                f"ingest, output {label}{' --overwrite' if flag else ''}",
                group,
                ["ingest", "slide.svs", out, *INGEST, *flag],
                says=IS_INPUT,
                output=out,
                setup=[slide, *extra],
                quick=quick and bool(flag),
            )
    for fmt, ext in (([], "tif"), (["--format", "zarr"], "zarr")):
        for label, out, extra, quick in routes("a.zarr", ext, hard=False):
            for flag in ([], ["--overwrite"]):
                add(
                    f"restore{' --format zarr' if fmt else ''}, output {label}{' --overwrite' if flag else ''}",
                    group,
                    ["restore", "a.zarr", out, *RESTORE, *fmt, *flag],
                    says=IS_INPUT,
                    output=out,
                    setup=[archive, *extra],
                    quick=quick and label == "a symlink to it" and bool(fmt) and bool(flag),
                )
    add(
        "ingest, the input given by a symlink, the output its target --overwrite",
        group,
        ["ingest", "link.svs", "slide.svs", *INGEST, "--overwrite"],
        says=IS_INPUT,
        output="slide.svs",
        setup=[slide, link("link.svs", "slide.svs")],
    )
    add(
        "restore --format zarr, the input given by a symlink, the output its target --overwrite",
        group,
        ["restore", "link.zarr", "a.zarr", *RESTORE, "--format", "zarr", "--overwrite"],
        says=IS_INPUT,
        output="a.zarr",
        setup=[archive, link("link.zarr", "a.zarr")],
    )

    # -- inside the input, or holding it
    group = "output inside or holding the input"
    add(
        "restore a.zarr a.zarr/x.tif",
        group,
        ["restore", "a.zarr", "a.zarr/x.tif", *RESTORE],
        says=IS_INPUT,
        output="a.zarr/x.tif",
        setup=[archive],
        quick=True,
    )
    add(
        "restore --format zarr a.zarr a.zarr/sub",
        group,
        ["restore", "a.zarr", "a.zarr/sub", *RESTORE, "--format", "zarr"],
        says=IS_INPUT,
        output="a.zarr/sub",
        setup=[archive],
    )
    add(
        "restore --format zarr sub/a.zarr sub --overwrite (the folder holding it)",
        group,
        ["restore", "sub/a.zarr", "sub", *RESTORE, "--format", "zarr", "--overwrite"],
        says=IS_INPUT,
        output="sub",
        setup=[put(fx, "archive", "sub/a.zarr")],
    )
    add(
        "restore --format zarr a.zarr . --overwrite",
        group,
        ["restore", "a.zarr", ".", *RESTORE, "--format", "zarr", "--overwrite"],
        says=IS_INPUT,
        output=".",
        setup=[archive],
    )
    add(
        "ingest dir/slide.svs dir --overwrite",
        group,
        ["ingest", "dir/slide.svs", "dir", *INGEST, "--overwrite"],
        says=IS_INPUT,
        output="dir",
        setup=[put(fx, "slide", "dir/slide.svs")],
        quick=True,
    )
    add(
        "ingest slide.svs . --overwrite",
        group,
        ["ingest", "slide.svs", ".", *INGEST, "--overwrite"],
        says=IS_INPUT,
        output=".",
        setup=[slide],
        quick=True,
    )
    add(
        "ingest slide.svs slide.svs/x.zarr (below the input file)",
        group,
        ["ingest", "slide.svs", "slide.svs/x.zarr", *INGEST],
        says=IS_INPUT,
        output="slide.svs/x.zarr",
        setup=[slide],
    )

    # -- --overwrite onto something that is not this command's own output
    group = "--overwrite onto something not ours"
    targets: list[tuple[str, str, list[Step], bool]] = [
        ("a foreign folder with files and subfolders", "results", [foreign_folder("results")], True),
        ("a foreign file", "notes.txt", [text("notes.txt")], False),
        ("a symlink to a foreign folder", "out.zarr", [foreign_folder("data"), link("out.zarr", "data")], False),
        ("a symlink to a real archive", "out.zarr", [put(fx, "archive", "b.zarr"), link("out.zarr", "b.zarr")], True),
        ("a dangling symlink", "out.zarr", [link("out.zarr", "nowhere")], False),
        ("the source slide of another run", "other.svs", [put(fx, "slide", "other.svs")], False),
        (
            "a Zarr folder that is not a wsistore archive",
            "foreign.zarr",
            [put(fx, "foreign_zarr", "foreign.zarr")],
            True,
        ),
        ("a TIFF restore wrote", "restored.tif", [put(fx, "tiff", "restored.tif")], True),
        ("an OME-Zarr restore wrote", "restored.zarr", [put(fx, "ome", "restored.zarr")], False),
    ]
    for label, out, steps, quick in targets:
        add(
            f"ingest --overwrite onto {label}",
            group,
            ["ingest", "slide.svs", out, *INGEST, "--overwrite"],
            codes=(IN_THE_WAY,),
            says=NOT_OURS,
            output=out,
            setup=[slide, *steps],
            quick=quick,
        )
    restore_targets: list[tuple[str, str, list[Step], list[str], bool]] = [
        ("an archive", "b.zarr", [put(fx, "archive", "b.zarr")], [], True),
        ("an archive", "b.zarr", [put(fx, "archive", "b.zarr")], ["--format", "zarr"], False),
        ("a foreign folder with files and subfolders", "results", [foreign_folder("results")], [], False),
        (
            "a foreign folder with files and subfolders",
            "results",
            [foreign_folder("results")],
            ["--format", "zarr"],
            False,
        ),
        ("a foreign file", "notes.txt", [text("notes.txt")], [], False),
        ("the source slide", "slide.svs", [slide], [], False),
        (
            "a symlink to a TIFF restore wrote",
            "link.tif",
            [put(fx, "tiff", "r.tif"), link("link.tif", "r.tif")],
            [],
            False,
        ),
        (
            "a Zarr folder that is not ours",
            "foreign.zarr",
            [put(fx, "foreign_zarr", "foreign.zarr")],
            ["--format", "zarr"],
            False,
        ),
        ("a TIFF that restore did not write", "plain.tif", [put(fx, "plain_tiff", "plain.tif")], [], False),
    ]
    for label, out, steps, fmt, quick in restore_targets:
        add(
            f"restore{' --format zarr' if fmt else ''} --overwrite onto {label}",
            group,
            ["restore", "a.zarr", out, *RESTORE, *fmt, "--overwrite"],
            codes=(IN_THE_WAY,),
            says=NOT_OURS,
            output=out,
            setup=[archive, *steps],
            quick=quick,
        )

    # -- an existing output without --overwrite
    group = "existing output, no --overwrite"
    for label, out, steps, quick in [
        ("an archive", "b.zarr", [put(fx, "archive", "b.zarr")], True),
        ("a foreign file", "notes.txt", [text("notes.txt")], False),
        ("a foreign folder", "results", [foreign_folder("results")], False),
        ("a dangling symlink", "out.zarr", [link("out.zarr", "nowhere")], False),
    ]:
        add(
            f"ingest onto {label}",
            group,
            ["ingest", "slide.svs", out, *INGEST],
            codes=(IN_THE_WAY,),
            says=ALREADY,
            output=out,
            setup=[slide, *steps],
            quick=quick,
        )
    for label, out, steps, fmt in [
        ("a TIFF restore wrote", "r.tif", [put(fx, "tiff", "r.tif")], []),
        ("an OME-Zarr restore wrote", "r.zarr", [put(fx, "ome", "r.zarr")], ["--format", "zarr"]),
        ("a foreign folder", "results", [foreign_folder("results")], []),
    ]:
        add(
            f"restore{' --format zarr' if fmt else ''} onto {label}",
            group,
            ["restore", "a.zarr", out, *RESTORE, *fmt],
            codes=(IN_THE_WAY,),
            says=ALREADY,
            output=out,
            setup=[archive, *steps],
        )

    # -- --overwrite onto our own output of the same kind: accepted
    group = "--overwrite onto our own output"
    add(
        "ingest --overwrite onto an archive made with --quality 60",
        group,
        ["ingest", "slide.svs", "out.zarr", *INGEST, "--overwrite"],
        codes=(0,),
        output="out.zarr",
        setup=[slide, put(fx, "old_archive", "out.zarr")],
        check=all_of(archive_ok("out.zarr"), shows("out.zarr")),
        quick=True,
    )
    for label, out, fixture, fmt, check in [
        ("a TIFF restore wrote (--quality 50)", "r.tif", "old_tiff", [], tiff_ok("r.tif")),
        ("an OME-Zarr restore wrote", "r.zarr", "ome", ["--format", "zarr"], ome_ok("r.zarr")),
        ("an OME-Zarr restore wrote, as a TIFF", "r.zarr", "ome", [], tiff_ok("r.zarr")),
        ("a TIFF restore wrote, as an OME-Zarr", "r.tif", "tiff", ["--format", "zarr"], ome_ok("r.tif")),
    ]:
        add(
            f"restore{' --format zarr' if fmt else ''} --overwrite onto {label}",
            group,
            ["restore", "a.zarr", out, *RESTORE, *fmt, "--overwrite"],
            codes=(0,),
            output=out,
            setup=[archive, put(fx, fixture, out)],
            check=check,
            quick=label.endswith("as an OME-Zarr"),
        )

    # -- a work folder in the way
    group = "OUT.partial in the way"
    for label, steps, flag, quick in [
        ("a foreign folder with files", [foreign_folder("out.zarr.partial")], [], True),
        ("a file", [text("out.zarr.partial")], [], False),
        ("a symlink to a foreign folder", [foreign_folder("data"), link("out.zarr.partial", "data")], [], False),
        ("an interrupted restore", [put(fx, "interrupted_restore", "out.zarr.partial")], [], True),
        (
            "a foreign folder, --overwrite onto our own archive",
            [put(fx, "archive", "out.zarr"), foreign_folder("out.zarr.partial")],
            ["--overwrite"],
            False,
        ),
    ]:
        add(
            f"ingest, OUT.partial {label}",
            group,
            ["ingest", "slide.svs", "out.zarr", *INGEST, *flag],
            codes=(IN_THE_WAY,),
            says=("out.zarr.partial",),
            output="out.zarr",
            setup=[slide, *steps],
            quick=quick,
        )
    for label, out, steps, fmt in [
        ("an interrupted ingest", "out.tif", [put(fx, "interrupted_ingest", "out.tif.partial")], []),
        ("a foreign folder with files", "out.tif", [foreign_folder("out.tif.partial")], []),
        ("a file", "out.zarr", [text("out.zarr.partial")], ["--format", "zarr"]),
    ]:
        add(
            f"restore{' --format zarr' if fmt else ''}, OUT.partial {label}",
            group,
            ["restore", "a.zarr", out, *RESTORE, *fmt],
            codes=(IN_THE_WAY,),
            says=(f"{out}.partial",),
            output=out,
            setup=[archive, *steps],
        )
    cut_ingest = ["ingest", "slide.svs", "out.zarr", *INGEST, "--workers", "1"]
    for flag in ([], ["--resume"]):
        add(
            f"ingest, OUT.partial an interrupted ingest (ours): started again{' with --resume' if flag else ''}",
            group,
            [*cut_ingest, *flag],
            codes=(0,),
            output="out.zarr",
            setup=[slide, interrupt(cut_ingest, "out.zarr.partial/ingest-settings.json")],
            check=archive_ok("out.zarr"),
        )
    cut_restore = ["restore", "a.zarr", "out.tif", *RESTORE, "--workers", "1", "--tile", "256"]
    add(
        "restore, OUT.partial an interrupted restore (ours): started again",
        group,
        cut_restore,
        codes=(0,),
        output="out.tif",
        setup=[archive, interrupt(cut_restore, "out.tif.partial/restore-settings.json", 0.1)],
        check=tiff_ok("out.tif"),
    )
    cut_ome = ["restore", "a.zarr", "out.zarr", *RESTORE, "--workers", "1", "--tile", "256", "--format", "zarr"]
    add(
        "restore --format zarr, OUT.partial an interrupted restore (ours): --resume",
        group,
        [*cut_ome, "--resume"],
        codes=(0,),
        output="out.zarr",
        setup=[archive, interrupt(cut_ome, "out.zarr.partial/restore-settings.json", 0.1)],
        check=ome_ok("out.zarr"),
    )

    # -- odd names, through every command
    group = "odd names"
    for label, stem in ODD_NAMES.items():
        dash = ["--"]  # harmless for every name; needed for the leading dash
        source = f"{stem}.svs"
        name = f"{stem}-archive.zarr" if stem == LONG else f"{stem}.zarr"  # 249 bytes: a shortened work folder
        tif = f"{stem}-restored.tif" if stem == LONG else f"{stem}.tif"
        ome = f"{stem}-restored.zarr" if stem == LONG else f"{stem} restored.zarr"
        odd_slide = put(fx, "slide", source)
        odd_archive = put_odd(fx, stem, name)
        quick = label in ("non-ASCII and a space", "a leading dash (after --)")
        add(
            f"ingest, {label}",
            group,
            ["ingest", *INGEST, *dash, source, name],
            codes=(0,),
            output=name,
            setup=[odd_slide],
            check=all_of(archive_ok(name), shows(name)),
            quick=quick,
        )
        add(
            f"info, {label}",
            group,
            ["info", *dash, name],
            codes=(0,),
            setup=[odd_archive],
            check=all_of(shows(name), shows(source)),
        )
        add(
            f"info --json, {label}",
            group,
            ["info", "--json", *dash, name],
            codes=(0,),
            setup=[odd_archive],
            check=json_names(source),
            quick=label == "non-ASCII and a space",
        )
        add(f"verify, {label}", group, ["verify", "--quiet", *dash, name], codes=(0,), setup=[odd_archive])
        add(
            f"verify --against, {label}",
            group,
            ["verify", "--quiet", f"--against={source}", *dash, name],
            codes=(0,),
            setup=[odd_slide, odd_archive],
            quick=label == "non-ASCII and a space",
        )
        add(
            f"restore, {label}",
            group,
            ["restore", *RESTORE, *dash, name, tif],
            codes=(0,),
            output=tif,
            setup=[odd_archive],
            check=all_of(tiff_ok(tif), shows(tif)),
            quick=label == "non-ASCII and a space",
        )
        add(
            f"restore --format zarr, {label}",
            group,
            ["restore", *RESTORE, "--format", "zarr", *dash, name, ome],
            codes=(0,),
            output=ome,
            setup=[odd_archive],
            check=all_of(ome_ok(ome), shows(ome)),
        )
        add(
            f"serve, {label}",
            group,
            ["serve", "--host", "127.0.0.1", "--port", "0", "--model", "bicubic", "--device", "cpu", *dash, name],
            codes=(0,),
            setup=[odd_archive],
            serve=True,
            quick=label == "non-ASCII and a space",
        )
        if label in ("non-ASCII and a space", "double quotes", "240 bytes of UTF-8"):
            report = f"{stem} report" if stem != LONG else f"{stem}-report"
            add(
                f"bench, {label}",
                group,
                ["bench", *BENCH, "--out", report, *dash, source],
                codes=(0,),
                output=report,
                setup=[odd_slide],
                check=report_ok(report),
            )
    # refused, the names shown as given
    nonascii, quotes, double = (
        ODD_NAMES["non-ASCII and a space"],
        ODD_NAMES["single quotes"],
        ODD_NAMES["double quotes"],
    )
    add(
        "ingest, odd name: output is the input",
        group,
        ["ingest", *INGEST, f"{nonascii}.svs", f"./{nonascii}.svs"],
        says=IS_INPUT,
        names=(f"{nonascii}.svs", f"./{nonascii}.svs"),
        output=f"{nonascii}.svs",
        setup=[put(fx, "slide", f"{nonascii}.svs")],
        quick=True,
    )
    add(
        "ingest, odd names: --overwrite onto a foreign file",
        group,
        ["ingest", *INGEST, "--overwrite", f"{quotes}.svs", f"{double}.txt"],
        codes=(IN_THE_WAY,),
        says=NOT_OURS,
        names=(f"{double}.txt",),
        output=f"{double}.txt",
        setup=[put(fx, "slide", f"{quotes}.svs"), text(f"{double}.txt")],
    )
    add(
        "ingest, leading dash: output is the input",
        group,
        ["ingest", *INGEST, "--overwrite", "--", "-dash-first.svs", "-dash-first.svs"],
        says=IS_INPUT,
        names=("-dash-first.svs",),
        output="-dash-first.svs",
        setup=[put(fx, "slide", "-dash-first.svs")],
    )
    add(
        "ingest, 240-byte name: onto an existing archive without --overwrite",
        group,
        ["ingest", *INGEST, f"{LONG}.svs", f"{LONG}-archive.zarr"],
        codes=(IN_THE_WAY,),
        says=ALREADY,
        names=(f"{LONG}-archive.zarr",),
        output=f"{LONG}-archive.zarr",
        setup=[put(fx, "slide", f"{LONG}.svs"), put(fx, "archive", f"{LONG}-archive.zarr")],
    )
    add(
        "restore, 240-byte name: output is the input",
        group,
        ["restore", *RESTORE, f"{LONG}-archive.zarr", f"{LONG}-archive.zarr/"],
        says=IS_INPUT,
        names=(f"{LONG}-archive.zarr/",),
        output=f"{LONG}-archive.zarr",
        setup=[put(fx, "archive", f"{LONG}-archive.zarr")],
    )
    # batches of odd names
    batch = [ODD_NAMES["non-ASCII and a space"], ODD_NAMES["single quotes"], ODD_NAMES["double quotes"], LONG]
    add(
        "ingest batch --output-dir, odd names",
        group,
        ["ingest", *INGEST, "--output-dir", "ärchives dir", "--", *(f"{s}.svs" for s in batch), "-dash-first.svs"],
        codes=(0,),
        output="ärchives dir",
        setup=[mkdir("ärchives dir"), *(put(fx, "slide", f"{s}.svs") for s in [*batch, "-dash-first"])],
        check=all_of(*(archive_ok(f"ärchives dir/{s}.zarr") for s in [*batch, "-dash-first"])),
    )
    archives = [f"{s}.zarr" for s in batch]
    add(
        "restore batch --output-dir, odd names (a folder of archives)",
        group,
        ["restore", *RESTORE, "--output-dir", "réstored", "ärchives"],
        codes=(0,),
        output="réstored",
        setup=[mkdir("réstored"), *(put_odd(fx, s, f"{s}.zarr", f"ärchives/{s}.zarr") for s in batch)],
        check=all_of(*(tiff_ok(f"réstored/{s}.tif") for s in batch)),
    )
    add(
        "verify batch --summary, odd names",
        group,
        ["verify", "--quiet", "--summary", "süm mary.csv", *archives],
        codes=(0,),
        output="süm mary.csv",
        setup=[put_odd(fx, s, f"{s}.zarr") for s in batch],
        check=summary_ok("süm mary.csv", len(batch)),
    )

    # -- the other commands that write
    group = "bench --out"
    for label, args, steps, codes, says, output in [
        ("--out the input slide", ["slide.svs", "--out", "slide.svs"], [slide], (2,), IS_INPUT, "slide.svs"),
        (
            "--out the input slide --overwrite",
            ["slide.svs", "--out", "slide.svs", "--overwrite"],
            [slide],
            (2,),
            IS_INPUT,
            "slide.svs",
        ),
        ("--out . (holding the input)", ["slide.svs", "--out", "."], [slide], (2,), IS_INPUT, "."),
        (
            "--out dir (holding the input) --overwrite",
            ["dir/slide.svs", "--out", "dir", "--overwrite"],
            [put(fx, "slide", "dir/slide.svs")],
            (2,),
            IS_INPUT,
            "dir",
        ),
        (
            "--out inside the input archive",
            ["a.zarr", "--out", "a.zarr/report"],
            [slide, archive],
            (2,),
            IS_INPUT,
            "a.zarr/report",
        ),
        (
            "--out a foreign non-empty folder",
            ["slide.svs", "--out", "results"],
            [slide, foreign_folder("results")],
            (4,),
            (),
            "results",
        ),
        (
            "--out a foreign non-empty folder --overwrite",
            ["slide.svs", "--out", "results", "--overwrite"],
            [slide, foreign_folder("results")],
            (4,),
            NOT_OURS,
            "results",
        ),
        (
            "--out a foreign file --overwrite",
            ["slide.svs", "--out", "notes.txt", "--overwrite"],
            [slide, text("notes.txt")],
            (4,),
            NOT_OURS,
            "notes.txt",
        ),
        (
            "--out a report bench wrote, no --overwrite",
            ["slide.svs", "--out", "report"],
            [slide, put(fx, "report", "report")],
            (4,),
            ALREADY,
            "report",
        ),
    ]:
        add(
            f"bench {label}",
            group,
            ["bench", *args, *BENCH],
            codes=codes,
            says=says,
            output=output,
            setup=steps,
            quick=label == "--out the input slide",
        )
    add(
        "bench --out a report bench wrote --overwrite",
        group,
        ["bench", "slide.svs", "--out", "report", *BENCH, "--overwrite"],
        codes=(0,),
        output="report",
        setup=[slide, put(fx, "report", "report")],
        check=report_ok("report"),
    )

    group = "train prepare OUT"
    tiles = [tile(name, real) for name, real in TRAIN_TILES.items()]
    for label, out, steps, flag, codes, says, quick in [
        ("OUT one of the tiles", "kidney.png", [], [], (2,), IS_INPUT, True),
        ("OUT one of the tiles --overwrite", "lung.png", [], ["--overwrite"], (2,), IS_INPUT, False),
        (
            "OUT a foreign folder --overwrite",
            "results",
            [foreign_folder("results")],
            ["--overwrite"],
            (4,),
            NOT_OURS,
            False,
        ),
        ("OUT a foreign folder", "results", [foreign_folder("results")], [], (4,), (), False),
        ("OUT a slide --overwrite", "slide.svs", [slide], ["--overwrite"], (4,), NOT_OURS, False),
    ]:
        add(
            f"train prepare, {label}",
            group,
            ["train", "prepare", *TRAIN_TILES, out, *PREPARE, *flag],
            codes=codes,
            says=says,
            output=out,
            setup=[*tiles, *steps],
            quick=quick,
        )
    add(
        "train prepare, OUT the folder holding the tiles --overwrite",
        group,
        ["train", "prepare", *(f"tiles/{t}" for t in TRAIN_TILES), "tiles", *PREPARE, "--overwrite"],
        says=IS_INPUT,
        output="tiles",
        setup=[tile(f"tiles/{name}", real) for name, real in TRAIN_TILES.items()],
    )
    prepare = ["train", "prepare", *TRAIN_TILES, "prepared", *PREPARE]
    add(
        "train prepare, OUT its own earlier output --overwrite",
        group,
        [*prepare, "--overwrite"],
        codes=(0,),
        output="prepared",
        setup=[*tiles, first(*prepare)],
        check=prepared_ok("prepared"),
    )

    group = "info --loss-map"
    for label, target, steps, codes, quick in [
        ("inside the archive", "a.zarr/x.png", [], (2,), True),
        ("the archive itself", "a.zarr", [], (2,), False),
        ("onto the slide", "slide.svs", [slide], (4,), True),
        ("onto a text file", "notes.png", [text("notes.png")], (4,), False),
        ("onto a real PNG tile", "tile.png", [tile("tile.png", TRAIN_TILES["lung.png"])], (4,), False),
        ("onto a TIFF restore wrote", "r.tif", [put(fx, "tiff", "r.tif")], (4,), False),
    ]:
        add(
            f"info --loss-map {label}",
            group,
            ["info", "a.zarr", "--loss-map", target],
            codes=codes,
            says=IS_INPUT if codes == (2,) else (),
            output=target,
            setup=[archive, *steps],
            quick=quick,
        )
    add(
        "info --loss-map onto a loss map it wrote",
        group,
        ["info", "a.zarr", "--loss-map", "map.png"],
        codes=(0,),
        output="map.png",
        setup=[archive, first("info", "a.zarr", "--loss-map", "map.png")],
        check=loss_map_ok("map.png"),
    )

    group = "batch outputs"
    two_slides = [put(fx, "slide", "slides/s1.svs"), put(fx, "slide", "slides/s2.svs")]
    two_archives = [archive, put(fx, "archive", "b.zarr")]
    for label, args, steps, codes, says, output, quick in [
        (
            "ingest slides --output-dir slides/archives (inside the input folder)",
            ["ingest", "slides", "--output-dir", "slides/archives", *INGEST],
            two_slides,
            (2,),
            IS_INPUT,
            "slides/archives",
            True,
        ),
        (
            "ingest s1 s2 --output-dir s1 (an input)",
            ["ingest", "slides/s1.svs", "slides/s2.svs", "--output-dir", "slides/s1.svs", *INGEST],
            two_slides,
            (2,),
            IS_INPUT,
            "slides/s1.svs",
            False,
        ),
        (
            "restore a b --output-dir a.zarr/restored (inside an input)",
            ["restore", "a.zarr", "b.zarr", "--output-dir", "a.zarr/restored", *RESTORE],
            two_archives,
            (2,),
            IS_INPUT,
            "a.zarr/restored",
            False,
        ),
        (
            "ingest --summary naming an input",
            ["ingest", "slides/s1.svs", "slides/s2.svs", "--output-dir", "out", "--summary", "slides/s1.svs", *INGEST],
            [*two_slides, mkdir("out")],
            (2,),
            (),
            "slides/s1.svs",
            False,
        ),
        (
            "verify --summary naming an input (an archive folder called a.json)",
            ["verify", "a.json", "b.zarr", "--summary", "a.json", "--quiet"],
            [put(fx, "archive", "a.json"), put(fx, "archive", "b.zarr")],
            (2,),
            IS_INPUT,
            "a.json",
            False,
        ),
        (
            "ingest @list.csv --summary list.csv (the input list)",
            ["ingest", "@list.csv", "--output-dir", "out", "--summary", "list.csv", *INGEST],
            [*two_slides, mkdir("out"), text("list.csv", "slides/s1.svs\nslides/s2.svs\n")],
            (2, 4),
            (),
            "list.csv",
            False,
        ),
        (
            "verify --summary inside an input archive",
            ["verify", "a.zarr", "b.zarr", "--summary", "a.zarr/summary.csv", "--quiet"],
            two_archives,
            (2,),
            IS_INPUT,
            "a.zarr/summary.csv",
            False,
        ),
        (
            "verify --summary onto a text file",
            ["verify", "a.zarr", "b.zarr", "--summary", "notes.csv", "--quiet"],
            [*two_archives, text("notes.csv")],
            (4,),
            (),
            "notes.csv",
            True,
        ),
        (
            "ingest --summary onto a JSON file of another kind",
            ["ingest", "slides/s1.svs", "slides/s2.svs", "--output-dir", "out", "--summary", "notes.json", *INGEST],
            [*two_slides, mkdir("out"), text("notes.json", '{"mine": [1, 2, 3]}\n')],
            (4,),
            (),
            "notes.json",
            False,
        ),
    ]:
        add(label, group, args, codes=codes, says=says, output=output, setup=steps, quick=quick)
    verify_two = ["verify", "a.zarr", "b.zarr", "--summary", "s.csv", "--quiet"]
    add(
        "verify --summary onto a summary it wrote",
        group,
        verify_two,
        codes=(0,),
        output="s.csv",
        setup=[*two_archives, first(*verify_two)],
        check=summary_ok("s.csv", 2),
    )

    # -- a full disk, a read-only destination: the old output is kept
    group = "full disk, read-only, --overwrite"
    skip = "" if faults._can_mount() else "needs root with a mountable tmpfs"
    for label, spare, readonly, codes, says in [
        ("a full disk", 128 << 10, False, (1,), ("space",)),
        ("a read-only destination", 64 << 10, True, (1, 2), ("not writable", "Read-only", "read-only")),
    ]:
        add(
            f"ingest --overwrite onto an archive on {label}",
            group,
            ["ingest", "slide.svs", "disk/out.zarr", *INGEST, "--overwrite"],
            codes=codes,
            says=says,
            output="disk/out.zarr",
            setup=[slide, tmpfs(fx, "disk", "old_archive", "out.zarr", spare, readonly)],
            teardown=[unmount("disk")],
            skip=skip,
        )
        add(
            f"restore --overwrite onto a TIFF on {label}",
            group,
            ["restore", "a.zarr", "disk/out.tif", *RESTORE, "--overwrite"],
            codes=codes,
            says=says,
            output="disk/out.tif",
            setup=[archive, tmpfs(fx, "disk", "old_tiff", "out.tif", spare, readonly)],
            teardown=[unmount("disk")],
            skip=skip,
        )
    return cases


# -- running and judging a case -----------------------------------------------------------------
def _expected(case: Case) -> str:
    if case.accepted:
        return "accepted: exit 0, the output complete and sound"
    says = f", saying {' or '.join(map(repr, case.says))}" if case.says else ""
    return f"refused: exit {' or '.join(map(str, case.codes))}{says}, everything kept"


def run_case(case: Case, folder: Path) -> Outcome:
    """Stage ``case`` in the new folder ``folder``, run it and judge what it did."""
    folder.mkdir(parents=True)
    args = [a.replace("{DIR}", str(folder)) for a in case.args]
    result = Outcome(case.name, case.group, "wsistore " + shlex.join(args), _expected(case), None, "", "wrong")
    if case.skip:
        result.verdict, result.why = "skipped", case.skip
        return result
    try:
        try:
            for step in case.setup:
                step(folder)
        except (SetupError, OSError) as exc:
            result.why = f"setup failed: {exc}"
            return result
        before = snapshot(folder)
        if case.serve:
            code, stdout, stderr, seconds, why = serve_run(args, folder)
        else:
            code, stdout, stderr, seconds = wsistore(args, folder)
            why = ""
        after = snapshot(folder)
        result.exit_code, result.seconds = code, round(seconds, 2)
        result.stderr = _last(stderr)
        result.traceback = TRACEBACK in stderr or TRACEBACK in stdout
        why = why or judge(case, folder, before, after, code, stdout, stderr)
    finally:
        for step in case.teardown:
            step(folder)
    result.why = why
    if not why:
        result.verdict = "accepted" if case.accepted else "refused"
    return result


def judge(
    case: Case, folder: Path, before: dict[str, str], after: dict[str, str], code: int | None, stdout: str, stderr: str
) -> str:
    """Why the case did not do what it must ("" when it did)."""
    if TRACEBACK in stderr or TRACEBACK in stdout:
        return "a traceback"
    changed = _changed(before, after)
    if case.accepted:
        if code != 0 and not case.serve:
            return f"exit {code}: {_last(stderr) or _last(stdout)}"
        left = [k for k in after if _work_part(k)]
        if left:
            return f"left {_show(left)}"
        touched = changed + [k for k in after if k not in before]
        outside = [k for k in touched if not _under(k, case.output) and not _work_part(k)]
        if outside:
            return f"touched {_show(outside)} besides its output"
        return case.check(folder, stdout) if case.check else ""
    lines = _lines(stderr)
    if code not in case.codes:
        return f"exit {code}, expected {' or '.join(map(str, case.codes))}"
    if len(lines) != 1 or not lines[0].startswith(PREFIX):
        return f"{len(lines)} stderr lines, expected one '{PREFIX}...' line"
    if case.says and not any(s in lines[0] for s in case.says):
        return f"the message does not say {' or '.join(map(repr, case.says))}"
    missing = [n for n in case.names if n not in lines[0]]
    if missing:
        return f"the message does not show {', '.join(map(repr, missing))} as given"
    if changed:
        return f"changed {_show(changed)}"
    new = [k for k in after if k not in before and not _in_new_work(k, before)]
    if new:
        return f"left {_show(new)}"
    return ""


# -- serve: start it, fetch pages, stop it ------------------------------------------------------
_SERVING = re.compile(r"serving .* at (http://127\.0\.0\.1:(\d+))/")


def serve_run(args: list[str], folder: Path, timeout: float = 120) -> tuple[int | None, str, str, float, str]:
    """Start ``wsistore serve ARGS`` (``--port 0``), read the port it prints, fetch the index,
    the slide's ``.dzi``, its summary and one super-resolved tile from 127.0.0.1 (the name
    URL-quoted), then stop it with SIGINT. Returns exit code, stdout, stderr, seconds, and
    why it failed ("" when every page came)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "wsistore", *args], cwd=folder, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    err: list[str] = []
    out: list[bytes] = []
    ready = threading.Event()

    def read_err() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            err.append(raw.decode("utf-8", "backslashreplace"))
            if _SERVING.search(err[-1]):
                ready.set()
        ready.set()

    def read_out() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.read())

    readers = [threading.Thread(target=read_err), threading.Thread(target=read_out)]
    for reader in readers:
        reader.start()
    why = ""
    try:
        ready.wait(timeout)
        match = next((m for m in map(_SERVING.search, err) if m), None)
        why = _fetch_all(match[1]) if match else f"the server did not say where it listens: {''.join(err)[-300:]!r}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                why = why or "did not stop on SIGINT"
        for reader in readers:
            reader.join(10)
    stdout = b"".join(out).decode("utf-8", "backslashreplace")
    return proc.returncode, stdout, "".join(err), time.perf_counter() - start, why


def _fetch_all(base: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy

    def get(path: str) -> bytes:
        with opener.open(base + path, timeout=60) as response:
            return bytes(response.read())

    try:
        index = get("/").decode()
        names = [html.unescape(n) for n in re.findall(r'href="/slides/([^"]+)\.dzi"', index)]
        if not names:
            return "the index page links no slide"
        quoted = urllib.parse.quote(names[0])
        if b"<Image" not in get(f"/slides/{quoted}.dzi"):
            return "the .dzi is not a DeepZoom descriptor"
        summary = json.loads(get(f"/slides/{quoted}.json"))
        level = len(summary["levels"]) - 1
        tile_bytes = get(f"/slides/{quoted}/{urllib.parse.quote(summary['version'])}/{level}/0_0.jpeg")
        return "" if tile_bytes[:2] == b"\xff\xd8" else "the tile is not a JPEG"
    except Exception as exc:
        return f"fetching from the server: {type(exc).__name__}: {exc}"


# -- kill -9 during --overwrite -----------------------------------------------------------------
@dataclass
class KillPlan:
    """An ``--overwrite`` run onto an old output made with other settings."""

    kind: str
    args: list[str]
    output: str
    setup: list[Step]  # the inputs and the old output
    new: Check  # the complete new output, with the new settings


def kill_plans(fx: Fixtures) -> list[KillPlan]:
    return [
        KillPlan(
            "ingest",
            ["ingest", "slide.svs", "out.zarr", *INGEST, "--workers", "1", "--overwrite"],
            "out.zarr",
            [put(fx, "slide", "slide.svs"), put(fx, "old_archive", "out.zarr")],
            archive_ok("out.zarr"),
        ),
        KillPlan(
            "restore",
            ["restore", "a.zarr", "out.tif", *RESTORE, "--workers", "1", "--tile", "256", "--overwrite"],
            "out.tif",
            [put(fx, "archive", "a.zarr"), put(fx, "old_tiff", "out.tif")],
            tiff_ok("out.tif"),
        ),
    ]


def kill_campaign(plan: KillPlan, work: Path, kills: int, rng: random.Random) -> list[Outcome]:
    """A reference run, then ``kills`` runs each killed (SIGKILL) at a random moment between
    when the reference's work folder appeared and its end. Each must leave the old output byte
    for byte or the complete new one; then a rerun with ``--overwrite`` must succeed."""
    group = "kill -9 during --overwrite"
    command = "wsistore " + shlex.join(plan.args)
    expected = "the old output byte for byte, or the complete new one; a rerun succeeds"
    reference = work / f"kill-{plan.kind}-reference"
    reference.mkdir(parents=True)
    try:
        for step in plan.setup:
            step(reference)
        began, total = _timed(plan.args, reference, reference / f"{plan.output}.partial")
    except (SetupError, OSError) as exc:
        return [Outcome(f"{plan.kind} reference run", group, command, expected, None, "", "wrong", str(exc))]
    why = plan.new(reference, "")
    if why:
        return [Outcome(f"{plan.kind} reference run", group, command, expected, 0, "", "wrong", why)]
    shutil.rmtree(reference)
    outcomes: list[Outcome] = []
    done = trial = 0
    while done < kills:
        trial += 1
        if trial > 4 * kills + 4:
            why = f"{trial - 1 - done} of {trial - 1} runs finished before their kill"
            outcomes.append(Outcome(f"{plan.kind} kills", group, command, expected, None, "", "wrong", why))
            break
        delay = rng.uniform(began, total)
        result = _kill_once(plan, work / f"kill-{plan.kind}-{trial}", delay, total)
        result.command, result.expected = command, expected
        if result.exit_code == -signal.SIGKILL:
            done += 1
        elif not result.why:  # it finished first (and left the new output): not a kill, draw again
            continue
        outcomes.append(result)
    return outcomes


def _kill_once(plan: KillPlan, folder: Path, delay: float, total: float) -> Outcome:
    """Run ``plan`` in the new ``folder``, SIGKILL it ``delay`` seconds after its start (unless
    it finished), judge what it left, and rerun it."""
    folder.mkdir()
    for step in plan.setup:
        step(folder)
    out = folder / plan.output

    def rest() -> dict[str, str]:  # everything but the output and work folders
        return {k: v for k, v in snapshot(folder).items() if not _under(k, plan.output) and not _work_part(k)}

    old, inputs = snapshot(out), rest()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "wsistore", *plan.args], cwd=folder, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while proc.poll() is None and time.perf_counter() - start < delay:
        time.sleep(0.002)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate()
    name = f"{plan.kind} --overwrite killed at {delay:.2f} s of {total:.2f} s"
    result = Outcome(
        name,
        "kill -9 during --overwrite",
        "",
        "",
        proc.returncode,
        _last(err.decode(errors="backslashreplace")),
        "wrong",
    )
    result.seconds = round(delay, 3)
    if snapshot(out) == old:
        result.ended = "old"
    else:
        problem = plan.new(folder, "")
        if problem:
            state = "missing" if not (out.exists() or out.is_symlink()) else "neither the old output nor the new"
            result.why = f"{plan.output} {state}: {problem}"
        else:
            result.ended = "new"
    touched = _changed(inputs, rest()) + [k for k in rest() if k not in inputs]
    if not result.why and touched:
        result.why = f"the kill changed {_show(touched)}"
    if not result.why:
        code, stdout, stderr, _ = wsistore(plan.args, folder)
        if code != 0:
            result.why = f"the rerun with --overwrite: exit {code}: {_last(stderr)}"
        else:
            problem = plan.new(folder, stdout)
            result.why = f"after the rerun: {problem}" if problem else ""
    if not result.why:
        result.verdict = "survived"
        shutil.rmtree(folder)
    return result


def _timed(args: list[str], folder: Path, marker: Path) -> tuple[float, float]:
    """Run ``args`` uninterrupted; (seconds until ``marker`` appeared, seconds in all)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "wsistore", *args], cwd=folder, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    began = None
    while proc.poll() is None:
        if began is None and marker.exists():
            began = time.perf_counter() - start
        time.sleep(0.002)
    total = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode:
        raise SetupError(f"the reference run failed: {_last(err.decode('utf-8', 'backslashreplace'))}")
    return (began if began is not None else 0.0), total


# -- the campaign -------------------------------------------------------------------------------
def campaign(
    quick: bool = False,
    kills: int | None = None,
    seed: int = 0,
    only: str = "",
    work: Path | None = None,
    jobs: int = 1,
) -> tuple[dict[str, Any], list[Outcome]]:
    """Run every case (``quick``: the subset; ``only``: those whose name holds it), ``jobs``
    at a time, then ``kills`` killed ``--overwrite`` runs per operation, one at a time
    (default 10, 1 with ``quick``); returns the totals and each outcome."""
    start = time.perf_counter()
    kills = (1 if quick else 10) if kills is None else kills
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wsistore-paths-")))
        work.mkdir(parents=True, exist_ok=True)
        fx = Fixtures(work / "fixtures")
        cases = [c for c in build_cases(fx) if (c.quick or not quick) and only in c.name]

        def one(i: int) -> Outcome:
            folder = work / "cases" / f"{i:03d}"
            outcome = run_case(cases[i], folder)
            if outcome.verdict != "wrong":  # the wrong ones are kept to look at (with --work)
                shutil.rmtree(folder, ignore_errors=True)
            return outcome

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            outcomes = list(pool.map(one, range(len(cases))))
        rng = random.Random(seed)
        (work / "kills").mkdir(exist_ok=True)
        for plan in kill_plans(fx) if kills else []:
            if only in f"{plan.kind} --overwrite killed":
                outcomes += kill_campaign(plan, work / "kills", kills, rng)
    summary = totals(outcomes)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary, outcomes


def totals(outcomes: list[Outcome]) -> dict[str, Any]:
    def count(verdict: str) -> int:
        return sum(o.verdict == verdict for o in outcomes)

    return {
        "cases": sum(o.verdict != "skipped" for o in outcomes),
        "refused": count("refused"),
        "accepted": count("accepted"),
        "kills": sum(o.group.startswith("kill") and o.verdict != "skipped" for o in outcomes),
        "kills_ended_old": sum(o.ended == "old" for o in outcomes),
        "kills_ended_new": sum(o.ended == "new" for o in outcomes),
        "wrong": count("wrong"),
        "tracebacks": sum(o.traceback for o in outcomes),
        "skipped": count("skipped"),
    }


def table(outcomes: list[Outcome]) -> str:
    """A Markdown table per group: cases, refused, accepted, survived, wrong; then the wrong ones."""
    groups = list(dict.fromkeys(o.group for o in outcomes))
    rows = [
        "| group | cases | refused | accepted | survived (old/new) | wrong | skipped |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group in [*groups, "total"]:
        mine = [o for o in outcomes if group in (o.group, "total")]
        n = {v: sum(o.verdict == v for o in mine) for v in ("refused", "accepted", "survived", "wrong", "skipped")}
        old, new = sum(o.ended == "old" for o in mine), sum(o.ended == "new" for o in mine)
        survived = f"{n['survived']} ({old}/{new})" if n["survived"] or old or new else "0"
        rows.append(
            f"| {group} | {len(mine) - n['skipped']} | {n['refused']} | {n['accepted']} | {survived} "
            f"| {n['wrong']} | {n['skipped']} |"
        )
    wrong = [
        f"- WRONG {o.name}: {o.why} [{o.command}] exit {o.exit_code}: {o.stderr}"
        for o in outcomes
        if o.verdict == "wrong"
    ]
    return "\n".join(rows + wrong)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI subset (and 1 kill per operation)")
    parser.add_argument("--kills", type=int, default=None, help="killed --overwrite runs per operation (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every case's outcome here")
    parser.add_argument("--only", default="", help="only the cases whose name holds this")
    parser.add_argument("--cases", action="store_true", help="print each case's verdict and message")
    parser.add_argument("--work", type=Path, default=None, help="work folder, kept (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (the kills always one at a time)")
    args = parser.parse_args(argv)
    summary, outcomes = campaign(args.quick, args.kills, args.seed, args.only, args.work, args.jobs)
    if args.cases:
        for o in outcomes:
            print(f"{o.verdict:9} exit {o.exit_code} {o.seconds:6.2f}s  {o.name}: {o.stderr} {o.why}")
    print(table(outcomes))
    command = "python -m benchmarks.reliability.paths " + shlex.join(argv if argv is not None else sys.argv[1:])
    summary["command"] = command.strip()
    if args.json:
        args.json.write_text(json.dumps({"totals": summary, "cases": [asdict(o) for o in outcomes]}, indent=2))
    print(json.dumps(summary))
    return 0 if summary["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
