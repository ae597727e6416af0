"""Batch fixtures: four real slides (the three small JPEG 2000 Aperio SVS and the sample), their
archives made serially, and a 2-worker dask LocalCluster on 127.0.0.1 whose workers offer
the GPU resource (they are CPU workers: the resource logic is what is tested)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.data import SHARED, SLIDE
from tests.restoration.conftest import tiny_edsr  # noqa: F401  (the restore tests' tiny seeded EDSR)
from wsistore.archive.writer import IngestOptions
from wsistore.batch import IngestJob, Task, plan, run_batch
from wsistore.restoration.hybrid import SrPath

#: The batch: four real slides, small enough for a CPU test run.
SLIDES = [SHARED / "slides" / f"kidney_tcga-5P-A9K0-monusac-{i}_aperio-jp2k.svs" for i in (1, 2, 3)] + [SLIDE]
#: Ingest settings of every batch test: one thread per slide, each chunk's restorer chosen (as
#: the CLI does).
OPTIONS = IngestOptions(workers=1, progress=False, upscaler=SrPath())


def ingest_tasks(out_dir: Path) -> list[Task]:
    """The batch's ingest tasks into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return plan(SLIDES, out_dir, ".zarr")


@pytest.fixture(scope="session")
def serial_archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The batch ingested serially in this process: the reference for the cluster runs."""
    out = tmp_path_factory.mktemp("serial")
    rows = run_batch(ingest_tasks(out), IngestJob(OPTIONS), progress=False)
    assert all(r.status == "ok" for r in rows), rows
    return out


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A client of a 2-process LocalCluster on 127.0.0.1, each worker offering ``GPU: 1``."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            host="127.0.0.1", dashboard_address=None, n_workers=2, threads_per_worker=1, resources={"GPU": 1}
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c
