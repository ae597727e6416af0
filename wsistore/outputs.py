"""The rules every command that writes obeys, whatever it writes.

* **An output is never an input** (:func:`check_not_input`): not the same file (by resolved
  path, and by device and inode, so ``./x``, symbolic and hard links, trailing slashes and
  ``..`` are all caught), not inside an input, and not a folder holding one. On object
  storage the normalised URLs are compared. Checked before anything is touched.
* **``--overwrite`` replaces only an output of the same kind** (:func:`check_replaceable`):
  each command names the :class:`OutputKind` it writes and how to recognise one it wrote;
  anything else (a folder that is not ours, a slide, a file of another kind, a symbolic
  link) is refused in one line that says what it is.
* **The old output survives a failed run**: the new one is written aside and swapped in
  complete (:func:`swap_in`, one atomic exchange where the file system offers it).
* **Any file name works**: work folders are named to fit the file system's name limit
  (:func:`work_path`), and text bound for ASCII-only fields is escaped (:func:`ascii_text`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import os
import posixpath
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsistore.errors import InputError, OutputExistsError

#: Suffix of an output's work folder while it is written.
PARTIAL_SUFFIX = ".partial"
#: The longest file name (in bytes) assumed where the file system does not say.
_NAME_MAX = 255

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class OutputKind:
    """What a command writes: ``name`` is the command (``ingest``), ``noun`` says what it
    writes in messages ("a wsistore archive"), and ``recognise`` tells one that wsistore
    wrote (so ``--overwrite`` may replace it)."""

    name: str
    noun: str
    recognise: Callable[[Path], bool]


# -- an output is never an input --------------------------------------------------------------
def check_not_input(output: PathLike, inputs: Iterable[PathLike], what: str = "output") -> None:
    """Refuse (one line, exit 2) an ``output`` that is one of ``inputs``, lies inside one, or
    is a folder holding one."""
    for given in inputs:
        how = relation(output, given)
        if how:
            shown, input_shown = os.fspath(output), os.fspath(given)
            raise InputError(f"the {what} {shown} {how} the input {input_shown}; choose another {what}")


def relation(output: PathLike, given: PathLike) -> str:
    """How ``output`` stands to ``given``: "is", "is inside", "holds", or "" (apart)."""
    return _Place.of(output).relation_to(_Place.of(given))


@dataclass(frozen=True)
class _Place:
    """A path or URL, normalised for comparison."""

    key: str  # resolved local path, or protocol://normalised path
    local: bool
    ident: tuple[int, int] | None  # device and inode of what exists there

    @classmethod
    def of(cls, given: PathLike) -> _Place:
        text = os.fspath(given)
        if "://" in text and not text.startswith("file://"):
            protocol, _, rest = text.partition("://")
            return cls(f"{protocol.lower()}://{posixpath.normpath('/' + rest).lstrip('/')}", False, None)
        path = os.path.realpath(text.removeprefix("file://"))
        try:
            st = os.stat(path)
            ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        return cls(path, True, ident)

    def relation_to(self, other: _Place) -> str:
        """How this place stands to ``other``: "is", "is inside", "holds", or "" (apart)."""
        if self.same_as(other):
            return "is"
        if self.inside(other):
            return "is inside"
        return "holds" if other.inside(self) else ""

    def same_as(self, other: _Place) -> bool:
        if self.local != other.local:
            return False
        return self.key == other.key or (self.ident is not None and self.ident == other.ident)

    def inside(self, other: _Place) -> bool:
        """Whether this lies strictly below ``other``."""
        if self.local != other.local:
            return False
        sep = "/" if not self.local else os.sep
        if self.key.startswith(other.key.rstrip(sep) + sep):
            return True
        if self.local and other.ident is not None:  # a parent reached another way (a bind mount)
            for parent in Path(self.key).parents:
                try:
                    st = os.stat(parent)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == other.ident:
                    return True
        return False


# -- --overwrite replaces only our own --------------------------------------------------------
def check_replaceable(path: Path, kind: OutputKind, shown: str = "", option: str = "--overwrite") -> None:
    """Refuse (one line, exit 4) to replace ``path`` (``shown`` as the user gave it) unless it
    is an output of ``kind``; ``option`` is what the user asked to replace it with."""
    name = shown or os.fspath(path)
    if path.is_symlink() or not kind.recognise(path):
        raise OutputExistsError(
            f"{name} is {describe(path)}, not {kind.noun}: {option} replaces only {kind.noun} "
            "(move it away or choose another output)"
        )


def occupied(path: Path) -> bool:
    """Whether anything is at ``path`` that a new output would replace: anything but nothing
    or an empty folder (a dangling symbolic link counts)."""
    if path.is_symlink():
        return True
    if path.is_dir():
        return any(True for _ in path.iterdir())
    return path.exists()


def describe(path: Path) -> str:
    """What is at ``path``, in a few words."""
    from wsistore.readers import SLIDE_SUFFIXES

    if path.is_symlink():
        return f"a symbolic link (to {os.readlink(path)})"
    if path.is_dir():
        try:
            entries = sum(1 for _ in path.iterdir())
        except OSError:
            return "a folder that cannot be listed"
        if (path / "zarr.json").is_file():
            return f"a Zarr folder ({entries} entries)"
        if not entries:
            return "an empty folder"
        return f"a folder holding {entries} {'entry' if entries == 1 else 'entries'}"
    if path.is_file():
        size = path.stat().st_size
        if path.suffix.lower() in SLIDE_SUFFIXES:
            return f"a slide or image file ({size:,} bytes)"
        return f"a file of another kind ({size:,} bytes)"
    return "not a regular file or folder"


# -- writing aside, swapping in ---------------------------------------------------------------
def work_path(final: Path) -> Path:
    """The work folder beside ``final`` (``final.partial``), its name shortened, with a hash
    of the full name, where ``final``'s name leaves no room for the suffix."""
    name = final.name + PARTIAL_SUFFIX
    limit = _name_max(final.parent)
    if len(os.fsencode(name)) <= limit:
        return final.with_name(name)
    digest = hashlib.sha256(os.fsencode(final.name)).hexdigest()[:16]
    tail = f"~{digest}{PARTIAL_SUFFIX}"
    head = os.fsencode(final.name)[: limit - len(tail)].decode("utf-8", "ignore")
    return final.with_name(head + tail)


