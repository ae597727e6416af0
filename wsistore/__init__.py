"""wsistore: archive whole-slide images at reduced resolution in Zarr, rebuild them with
super-resolution."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsistore.restore.ondemand import RestoredSlide

try:
    __version__ = version("wsistore")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

__all__ = ["__version__", "open"]


def open(archive: str | os.PathLike[str], model: Any = None, device: str = "auto", **options: Any) -> RestoredSlide:  # noqa: A001
    """An archive as a full-resolution slide with OpenSlide's API, level 0 super-resolved
    on demand by ``model`` (a shipped name, ``bicubic``, a weights file or a loaded
    generator; default: the best shipped weights, else bicubic). Options:
    ``cache_bytes``, ``workers`` (see :func:`wsistore.restore.ondemand.open_restored`)."""
    from wsistore.restore.ondemand import open_restored

    return open_restored(archive, model, device, **options)
