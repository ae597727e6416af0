"""Complete-or-nothing outputs: the work directory, the journal of finished work, the landing.

Ingest (an archive) and restore (a TIFF or OME-Zarr) both write this way. Locally, work
happens in ``<OUT>.partial/``: the settings of the run, a journal of finished pieces and
the data; nothing at ``OUT`` is ever half-written, because the finished output is renamed
into place only when complete. ``resume`` continues from the journal, and only with the
same settings. Remote destinations (fsspec URLs: no atomic rename) are written in place
and are complete once their metadata, written last, exists; landing one just drops the
journal. An object-store restore output would extend :meth:`PartialOutput.commit` here.

This module sits in ``archive/`` because it is built on :class:`Location`, the archive's
storage abstraction; restoration, a later layer, imports it from here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from wsistore.archive.store import PARTIAL_SUFFIX, Location
from wsistore.errors import InputError, OutputExistsError

#: A journal entry's index: a row number (restore) or a shard's key (ingest).
Index = int | str


class PartialOutput:
    """One output being written: where the work happens, its journal, and how it lands."""

    def __init__(self, final: Location, work: Location, name: str, overwrite: bool, resume: bool) -> None:
        self.final = final
        self.work = work
        self.overwrite = overwrite
        self.resume = resume
        self.settings_key = f"{name}-settings.json"
        self.journal_key = f"{name}-journal.jsonl"

    @classmethod
    def prepare(cls, url: str | os.PathLike[str], name: str, overwrite: bool, resume: bool) -> PartialOutput:
        """Check the destination and open (or, with ``resume``, reopen) the work directory;
        ``name`` (``ingest``, ``restore``) names the settings and journal files."""
        final = Location.parse(url)
        if not final.is_local:
            if final.exists() and not overwrite and not resume:
                raise OutputExistsError(f"{final.url} already exists; use --overwrite to replace it")
            if final.exists() and overwrite and not resume:
                final.fs.rm(final.root, recursive=True)
            return cls(final, final, name, overwrite, resume)
        if _exists(final.path) and not overwrite:
            raise OutputExistsError(f"{final.url} already exists; use --overwrite to replace it")
        parent = final.path.parent
        if not parent.is_dir():
            raise InputError(f"cannot write {final.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write {final.path}: directory {parent} is not writable")
        work = Location.parse(str(final.path) + PARTIAL_SUFFIX)
        if resume and not work.exists():
            raise InputError(f"nothing to resume: {work.path} does not exist")
        if work.exists() and not resume:
            shutil.rmtree(work.path)
        work.path.mkdir(exist_ok=True)
        return cls(final, work, name, overwrite, resume)

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

    def done(self, kind: str) -> dict[Index, Any]:
        """Journalled entries of ``kind``: index -> what was recorded."""
        if not self.work.exists(self.journal_key):
            return {}
        entries: dict[Index, Any] = {}
        for line in self.work.read_bytes(self.journal_key).decode().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by the interruption
            if entry.get("kind") == kind:
                entries[entry["index"]] = entry.get("data")
        return entries

    def journal(self, kind: str, index: Index, data: Any = None) -> None:
        """Durably record that entry ``index`` of ``kind`` is finished (callers serialise threads)."""
        self.work.append_line(self.journal_key, json.dumps({"kind": kind, "index": index, "data": data}))

    def commit(self, produced: str = "") -> None:
        """Land the finished output: ``produced`` (a path inside the work directory) or, when
        empty, the work directory itself, without its settings and journal."""
        if self.work is self.final:  # in place: complete since its metadata was written
            self._drop_journal()
            return
        source = self.work.path / produced if produced else self.work.path
        target = self.final.path
        if _exists(target) and not self.overwrite:
            raise OutputExistsError(f"{self.final.url} appeared while writing; the result is left in {source}")
        if not produced:
            self._drop_journal()
        if _exists(target):
            old = target.with_name(target.name + ".old")
            os.replace(target, old)
            os.replace(source, target)
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            os.replace(source, target)
        if produced:
            shutil.rmtree(self.work.path)

    def _drop_journal(self) -> None:
        self.work.remove(self.journal_key)
        self.work.remove(self.settings_key)


def _exists(path: Path) -> bool:
    """Whether anything, even a dangling link, is at ``path``."""
    return path.exists() or path.is_symlink()
