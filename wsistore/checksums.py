"""File checksums (standard library only, so every part of wsistore can use them)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Streaming sha256 of a file, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_files(files: Sequence[Path], root: Path) -> tuple[str, dict[str, str]]:
    """The fingerprint of a source read from ``files``, and each file's sha256 by its name
    relative to ``root``: one file's own sha256, or for several the sha256 of their list as
    ``sha256sum`` prints it (``HEX  NAME`` lines, sorted by name)."""
    digests = {_relative(path, root): sha256_file(path) for path in files}
    if len(files) == 1:
        return next(iter(digests.values())), digests
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(listing.encode()).hexdigest(), digests


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name
