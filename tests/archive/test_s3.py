"""Archives on object storage, against a real S3 server (moto's, on 127.0.0.1: see
conftest.py): ingest to ``s3://``, ``info``, ``verify --against``, restore to a local
TIFF and ``wsistore.open`` on demand, each equal to the same on a local archive; the
endpoint from AWS's environment variables, fsspec's configuration or ``--storage-options``;
an upload killed mid-run, refused as unfinished and then resumed to the bytes of an
uninterrupted ingest; a server gone mid-write: one line, a non-zero exit, nothing complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import wsistore
from benchmarks.reliability import faults
from tests.s3 import S3, aws_environment
from wsistore.archive.partial import settings_key
from wsistore.archive.reader import Archive
from wsistore.archive.store import Location
from wsistore.archive.verify import verify
from wsistore.archive.writer import IngestOptions, ingest
from wsistore.errors import ArchiveError, OutputExistsError
from wsistore.restoration.hybrid import SrPath
from wsistore.restoration.pipeline import RestoreOptions, restore

#: Small shards, so that an ingest uploads many objects one after another (kill windows).
SMALL = ("--chunk", "128", "--shard", "128", "--workers", "1", "--quiet")
RESTORE = RestoreOptions(model="bicubic", device="cpu", tile=256, workers=1, region=(0, 512, 768, 512), progress=False)


def child_env(extra: dict[str, str] | None = None, drop: str = "") -> dict[str, str]:
    """A child's environment: this checkout's code (faults.ENV), the AWS variables of the
    server fixture, then ``extra``, without the variable ``drop``."""
    env = {k: v for k, v in faults.ENV.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env |= {k: v for k, v in os.environ.items() if k.startswith("AWS_")} | (extra or {})
    env.pop(drop, None)
    return env


def cli(*args: str, env: dict[str, str] | None = None, drop: str = "") -> subprocess.CompletedProcess[str]:
    """``wsistore ARGS`` in a child process (see :func:`child_env`)."""
    return subprocess.run(faults.wsistore(*args), capture_output=True, text=True, env=child_env(env, drop))


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsistore") and " error: " in lines[0], result.stderr
    return lines[0]


def shard_objects(s3: S3, name: str) -> list[str]:
    return [k for k in s3.keys(name) if "/c/" in k]


@pytest.fixture(scope="module")
def s3_archive(s3: S3, slide_path: Path) -> str:
    """The sample slide ingested straight to S3 with the default settings."""
    url = s3.url("sample.zarr")
    ingest(slide_path, url, IngestOptions(progress=False))
    return url


def test_ingest_to_s3_stores_the_bytes_of_a_local_ingest(
    s3: S3, s3_archive: str, sample_archive: Path, slide_path: Path
) -> None:
    local = sorted(str(p.relative_to(sample_archive)) for p in sample_archive.rglob("*") if p.is_file())
    assert s3.keys("sample.zarr") == local  # no settings or journal left behind
    for key in local:
        if "/c/" in key or key == "manifest.json":
            assert s3.fs.cat_file(f"{s3_archive[5:]}/{key}") == (sample_archive / key).read_bytes(), key
    with pytest.raises(OutputExistsError, match="already exists; use --overwrite"):
        ingest(slide_path, s3_archive, IngestOptions(progress=False))


def test_info_and_verify_against_the_source(s3_archive: str, sample_archive: Path, slide_path: Path) -> None:
    info = cli("info", s3_archive, "--json")
    assert info.returncode == 0, info.stderr
    remote, local = json.loads(info.stdout), Archive.open(sample_archive).info()
    assert remote["archive"] == s3_archive
    differ = {"archive", "created"}
    assert {k: v for k, v in remote.items() if k not in differ} == {k: v for k, v in local.items() if k not in differ}
    checked = cli("verify", s3_archive, "--against", str(slide_path), "--quiet")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().splitlines()[-1].startswith("OK: ") and "source matches" in checked.stdout
    report = verify(s3_archive, against=slide_path, progress=False)
    assert report.ok and report.chunks == verify(sample_archive, progress=False).chunks


def test_the_endpoint_from_storage_options_or_fsspec_config(s3: S3, s3_archive: str) -> None:
    without = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # a closed port: it must not be what is used
    flag = cli("info", s3_archive, "--storage-options", json.dumps({"endpoint_url": s3.endpoint}), env=without)
    assert flag.returncode == 0 and f"{s3_archive} (format" in flag.stdout, flag.stderr
    config = cli("info", s3_archive, env={"FSSPEC_S3_ENDPOINT_URL": s3.endpoint}, drop="AWS_ENDPOINT_URL")
    assert config.returncode == 0 and f"{s3_archive} (format" in config.stdout, config.stderr
    archive = Archive.open(s3_archive, storage_options={"endpoint_url": s3.endpoint})
    assert archive.location.storage_options == {"endpoint_url": s3.endpoint}
    bad = cli("info", s3_archive, "--storage-options", "[1]")
    assert bad.returncode == 2 and "must be a JSON object" in one_line(bad)


def test_restore_from_s3_to_a_local_tiff(s3_archive: str, sample_archive: Path, tmp_path: Path) -> None:
    remote = restore(s3_archive, tmp_path / "remote.tif", RESTORE)
    restore(sample_archive, tmp_path / "local.tif", RESTORE)
    assert remote.output == str(tmp_path / "remote.tif")
    # every page's pixels equal; the bytes differ only by the provenance, which names the archive
    assert faults.compare_tiffs(tmp_path / "remote.tif", tmp_path / "local.tif") == ["same pixels, different bytes"]
    assert s3_archive.encode() in (tmp_path / "remote.tif").read_bytes()


def test_open_on_demand_from_s3(s3_archive: str, sample_archive: Path) -> None:
    with wsistore.open(s3_archive, model="bicubic", device="cpu") as remote:
        with wsistore.open(sample_archive, model="bicubic", device="cpu") as local:
            assert remote.dimensions == local.dimensions == (2220, 2967)
            a, b = (np.asarray(s.read_region((900, 1100), 0, (600, 400))) for s in (remote, local))
            assert np.array_equal(a, b)
            assert remote.associated_images["label"].size == local.associated_images["label"].size


def _start_ingest(slide: Path, url: str, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = faults.wsistore("ingest", str(slide), url, *SMALL, *flags)
    return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=child_env(env))


def _wait_for_shards(s3: S3, name: str, proc: subprocess.Popen[str], count: int) -> None:
    """Until ``count`` shard objects are on the server (the upload is under way)."""
    deadline = time.monotonic() + 120
    while len(shard_objects(s3, name)) < count:
        assert proc.poll() is None, f"ingest ended before it was interrupted: {proc.stderr and proc.stderr.read()}"
        assert time.monotonic() < deadline, f"ingest wrote fewer than {count} shards in 2 minutes"
        time.sleep(0.05)


def _refused_as_unfinished(url: str) -> None:
    """``info`` says so in one line; ``Archive.open``, ``verify`` and ``wsistore.open`` refuse it."""
    info = cli("info", url)
    assert info.returncode == 3, info.stderr
    assert one_line(info) == f"wsistore: error: {url} is an unfinished ingest (interrupted?); rerun it with --resume"
    attempts = (
        lambda: Archive.open(url),
        lambda: verify(url, progress=False),
        lambda: wsistore.open(url, model="bicubic", device="cpu"),
    )
    for attempt in attempts:
        with pytest.raises(ArchiveError, match="unfinished ingest"):
            attempt()


def _same_as(s3: S3, name: str, reference: Path, tmp_path: Path) -> list[str]:
    """The S3 archive, downloaded, against a local archive: byte for byte but ``created``."""
    copy = tmp_path / "downloaded.zarr"  # a new folder each time
    s3.fs.invalidate_cache()
    s3.fs.get(f"{s3.url(name)[5:]}/", str(copy), recursive=True)
    return faults.compare_archives(copy, reference)


@pytest.fixture(scope="module")
def small_reference(slide_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slide ingested locally with the small-shard settings of the S3 runs below."""
    out = tmp_path_factory.mktemp("reference") / "small.zarr"
    result = subprocess.run(
        faults.wsistore("ingest", str(slide_path), str(out), *SMALL), capture_output=True, text=True, env=faults.ENV
    )
    assert result.returncode == 0, result.stderr
    return out