def swap_in(new: Path, target: Path) -> Path | None:
    """Put ``new`` at ``target``. Where something is already there, the two are exchanged in
    one atomic step (Linux ``renameat2``), so a kill at any point leaves either the old output
    or the new one, whole; returns where the old one now is (``new``'s old path), for the
    caller to delete, or None when nothing was there."""
    if not _exists(target):
        os.replace(new, target)
        return None
    if _exchange(new, target):
        return new
    # no atomic exchange here (another OS, or a file system without it): two renames, with
    # the old output parked beside its work folder until the new one is in place
    parked = new.with_name(new.name + ".old")
    os.replace(target, parked)
    os.replace(new, target)
    return parked


def remove_tree(path: Path, last: str = "") -> None:
    """Delete a file or folder; in a folder, ``last`` (a marker naming what it is) goes after
    everything else, so a delete cut short still leaves it recognisable."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    empty_folder(path, last)
    path.rmdir()


def empty_folder(path: Path, last: str = "") -> None:
    """Delete everything in the folder ``path``, ``last`` after everything else."""
    for child in path.iterdir():
        if child.name == last:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    if last:
        (path / last).unlink(missing_ok=True)


def read_json_file(path: Path) -> Any:
    """The JSON in ``path``, or None where it is missing or not JSON: what the recognisers of
    each :class:`OutputKind` read (a marker file of the output they look for)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def ascii_text(text: str) -> str:
    """``text`` with every non-ASCII character escaped (``\\xe9``, ``\\u2013``): for fields
    such as TIFF's ImageDescription that must be 7-bit ASCII."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return _NAME_MAX


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc 2.28+), or None."""
    libc_name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange ``a`` and ``b``; False where the system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))
