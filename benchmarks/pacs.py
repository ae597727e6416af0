"""A real PACS for the DICOMweb tests and benchmarks: Debian's Orthanc 1.10 with its DICOMweb and
WSI plugins, HTTP Basic auth on, in a network namespace with loopback alone
(:mod:`benchmarks.netns`): nothing outside the namespace reaches it.

Inside the namespace the ports are fixed: Orthanc :data:`ORTHANC_PORT`, ``wsistore serve``
:data:`SERVE_PORT` (Orthanc's ``DicomWeb.Servers`` entry ``wsistore`` points there), a fault
proxy :data:`PROXY_PORT`.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from benchmarks.netns import LoopbackNamespace

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = "/usr/share/orthanc/plugins"
ORTHANC_PORT = 8042
SERVE_PORT = 8000
PROXY_PORT = 8043
USER, PASSWORD = "wsistore", "orthanc-test-password"
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


def start(namespace: LoopbackNamespace, folder: Path, timeout: float = 60) -> Pacs:
    """Orthanc started in ``namespace`` with its storage, configuration and log in ``folder``;
    ready to answer (stopped with the namespace)."""
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        process = namespace.popen([ORTHANC, str(_config(folder))], stdout=out, stderr=subprocess.STDOUT)
    pacs = Pacs(namespace, process, log)
    deadline = time.monotonic() + timeout
    with namespace.entered():
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({process.returncode}): {log.read_text()[-2000:]}")
            try:
                pacs.get("/system")
                return pacs
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start in {timeout:.0f} s: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
