"""wsistore: archive whole-slide images at reduced resolution in Zarr, rebuild them with
super-resolution.

The library in five names, loaded on first use so that ``import wsistore`` stays cheap::

    wsistore.ingest(slide, archive)      # readers -> Zarr v3 archive   (wsistore.archive.writer)
    wsistore.verify(archive)             # checksums, manifest, source  (wsistore.archive.verify)
    wsistore.Archive.open(archive)       # the stored LR pyramid        (wsistore.archive.reader)
    wsistore.restore(archive, out)       # full-resolution TIFF / OME-Zarr (wsistore.restoration.pipeline)
    wsistore.open(archive)               # OpenSlide's API, SR on demand (wsistore.restoration.ondemand)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wsistore._version import __version__

if TYPE_CHECKING:
    from wsistore.archive.reader import Archive
    from wsistore.archive.verify import verify
    from wsistore.archive.writer import ingest
    from wsistore.restoration.ondemand import open_restored as open  # noqa: A004
    from wsistore.restoration.pipeline import restore

__all__ = ["Archive", "__version__", "ingest", "open", "restore", "verify"]

#: Public name -> (module, attribute): the explicit table behind the lazy re-exports.
_EXPORTS: dict[str, tuple[str, str]] = {
    "Archive": ("wsistore.archive.reader", "Archive"),
    "ingest": ("wsistore.archive.writer", "ingest"),
    "verify": ("wsistore.archive.verify", "verify"),
    "restore": ("wsistore.restoration.pipeline", "restore"),
    "open": ("wsistore.restoration.ondemand", "open_restored"),
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wsistore' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
