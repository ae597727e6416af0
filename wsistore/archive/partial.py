"""Complete-or-nothing outputs: the work directory, the journal of finished work, the landing.

Ingest (an archive) and restore (a TIFF or OME-Zarr) both write this way. Locally, work
happens in ``<OUT>.partial/``: the settings of the run, a journal of finished pieces and
the data; nothing at ``OUT`` is ever half-written, because the finished output is swapped
into place only when complete (one atomic exchange with an old output, which survives any
failure or kill before it: :func:`wsistore.outputs.swap_in`). ``resume`` continues from the
journal, and only with the same settings. Remote destinations (fsspec URLs such as ``s3://``: no atomic rename) are
written in place, and the completeness rule replaces the rename: the settings file is the
first thing written and the last removed (landing drops the journal, then it), and an
archive's manifest and group metadata are written after all of its data. A reader refuses
an output whose settings file is still there (:func:`unfinished`), or that lacks its
metadata or manifest, so an interrupted upload never looks complete; ``--resume`` goes on
from the journal beside the data. There ``--overwrite`` replaces only an interrupted upload
(object storage has no atomic swap, so a complete archive is never deleted to make room),
deleting its group metadata first, so a delete cut short leaves nothing complete-looking.
What may be replaced at all, and that an output is never an input, is
:mod:`wsistore.outputs`'s rule, checked here before anything is touched. Remote outputs
take no lock: one writer per URL is the caller's to ensure. An object-store restore output
would extend :meth:`PartialOutput.commit` here.

One writer at a time: :meth:`PartialOutput.prepare` takes an exclusive ``flock`` on the
work directory itself (non-blocking), so a second ingest or restore aimed at the same
``OUT`` fails at once with one line instead of writing into the same ``OUT.partial``. The
lock dies with its process, so a ``kill -9`` never leaves a stale lock in the way of
``--resume``; within one process a later ``prepare`` takes over the lock of an earlier,
abandoned run (an interrupted call whose traceback keeps it alive). Stray temporary files
of writes torn by a kill (``*.tmp``, zarr's ``*.<uuid>.partial``) are removed on resume,
so they never land in the output.

This module sits in ``archive/`` because it is built on :class:`Location`, the archive's
storage abstraction; restoration, a later layer, imports it from here.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from wsistore.archive.store import Location
from wsistore.errors import InputError, OutputExistsError
from wsistore.outputs import (
    OutputKind,
    check_not_input,
    check_replaceable,
    describe,
    empty_folder,
    occupied,
    remove_tree,
    swap_in,
    work_path,
)

#: The Zarr group's metadata: an archive's attributes, written last.
GROUP_METADATA = "zarr.json"
#: A journal entry's index: a row number (restore) or a shard's key (ingest).
Index = int | str
#: Temporary files of a write a kill tore: ``Location.write_bytes``'s and zarr's ``LocalStore``'s.
_TORN = re.compile(r"(\.tmp|\.[0-9a-f]{32}\.partial)$")
#: Work directories this process holds locked: (device, inode) -> (open descriptor, owner).
_HELD: dict[tuple[int, int], tuple[int, object]] = {}
_HELD_LOCK = threading.Lock()
T = TypeVar("T")
#: The runs that keep a work folder (their settings files name them).
KNOWN_RUNS = ("ingest", "restore", "prepare", "bench")


def write_complete(
    url: str | os.PathLike[str],
    kind: OutputKind,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str]],
    settings: dict[str, Any],
    write: Callable[[Path], T],
) -> T:
    """Write an output of ``kind`` that has no ``--resume``: ``write(folder)`` fills the work
    folder, which then lands complete at ``url``; returns what ``write`` returned."""
    output = PartialOutput.prepare(url, kind, overwrite, False, inputs=inputs)
    try:
        output.start(settings)
        result = write(output.work.path)
        output.commit()
    finally:
        output.release()
    return result


def settings_key(name: str) -> str:
    """The settings file of an output of ``name`` (``ingest``, ``restore``): written first,
    removed last."""
    return f"{name}-settings.json"


def unfinished(location: Location, name: str) -> bool:
    """Whether an output of ``name`` written in place at ``location`` is still unfinished
    (interrupted, or being written): its settings file is still there."""
    return location.exists(settings_key(name))


def nothing_to_resume(
    url: str | os.PathLike[str], kind: OutputKind, overwrite: bool, storage_options: dict[str, Any] | None = None
) -> bool:
    """Whether a run of ``kind`` asked to resume at ``url`` finds nothing to go on from (a run
    killed before it recorded its settings) and so may start afresh: locally, a work folder of
    ours without a settings file (or none), and no output at ``url`` that only ``overwrite`` may
    replace; remotely (written in place), nothing at ``url``. Anything else is
    :meth:`PartialOutput.prepare`'s to resume or refuse."""
    final = Location.parse(url, storage_options)
    if not final.is_local:
        return not final.exists()
    if occupied(final.path) and not overwrite:
        return False
    work = work_path(final.path)
    return not (work / settings_key(kind.name)).is_file() and not _not_ours(work, kind, os.fspath(work))


