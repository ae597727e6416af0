"""The installed wsistore version (a source tree that was never installed says so)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wsistore")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
