"""A stock OME-Zarr reader opens an archive: ome-zarr-py (what napari's napari-ome-zarr
plugin reads with), in a fresh interpreter that imports nothing of wsistore, finds the
multiscales, and level 0 is the stored pixels. The archive's AVIF chunks decode through
the codecs wsistore registers with zarr as an entry point (``zarr.codecs`` in pyproject)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wsistore.archive.reader import Archive

READ = """
import json, sys
import numpy as np
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader

location = parse_url(sys.argv[1])
assert location is not None, "not an OME-Zarr"
node = next(iter(Reader(location)()))
assert any(isinstance(spec, Multiscales) for spec in node.specs), node.specs
np.save(sys.argv[2], np.asarray(node.data[0]))
meta = node.metadata
print(json.dumps({
    "version": location.version,
    "shapes": [list(level.shape) for level in node.data],
    "axes": [axis["name"] for axis in meta["axes"]],
    "scales": [t[0]["scale"] for t in meta["coordinateTransformations"]],
    "wsistore_loaded": any(m.startswith("wsistore") for m in sys.modules),
}))
"""


def test_ome_zarr_py_reads_the_stored_pyramid(sample_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "level0.npy"
    run = subprocess.run(
        [sys.executable, "-c", READ, str(sample_archive), str(out)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])

    archive = Archive.open(sample_archive)
    levels = archive.levels
    assert got["version"] == "0.5" and got["axes"] == ["c", "y", "x"]
    assert got["shapes"] == [[3, lv.height, lv.width] for lv in levels]  # the LR pyramid, 4x reduced
    assert got["scales"][0] == pytest.approx([1.0, 0.499 * 4, 0.499 * 4])  # micrometres per stored pixel
    assert got["wsistore_loaded"]  # the codec entry point, not this test, brought it in

    level0 = archive.level(0)
    stored = level0.read((0, 0, level0.width, level0.height))  # (y, x, c)
    assert np.array_equal(np.load(out), stored.transpose(2, 0, 1))
