"""The installed wsistore version (a source tree that was never installed says so)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wsistore")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"


def software_versions(*packages: str) -> dict[str, str]:
    """``{"wsistore": ..., package: version}`` for provenance records; "unknown" where a
    package is not installed."""
    versions = {"wsistore": __version__}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions
