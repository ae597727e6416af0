"""Batches on dask.distributed (a LocalCluster of worker processes on 127.0.0.1): the archives
and restores a cluster makes are byte-identical to the serial ones, GPU restore tasks ask
for the worker resource and each worker loads its model once, and a worker killed
mid-batch costs only the tasks it held."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import wsistore
from benchmarks.reliability.faults import compare_archives, compare_tiffs
from tests.archive.test_adaptation import QUICK_ADAPT
from tests.batch.conftest import OPTIONS, SLIDES, ingest_tasks
from tests.cli.test_cli import assert_one_line_error, run
from tests.data import SLIDE
from wsistore.batch import OK, IngestJob, RestoreJob, plan, run_batch, task_resources
from wsistore.errors import InputError
from wsistore.restoration.pipeline import RestoreOptions


def _same_archives(out: Path, reference: Path) -> None:
    for slide in SLIDES:
        name = slide.stem + ".zarr"
        assert compare_archives(out / name, reference / name) == [], name


def test_workers_run_this_checkout(client: Any) -> None:
    assert set(client.run(lambda: wsistore.__file__).values()) == {wsistore.__file__}


def test_cluster_archives_are_the_serial_ones(client: Any, tmp_path: Path, serial_archives: Path) -> None:
    rows = run_batch(ingest_tasks(tmp_path), IngestJob(OPTIONS), client, progress=False)
    assert [r.status for r in rows] == [OK] * len(SLIDES) and [r.slide for r in rows] == [str(s) for s in SLIDES]
    _same_archives(tmp_path, serial_archives)


def test_cluster_adaptation_is_the_serial_one(client: Any, tmp_path: Path) -> None:
    """The per-slide adaptation tuned on a worker process gives the same bytes as in this one."""
    options = replace(OPTIONS, adapt=QUICK_ADAPT)
    for where in ("serial", "cluster"):
        (tmp_path / where).mkdir()
    serial = run_batch(plan([SLIDE], tmp_path / "serial", ".zarr"), IngestJob(options), progress=False)
    rows = run_batch(plan([SLIDE], tmp_path / "cluster", ".zarr"), IngestJob(options), client, progress=False)
    assert [r.status for r in serial] == [r.status for r in rows] == [OK], rows
    name = SLIDE.stem + ".zarr"
    assert compare_archives(tmp_path / "cluster" / name, tmp_path / "serial" / name) == []
    assert wsistore.Archive.open(tmp_path / "cluster" / name).adaptation() is not None


def _loaded_runners() -> int:
    from wsistore.restoration import engine

    return len(engine._RUNNERS)


def test_cluster_restores_are_the_serial_ones_one_model_per_gpu_worker(
    client: Any, tmp_path: Path, serial_archives: Path, tiny_edsr: Path
) -> None:
    archives = [serial_archives / (s.stem + ".zarr") for s in SLIDES[:3]]
    options = RestoreOptions(model=str(tiny_edsr), device="auto", tile=256, workers=1, lossless=True)
    job = RestoreJob(options)
    resources = task_resources(client, "auto")
    assert resources == {"GPU": 1} and task_resources(client, "cpu") is None
    (tmp_path / "serial").mkdir()
    (tmp_path / "cluster").mkdir()
    serial = run_batch(plan(archives, tmp_path / "serial", ".tif"), job, progress=False)
    rows = run_batch(plan(archives, tmp_path / "cluster", ".tif"), job, client, resources=resources, progress=False)
    assert [r.status for r in serial] == [r.status for r in rows] == [OK] * 3, rows
    for a, b in zip(rows, serial, strict=True):
        assert compare_tiffs(Path(a.output), Path(b.output)) == []
    assert set(client.run(_loaded_runners).values()) <= {0, 1}  # one model per worker process


@pytest.fixture
def plain_cluster() -> Any:
    """A 2-process LocalCluster on 127.0.0.1 without GPU resources."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(host="127.0.0.1", dashboard_address=None, n_workers=2, threads_per_worker=1) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _busy_worker(client: Any, timeout: float = 120) -> str:
    """The address of a worker running a slide of the batch."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for worker, keys in client.processing().items():
            if any(str(k).startswith("wsistore-") for k in keys):
                return str(worker)
        time.sleep(0.05)
    raise AssertionError("no worker took a slide")


def _rerun_keys(dask_scheduler: Any) -> list[str]:
    """Keys the scheduler took back from a worker it lost while they were processing."""
    return [str(t[0]) for t in dask_scheduler.transition_log if t[1:3] == ("processing", "released")]


def test_a_killed_worker_costs_only_its_tasks(plain_cluster: Any, tmp_path: Path, serial_archives: Path) -> None:
    with pytest.raises(InputError, match="GPU resource"):
        task_resources(plain_cluster, "cuda")
    pids = plain_cluster.run(os.getpid)
    summary = tmp_path / "summary.json"
    with ThreadPoolExecutor(1) as pool:
        batch = pool.submit(
            run_batch, ingest_tasks(tmp_path / "out"), IngestJob(OPTIONS), plain_cluster, summary, progress=False
        )
        worker = _busy_worker(plain_cluster)
        held = {str(k) for k in plain_cluster.processing()[worker]}
        victim = pids[worker]
        os.kill(victim, signal.SIGKILL)
        rows = batch.result(timeout=600)
    assert held <= set(plain_cluster.run_on_scheduler(_rerun_keys))  # the tasks it held ran again elsewhere
    assert victim not in plain_cluster.run(os.getpid).values()  # its nanny started a new worker
    if any(r.status != OK for r in rows):  # the scheduler gave up on a slide: --resume finishes it
        rows = run_batch(ingest_tasks(tmp_path / "out"), IngestJob(OPTIONS, resume=True), plain_cluster, progress=False)
    assert all(r.status in ("ok", "skipped") for r in rows), rows
    _same_archives(tmp_path / "out", serial_archives)


def test_the_command_line_runs_on_a_scheduler(client: Any, tmp_path: Path, serial_archives: Path) -> None:
    address = client.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    result = run("ingest", str(SLIDES[2]), "--output-dir", str(tmp_path), "--scheduler", address, "--quiet")
    assert result.returncode == 0, result.stderr
    name = f"{SLIDES[2].stem}.zarr"
    assert compare_archives(tmp_path / name, serial_archives / name) == []
    unreachable = run("verify", str(tmp_path / name), str(tmp_path / "x.zarr"), "--scheduler", "tcp://127.0.0.1:9")
    assert_one_line_error(unreachable, 2, "cannot reach the scheduler")
