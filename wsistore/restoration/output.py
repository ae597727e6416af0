"""Complete-or-nothing restore outputs.

Work happens in ``<OUT>.partial/`` (the settings, a journal of finished rows, the data);
the finished file or OME-Zarr directory is renamed to ``OUT`` only when complete, so
nothing at ``OUT`` is ever half-written. ``--resume`` continues from the journal when the
settings are the same.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from wsistore.archive.store import PARTIAL_SUFFIX
from wsistore.errors import InputError, OutputExistsError

SETTINGS_FILE = "restore-settings.json"
JOURNAL_FILE = "restore-journal.jsonl"


class RestoreOutput:
    """The work directory of one restore and the rename that finishes it."""

    def __init__(self, final: Path, work: Path, overwrite: bool) -> None:
        self.final = final
        self.work = work
        self.overwrite = overwrite

    @classmethod
    def prepare(cls, out: str | os.PathLike[str], settings: dict[str, Any], overwrite: bool, resume: bool) -> RestoreOutput:
        """Check the destination and open (or, with ``resume``, reopen) the work directory."""
        text = os.fspath(out)
        if "://" in text:
            raise InputError(f"restore writes local files; {text} is a URL")
        final = Path(text).absolute()
        if (final.exists() or final.is_symlink()) and not overwrite:
            raise OutputExistsError(f"{final} already exists; use --overwrite to replace it")
        if not final.parent.is_dir():
            raise InputError(f"cannot write {final}: directory {final.parent} does not exist")
        if not os.access(final.parent, os.W_OK):
            raise InputError(f"cannot write {final}: directory {final.parent} is not writable")
        work = final.with_name(final.name + PARTIAL_SUFFIX)
        if resume:
            if not (work / SETTINGS_FILE).is_file():
                raise InputError(f"nothing to resume: {work} does not exist")
            previous = json.loads((work / SETTINGS_FILE).read_text())
            if previous != json.loads(json.dumps(settings)):
                changed = sorted(k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k))
                raise InputError(f"cannot resume {work}: it was started with different settings ({', '.join(changed)})")
        else:
            if work.exists():
                shutil.rmtree(work)
            work.mkdir()
            (work / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True))
        return cls(final, work, overwrite)

    def done(self, kind: str) -> dict[int, Any]:
        """Journalled entries of ``kind``: index -> what was recorded."""
        path = self.work / JOURNAL_FILE
        if not path.is_file():
            return {}
        entries: dict[int, Any] = {}
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by the interruption
            if record.get("kind") == kind:
                entries[int(record["index"])] = record.get("data")
        return entries

    def journal(self, kind: str, index: int, data: Any = None) -> None:
        """Durably record that entry ``index`` of ``kind`` is finished."""
        with open(self.work / JOURNAL_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "index": index, "data": data}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def commit(self, produced: Path) -> None:
        """Move the finished ``produced`` (inside the work directory) to the destination."""
        if self.final.exists() or self.final.is_symlink():
            if not self.overwrite:
                raise OutputExistsError(f"{self.final} appeared while restoring; the result is left in {self.work}")
            old = self.final.with_name(self.final.name + ".old")
            os.replace(self.final, old)
            os.replace(produced, self.final)
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            os.replace(produced, self.final)
        shutil.rmtree(self.work)
