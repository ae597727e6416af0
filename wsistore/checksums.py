"""File checksums (standard library only, so every part of wsistore can use them)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Streaming sha256 of a file, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()
