"""Where an archive lives: a local directory or an fsspec URL, read and written by key.

A URL's filesystem (``s3://`` through s3fs, ...) is configured the standard ways: its own
environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), fsspec's
configuration (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec``), or ``storage_options``
passed here (the command line's ``--storage-options JSON``), which take precedence. Zarr
reads and writes a URL through an asynchronous :class:`~zarr.storage.FsspecStore` made
with the same options.

How a new output is written and lands (``.partial``, journal, rename) is
:mod:`wsistore.archive.partial`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fsspec
import zarr
from zarr.storage import FsspecStore, LocalStore

from wsistore.errors import ArchiveError, InputError, first_line


@dataclass(frozen=True)
class Location:
    """A directory-like place holding one archive."""

    url: str
    fs: Any
    root: str
    #: fsspec options of a URL's filesystem (credentials, endpoint): never shown or compared
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Location:
        """The place ``url`` names; ``storage_options`` configure a URL's filesystem."""
        text = os.fspath(url)
        options = dict(storage_options or {})
        try:
            fs, root = fsspec.core.url_to_fs(text, **options)
        except (ImportError, ValueError, TypeError) as exc:  # no s3fs, an unknown protocol or option
            raise InputError(f"cannot open {text}: {first_line(exc)}") from None
        return cls(url=text, fs=fs, root=root.rstrip("/"), storage_options=options)

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

    def read_many(self, keys: list[str]) -> list[bytes]:
        """The bytes of several files, fetched concurrently from object storage."""
        paths = [self.key(k) for k in keys]
        found = self.fs.cat(paths) if paths else {}
        return [bytes(found[p]) for p in paths]

    def append_line(self, key: str, line: str) -> None:
        """Append one line durably to a local file (a journal; object storage cannot append)."""
        with open(self.path / key, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove(self, key: str) -> None:
        """Remove a file, or a folder with everything in it."""
        if self.exists(key):
            self.fs.rm(self.key(key), recursive=True)

    def walk_files(self, prefix: str) -> list[str]:
        """Keys of all files under ``prefix`` (relative to the root)."""
        base = self.key(prefix)
        if not self.fs.exists(base):
            return []
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(base))

    def zarr_store(self, read_only: bool) -> Any:
        if self.is_local:
            return LocalStore(self.root, read_only=read_only)
        return FsspecStore.from_url(self.url, storage_options=self.storage_options, read_only=read_only)

    def open_group(self, mode: Literal["r", "r+", "a", "w", "w-"]) -> zarr.Group:
        return zarr.open_group(store=self.zarr_store(read_only=(mode == "r")), mode=mode, zarr_format=3)


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return tuple(proto) if isinstance(proto, (tuple, list)) else (proto,)
