"""A real PACS for the DICOMweb tests: Debian's Orthanc 1.10 with its DICOMweb and WSI plugins,
HTTP Basic auth on, in a network namespace of its own with loopback alone
(:mod:`tests.dicomweb.netns`), started once for the session and stopped (with the namespace)
at its end, also after a failure. Each test runs with its thread in the namespace, so what
it starts (the CLI, ``wsistore serve``, Chromium) reaches Orthanc and nothing else does.

Inside the namespace the ports are fixed: Orthanc :data:`ORTHANC_PORT`, ``wsistore serve``
:data:`SERVE_PORT` (Orthanc's ``DicomWeb.Servers`` entry ``wsistore`` points there), a fault
proxy :data:`PROXY_PORT`. Skipped without root, iproute2 or Orthanc, except under CI (which
installs them: ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.dicomweb.netns import LoopbackNamespace, missing

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = "/usr/share/orthanc/plugins"
ORTHANC_PORT = 8042
SERVE_PORT = 8000
PROXY_PORT = 8043
USER, PASSWORD = "wsistore", "orthanc-test-password"
ROOT = Path(__file__).resolve().parents[2]
#: Orthanc refuses, while the file ``refuse`` in its folder names a word (``LABEL``), every
#: instance whose Image Type holds it (a file: ``/tools/execute-script`` runs in another Lua context).
LUA_FILTER = """
function ReceivedInstanceFilter(dicom, origin, info)
  local flag = io.open("FOLDER/refuse", "r")
  if flag == nil then
    return true
  end
  local word = flag:read("*l")
  flag:close()
  return not (dicom.ImageType ~= nil and string.find(dicom.ImageType, word, 1, true))
end
"""


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


@dataclass
class Pacs:
    """Orthanc in ``namespace``: its REST API at :attr:`url`, DICOMweb at :attr:`dicomweb`."""

    namespace: LoopbackNamespace
    process: subprocess.Popen[Any]
    log: Path

    url = f"http://127.0.0.1:{ORTHANC_PORT}"
    dicomweb = f"http://127.0.0.1:{ORTHANC_PORT}/dicom-web"
    stow = f"dicomweb+http://127.0.0.1:{ORTHANC_PORT}/dicom-web"

    def source(self, study: str, series: str, port: int = ORTHANC_PORT) -> str:
        """The ``dicomweb+http://`` URL of a series (through ``port``: Orthanc's, or the proxy's)."""
        return f"dicomweb+http://127.0.0.1:{port}/dicom-web?study={study}&series={series}"

    def get(self, path: str, **kwargs: Any) -> Any:
        response = requests.get(self.url + path, auth=(USER, PASSWORD), timeout=60, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        data = body if isinstance(body, str) else json.dumps(body)
        response = requests.post(self.url + path, data=data, auth=(USER, PASSWORD), timeout=300)
        response.raise_for_status()
        return response.json() if response.content else None

    def refuse(self, word: str | None) -> None:
        """From now on refuse the instances whose Image Type holds ``word`` (None: none)."""
        flag = self.log.parent / "refuse"
        if word is None:
            flag.unlink(missing_ok=True)
        else:
            flag.write_text(word + "\n")

    def series_of(self, series_uid: str) -> dict[str, Any]:
        """Orthanc's record of the series with that UID (its ID, instances ...)."""
        found = self.post(
            "/tools/find", {"Level": "Series", "Query": {"SeriesInstanceUID": series_uid}, "Expand": True}
        )
        assert len(found) == 1, f"Orthanc holds {len(found)} series {series_uid}"
        return dict(found[0])

    def pyramid(self, series_uid: str) -> dict[str, Any]:
        """The WSI plugin's view of the series: ``/wsi/pyramids/ID``."""
        return dict(self.get(f"/wsi/pyramids/{self.series_of(series_uid)['ID']}"))


def _config(folder: Path) -> Path:
    (folder / "filter.lua").write_text(LUA_FILTER.replace("FOLDER", str(folder)))
    config = {
        "Name": "wsistore-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": ORTHANC_PORT,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": True,  # the namespace has loopback alone
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "LuaScripts": [str(folder / "filter.lua")],
        "StableAge": 1,
        "Plugins": [f"{PLUGINS}/libOrthancDicomWeb.so", f"{PLUGINS}/libOrthancWSI.so"],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "Servers": {"wsistore": [f"http://127.0.0.1:{SERVE_PORT}/dicomweb"]},
        },
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=1))
    return path


@pytest.fixture(scope="session")
def namespace() -> Iterator[LoopbackNamespace]:
    need_pacs()
    with LoopbackNamespace() as ns:
        yield ns


@pytest.fixture(scope="session")
def pacs(namespace: LoopbackNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    """Orthanc, running for the session."""
    folder = tmp_path_factory.mktemp("orthanc")
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        process = namespace.popen([ORTHANC, str(_config(folder))], stdout=out, stderr=subprocess.STDOUT)
    pacs = Pacs(namespace, process, log)
    deadline = time.monotonic() + 60
    with namespace.entered():
        while True:
            if process.poll() is not None:
                pytest.fail(f"Orthanc exited ({process.returncode}): {log.read_text()[-2000:]}")
            try:
                pacs.get("/system")
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail(f"Orthanc did not start in 60 s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
    yield pacs


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


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (asserting it is one line)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsistore: error: "), result.stderr
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """What is in ``folder`` (after a failed command: nothing of its own should be)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
