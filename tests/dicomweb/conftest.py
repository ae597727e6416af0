"""The DICOMweb tests' PACS (:mod:`benchmarks.pacs`: Debian's Orthanc with its DICOMweb and
WSI plugins, in a network namespace with loopback alone, :mod:`benchmarks.netns`), started once
for the session and stopped with the namespace at its end, also after a failure. Each test runs
with its thread in the namespace, so what it starts (the CLI, ``wsistore serve``, Chromium)
reaches Orthanc and nothing else does. Skipped without root, iproute2 or Orthanc, except under
CI (which installs them: ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.netns import LoopbackNamespace, missing
from benchmarks.pacs import ORTHANC, PASSWORD, PLUGINS, PROXY_PORT, SERVE_PORT, USER, Pacs, start

__all__ = ["PASSWORD", "PROXY_PORT", "SERVE_PORT", "USER", "Pacs"]
ROOT = Path(__file__).resolve().parents[2]


def need_pacs() -> None:
    """Skip without what the PACS needs (fail under CI, which installs it)."""
    why = missing() or (None if Path(ORTHANC).exists() else "Orthanc is not installed (apt-get install orthanc)")
    for plugin in ("libOrthancDicomWeb.so", "libOrthancWSI.so"):
        if why is None and not (Path(PLUGINS) / plugin).exists():
            why = f"{plugin} is not installed (apt-get install orthanc-dicomweb orthanc-wsi)"
    if why and os.environ.get("CI"):
        pytest.fail(f"CI must be able to run the PACS: {why}")
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def namespace() -> Iterator[LoopbackNamespace]:
    need_pacs()
    with LoopbackNamespace() as ns:
        yield ns


@pytest.fixture(scope="session")
def pacs(namespace: LoopbackNamespace, tmp_path_factory: pytest.TempPathFactory) -> Pacs:
    """Orthanc, running for the session."""
    try:
        return start(namespace, tmp_path_factory.mktemp("orthanc"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def in_namespace(namespace: LoopbackNamespace) -> Iterator[None]:
    """Every test of this package with its thread (and what it starts) in the namespace."""
    with namespace.entered():
        yield


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Orthanc's user and password in the environment (as the CLI reads them), and that
    environment for subprocesses."""
    monkeypatch.setenv("WSISTORE_DICOMWEB_USER", USER)
    monkeypatch.setenv("WSISTORE_DICOMWEB_PASSWORD", PASSWORD)
    return dict(os.environ)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``wsistore ARGS`` in a subprocess (in the namespace, as the test's thread is)."""
    environment = dict(env if env is not None else os.environ)
    environment["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "wsistore", *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``wsistore ARGS`` run in this process (faster than :func:`cli`, for the failures)."""
    from wsistore.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["wsistore", *args], code, out, err)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (asserting it is one line)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsistore: error: "), result.stderr
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """What is in ``folder`` (after a failed command: nothing of its own should be)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