class OutputBusyError(OutputExistsError):
    """Another process is writing the same output."""


class PartialOutput:
    """One output being written: where the work happens, its journal, and how it lands."""

    def __init__(self, final: Location, work: Location, kind: OutputKind, overwrite: bool, resume: bool) -> None:
        self.final = final
        self.work = work
        self.kind = kind
        self.overwrite = overwrite
        self.resume = resume
        self.settings_key = settings_key(kind.name)
        # a local journal is one file appended to; a remote one a folder of one object per entry
        # (objects cannot be appended to, and rewriting one journal object per entry is quadratic)
        self.journal_key = f"{kind.name}-journal.jsonl" if work.is_local else f"{kind.name}-journal"
        self._lock: tuple[tuple[int, int], object] | None = None

    @classmethod
    def prepare(
        cls,
        url: str | os.PathLike[str],
        kind: OutputKind,
        overwrite: bool,
        resume: bool,
        storage_options: dict[str, Any] | None = None,
        inputs: Sequence[str | os.PathLike[str]] = (),
    ) -> PartialOutput:
        """Check the destination and open (or, with ``resume``, reopen) the work directory of an
        output of ``kind`` (its name, ``ingest`` or ``restore``, names the settings and journal
        files); ``storage_options`` configure a URL's filesystem. Refused before anything is
        touched: an output (or work folder) that is one of ``inputs``, holds one or lies inside
        one; an existing output without ``overwrite``; with it, one that is not of ``kind``."""
        final = Location.parse(url, storage_options)
        check_not_input(url, inputs)
        if not final.is_local:
            if final.exists() and not resume:
                if not overwrite:
                    raise OutputExistsError(f"{final.url} already exists; use --overwrite to replace it")
                if not unfinished(final, kind.name):
                    raise OutputExistsError(
                        f"{final.url} exists and is not an unfinished {kind.name}; object storage cannot swap a "
                        "new output in atomically, so --overwrite there replaces only an interrupted upload: write "
                        "to a new URL, then delete the old one"
                    )
                final.remove(GROUP_METADATA)  # first: what is left of a cut-short delete is incomplete
                final.fs.rm(final.root, recursive=True)
            return cls(final, final, kind, overwrite, resume)
        if occupied(final.path):
            if not overwrite:
                raise OutputExistsError(f"{final.url} already exists; use --overwrite to replace it")
            check_replaceable(final.path, kind, final.url)
        parent = final.path.parent
        if not parent.is_dir():
            raise InputError(f"cannot write {final.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write {final.path}: directory {parent} is not writable")
        work = Location.parse(work_path(final.path))
        check_not_input(work.path, inputs, "work folder")
        _check_work_folder(work.path, kind, os.fspath(work_path(Path(final.url))))
        if resume and not work.exists():
            raise InputError(f"nothing to resume: {work.path} does not exist")
        if not resume:
            try:
                work.path.mkdir(exist_ok=True)
            except OSError as exc:  # a read-only file system, or root's EPERM where access() said yes
                raise InputError(f"cannot write {final.path}: {exc.strerror or exc} ({parent})") from None
        output = cls(final, work, kind, overwrite, resume)
        output._lock = _lock_directory(work.path, final.path, resume)
        try:
            if occupied(final.path) and not overwrite:  # another writer landed it meanwhile
                raise OutputExistsError(f"{final.url} already exists; use --overwrite to replace it")
            if resume:
                _remove_torn(work.path)
            else:
                empty_folder(work.path, last=output.settings_key)  # the marker last: still ours if cut short
        except BaseException:
            output.release()
            raise
        return output

    def start(self, settings: dict[str, Any]) -> None:
        """Record ``settings`` and start an empty journal or, with ``resume``, check that the
        interrupted run had the same settings."""
        if not self.resume:
            self.work.write_bytes(self.settings_key, json.dumps(settings, indent=2, sort_keys=True).encode())
            self.work.remove(self.journal_key)
            return
        if not self.work.exists(self.settings_key):
            raise InputError(f"nothing to resume: {self.work.url} holds no interrupted run")
        previous = json.loads(self.work.read_bytes(self.settings_key))
        if previous != json.loads(json.dumps(settings)):
            changed = sorted(k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k))
            raise InputError(
                f"cannot resume {self.work.url}: it was started with different settings ({', '.join(changed)})"
            )
        self._drop_torn_line()

    def done(self, kind: str) -> dict[Index, Any]:
        """Journalled entries of ``kind``: index -> what was recorded."""
        if not self.work.exists(self.journal_key):
            return {}
        if self.work.is_local:
            lines = self.work.read_bytes(self.journal_key).decode().splitlines()
        else:
            lines = [b.decode() for b in self.work.read_many(self.work.walk_files(self.journal_key))]
        entries: dict[Index, Any] = {}
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by the interruption
            if entry.get("kind") == kind:
                entries[entry["index"]] = entry.get("data")
        return entries

    def journal(self, kind: str, index: Index, data: Any = None) -> None:
        """Durably record that entry ``index`` of ``kind`` is finished (callers serialise threads)."""
        line = json.dumps({"kind": kind, "index": index, "data": data})
        if self.work.is_local:
            self.work.append_line(self.journal_key, line)
        else:
            name = hashlib.sha256(json.dumps([kind, index]).encode()).hexdigest()[:32]
            self.work.write_bytes(f"{self.journal_key}/{name}.json", line.encode())

    def commit(self, produced: str = "") -> None:
        """Land the finished output: ``produced`` (a path inside the work directory) or, when
        empty, the work directory itself, without its settings and journal."""
        if self.work is self.final:  # in place: complete since its metadata was written
            self._drop_journal()
            return
        source = self.work.path / produced if produced else self.work.path
        target = self.final.path
        if produced and source.is_file():  # a write error the page cache held back surfaces here, before landing
            with open(source, "rb") as f:
                os.fsync(f.fileno())
        if occupied(target) and not self.overwrite:
            raise OutputExistsError(f"{self.final.url} appeared while writing; the result is left in {source}")
        if not produced:
            self._drop_journal()
        old = swap_in(source, target)
        if produced:  # the work folder, holding the old output if there was one
            remove_tree(self.work.path, last=self.settings_key)
        elif old is not None:  # the old archive, now where the work folder was
            remove_tree(old, last=GROUP_METADATA)
        self.release()

    def release(self) -> None:
        """Give up the lock on the work directory (landing does; a kill does by itself)."""
        if self._lock is not None:
            _unlock(self._lock)
            self._lock = None

    def _drop_torn_line(self) -> None:
        """Cut the journal back to its last whole line: an append the interruption tore (a full
        disk inside the write) leaves a fragment without its newline, and the next entry appended
        after it would join it on one unreadable line and be lost. (A remote journal's entries
        are whole objects.)"""
        if not self.work.is_local or not self.work.exists(self.journal_key):
            return
        data = self.work.read_bytes(self.journal_key)
        whole = data.rfind(b"\n") + 1
        if whole == len(data):
            return
        with open(self.work.path / self.journal_key, "r+b") as f:
            f.truncate(whole)
            f.flush()
            os.fsync(f.fileno())

    def _drop_journal(self) -> None:
        self.work.remove(self.journal_key)
        self.work.remove(self.settings_key)


