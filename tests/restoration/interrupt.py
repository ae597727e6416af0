"""A restore interrupted (Ctrl-C) after some rows of tiles, for the --resume tests of every format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsistore.restoration.pipeline import RestoreOptions, restore


def interrupted_restore(
    monkeypatch: pytest.MonkeyPatch, codec: type, archive: Path, out: Path, options: RestoreOptions, tiles: int
) -> None:
    """Restore ``archive`` to ``out`` until ``codec.encode`` has made ``tiles`` tiles, then
    interrupt it; check that only ``OUT.partial`` is left, and put the encoder back."""
    encode = codec.encode
    calls = 0

    def interrupt_after_some_tiles(self: Any, tile: np.ndarray) -> bytes:
        nonlocal calls
        calls += 1
        if calls > tiles:
            raise KeyboardInterrupt
        return bytes(encode(self, tile))

    monkeypatch.setattr(codec, "encode", interrupt_after_some_tiles)
    with pytest.raises(KeyboardInterrupt):
        restore(archive, out, options)
    monkeypatch.setattr(codec, "encode", encode)
    assert not out.exists() and out.with_name(out.name + ".partial").is_dir()
