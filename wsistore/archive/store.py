"""Where an archive lives: a local directory or an fsspec URL.

Local archives are written under a temporary sibling name and renamed into place when
complete; remote ones (no atomic rename) are complete once the group metadata is
written, which always happens last.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import zarr
from zarr.storage import FsspecStore, LocalStore

from wsistore.errors import ArchiveError, InputError, OutputExistsError

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class Location:
    """A directory-like place holding one archive."""

    url: str
    fs: Any
    root: str

    @classmethod
    def parse(cls, url: str | os.PathLike[str]) -> Location:
        text = os.fspath(url)
        fs, root = fsspec.core.url_to_fs(text)
        return cls(url=text, fs=fs, root=root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    @property
    def path(self) -> Path:
        return Path(self.root)

    def key(self, key: str) -> str:
        return f"{self.root}/{key}"

    def exists(self, key: str = "") -> bool:
        return bool(self.fs.exists(self.key(key) if key else self.root))

    def read_bytes(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self.key(key)))
        except FileNotFoundError:
            raise ArchiveError(f"{self.url}: {key} is missing") from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return bytes(self.fs.cat_file(self.key(key), start=start, end=end))

    def size(self, key: str) -> int:
        return int(self.fs.size(self.key(key)))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a small file; locally via a temporary file, renamed, so it is never torn."""
        if self.is_local:
            target = self.path / key
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(self.key(key), data)

    def append_line(self, key: str, line: str) -> None:
        """Append one line durably (the ingest journal)."""
        if self.is_local:
            with open(self.path / key, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        else:
            old = self.fs.cat_file(self.key(key)).decode() if self.exists(key) else ""
            self.fs.pipe_file(self.key(key), (old + line + "\n").encode())

    def remove(self, key: str) -> None:
        if self.exists(key):
            self.fs.rm(self.key(key))

    def walk_files(self, prefix: str) -> list[str]:
        """Keys of all files under ``prefix`` (relative to the root)."""
        base = self.key(prefix)
        if not self.fs.exists(base):
            return []
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(base))

    def zarr_store(self, read_only: bool) -> Any:
        if self.is_local:
            return LocalStore(self.root, read_only=read_only)
        return FsspecStore.from_url(self.url, read_only=read_only)

    def open_group(self, mode: str) -> zarr.Group:
        return zarr.open_group(store=self.zarr_store(read_only=(mode == "r")), mode=mode, zarr_format=3)


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return tuple(proto) if isinstance(proto, (tuple, list)) else (proto,)


@dataclass
class Destination:
    """Where a writer puts a new archive, and how it lands.

    Local: work happens in ``<dest>.partial``; :meth:`commit` renames it into place
    (replacing an old archive only with ``overwrite``). Remote: work happens in place.
    """

    final: Location
    work: Location
    overwrite: bool

    @classmethod
    def prepare(cls, url: str | os.PathLike[str], overwrite: bool, resume: bool) -> Destination:
        final = Location.parse(url)
        if final.exists() and not overwrite and not (resume and not final.is_local):
            raise OutputExistsError(f"{final.url} already exists; use --overwrite to replace it")
        if not final.is_local:
            if final.exists() and overwrite and not resume:
                final.fs.rm(final.root, recursive=True)
            return cls(final=final, work=final, overwrite=overwrite)
        parent = final.path.parent
        if not parent.is_dir():
            raise InputError(f"cannot write {final.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write {final.path}: directory {parent} is not writable")
        work = Location.parse(str(final.path) + PARTIAL_SUFFIX)
        if work.exists() and not resume:
            shutil.rmtree(work.path)
        if resume and not work.exists():
            raise InputError(f"nothing to resume: {work.path} does not exist")
        work.path.mkdir(exist_ok=True)
        return cls(final=final, work=work, overwrite=overwrite)

    def commit(self) -> None:
        """Move the finished archive into place."""
        if self.work is self.final:
            return
        if self.final.exists():
            if not self.overwrite:
                raise OutputExistsError(f"{self.final.url} appeared while writing; left the new archive at {self.work.path}")
            old = self.final.path.with_name(self.final.path.name + ".old")
            os.replace(self.final.path, old)
            os.replace(self.work.path, self.final.path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(self.work.path, self.final.path)