def test_resume_with_nothing_uploaded_starts_afresh(
    s3: S3, slide_path: Path, small_reference: Path, tmp_path: Path
) -> None:
    url = s3.url("never-started.zarr")  # killed before its settings object was written
    result = cli("ingest", str(slide_path), url, *SMALL, "--resume")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"wsistore: nothing to resume at {url}: starting afresh"]
    assert _same_as(s3, "never-started.zarr", small_reference, tmp_path) == []
    again = cli("ingest", str(slide_path), url, *SMALL, "--resume")  # a complete archive: refused, as before
    assert again.returncode == 2 and "holds no interrupted run" in one_line(again)


def test_an_upload_killed_midway_is_refused_then_resumes(
    s3: S3, slide_path: Path, small_reference: Path, tmp_path: Path
) -> None:
    name = "killed.zarr"
    url = s3.url(name)
    proc = _start_ingest(slide_path, url)
    try:
        _wait_for_shards(s3, name, proc, 3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    total = sum(1 for p in small_reference.rglob("*") if p.is_file() and "/c/" in str(p.relative_to(small_reference)))
    assert 3 <= len(shard_objects(s3, name)) < total
    assert any(k.startswith("ingest-journal/") for k in s3.keys(name))  # one object per finished shard
    _refused_as_unfinished(url)
    again = cli("ingest", str(slide_path), url, *SMALL)
    assert again.returncode == 4 and "already exists; use --overwrite" in one_line(again)

    resumed = cli("ingest", str(slide_path), url, *SMALL, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "shards resumed" in resumed.stdout
    assert _same_as(s3, name, small_reference, tmp_path / "resumed") == []
    assert Archive.open(url).info()["chunks_written"] == Archive.open(small_reference).info()["chunks_written"]

    # --overwrite never deletes a complete archive on object storage (no atomic swap there)
    options = IngestOptions(chunk=128, shard=128, workers=1, overwrite=True, progress=False, upscaler=SrPath())
    with pytest.raises(OutputExistsError, match="cannot swap a new output in atomically"):
        ingest(slide_path, url, options, storage_options={"endpoint_url": s3.endpoint})
    assert _same_as(s3, name, small_reference, tmp_path / "kept") == []


def test_overwrite_replaces_only_an_interrupted_upload(
    s3: S3, slide_path: Path, small_reference: Path, tmp_path: Path
) -> None:
    """An upload cut short just after it began (only its settings object written) is ours to
    replace with --overwrite; a prefix holding anything else is refused."""
    options = IngestOptions(chunk=128, shard=128, workers=1, overwrite=True, progress=False, upscaler=SrPath())
    endpoint = {"endpoint_url": s3.endpoint}
    Location.parse(s3.url("interrupted.zarr"), endpoint).write_bytes(settings_key("ingest"), b"{}")
    ingest(slide_path, s3.url("interrupted.zarr"), options, storage_options=endpoint)
    assert _same_as(s3, "interrupted.zarr", small_reference, tmp_path / "replaced") == []
    Location.parse(s3.url("foreign"), endpoint).write_bytes("notes.txt", b"mine")
    with pytest.raises(OutputExistsError, match="not an unfinished ingest"):
        ingest(slide_path, s3.url("foreign"), options, storage_options=endpoint)
    assert s3.keys("foreign") == ["notes.txt"]


def test_a_server_gone_mid_write_fails_in_one_line_and_leaves_nothing_complete(
    s3: S3, slide_path: Path, small_reference: Path, tmp_path: Path
) -> None:
    """A second server on the same (process-wide) moto state goes away during an ingest."""
    from moto.server import ThreadedMotoServer

    name = "server-gone.zarr"
    url = s3.url(name)
    second = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    second.start()
    host, port = second.get_host_and_port()
    env = aws_environment(f"http://{host}:{port}", tmp_path) | {"AWS_MAX_ATTEMPTS": "2"}
    proc = _start_ingest(slide_path, url, env=env)
    try:
        _wait_for_shards(s3, name, proc, 1)  # early: the rest must meet no server
    finally:
        second.stop()
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    lines = stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(f"wsistore: error: cannot write {url}: ")
    assert lines[0].endswith("the partial archive is kept, rerun with --resume once fixed")
    _refused_as_unfinished(url)
    # the environment still names the stopped server; --storage-options names the live one and wins
    options = json.dumps({"endpoint_url": s3.endpoint})
    resumed = cli("ingest", str(slide_path), url, *SMALL, "--resume", "--storage-options", options, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert _same_as(s3, name, small_reference, tmp_path) == []