def _lock_directory(work: Path, final: Path, resume: bool) -> tuple[tuple[int, int], object]:
    """Take the exclusive lock on the work directory ``work``; returns its (device, inode)
    and the token that owns the lock in this process."""
    for _ in range(20):
        try:
            fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if resume:
                raise InputError(f"nothing to resume: {work} does not exist") from None
            work.mkdir(exist_ok=True)
            continue
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        with _HELD_LOCK:
            if ident in _HELD:  # an earlier, abandoned run of this process: take its place
                os.close(_HELD.pop(ident)[0])
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputBusyError(
                        f"another ingest/restore is writing {final} (lock on {work} held by another process)"
                    ) from None
                raise
            try:
                now = os.stat(work)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == ident:
                token = object()
                _HELD[ident] = (fd, token)
                return ident, token
            os.close(fd)  # the directory was landed or replaced while we waited: look again
        if not resume:
            work.mkdir(exist_ok=True)
    raise OutputBusyError(f"another ingest/restore is writing {final} (its work directory {work} keeps changing)")


def _unlock(lock: tuple[tuple[int, int], object]) -> None:
    ident, token = lock
    with _HELD_LOCK:
        if ident in _HELD and _HELD[ident][1] is token:  # not taken over by a later run
            os.close(_HELD.pop(ident)[0])


def _check_work_folder(work: Path, kind: OutputKind, shown: str) -> None:
    """Refuse a work folder (``shown`` as the user's path names it) that is not ours
    (:func:`_not_ours`)."""
    why = _not_ours(work, kind, shown)
    if why:
        raise OutputExistsError(f"{shown} {why}")


def _not_ours(work: Path, kind: OutputKind, shown: str) -> str:
    """Why the work folder ``work`` is not a run of ``kind``'s to use, "" where it is: nothing
    there, an interrupted run of ``kind``, or what is left of an old output of ``kind`` that a
    landing replaced."""
    if not occupied(work):
        return ""
    if work.is_symlink() or not work.is_dir():
        return f"is in the way: it is {describe(work)}, where wsistore keeps its work folder"
    try:
        names = {child.name for child in work.iterdir()}
    except OSError as exc:
        raise InputError(f"cannot read the work folder {shown}: {exc.strerror or exc}") from None
    marker = settings_key(kind.name)  # or its ".tmp", where a full disk tore the run's first write
    if marker in names or f"{marker}.tmp" in names or kind.recognise(work):
        return ""
    others = [other for other in KNOWN_RUNS if settings_key(other) in names]
    what = f"an interrupted {others[0]}, not {kind.name}" if others else describe(work)
    return f"is {what}; wsistore keeps its work folder there and replaces only its own (move it away)"


def _remove_torn(work: Path) -> None:
    """Remove temporary files left by writes a kill interrupted."""
    for dirpath, _, files in os.walk(work):
        for name in files:
            if _TORN.search(name):
                os.unlink(os.path.join(dirpath, name))
