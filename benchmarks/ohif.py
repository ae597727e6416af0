"""OHIF's prebuilt viewer (``@ohif/app`` from npm, its microscopy mode compiled in), served
locally and pointed at ``wsistore serve``'s DICOMweb: for the browser test and for users.

``python -m benchmarks.ohif fetch`` (any Python 3.11: it imports nothing beyond the standard
library) puts the package's ``dist/`` in :func:`default_dir` with npm's own client (``npm pack``;
nothing else is downloaded, and nothing at run time: the app
then loads everything from the local server). :func:`app` serves that folder with an
``app-config.js`` of its own whose one data source is the DICOMweb root it is given, and the
app's page for every path it routes itself (``/microscopy?StudyInstanceUIDs=...``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

VERSION = "3.13.2"
PACKAGE = f"@ohif/app@{VERSION}"


def default_dir() -> Path:
    """Where the app's ``dist/`` is kept: ``$WSISTORE_OHIF_DIR``, else the user's cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("WSISTORE_OHIF_DIR", cache / "wsistore" / f"ohif-{VERSION}"))


def installed(folder: Path | None = None) -> Path | None:
    """The ``dist/`` folder when fetched, else None."""
    dist = (folder or default_dir()) / "dist"
    return dist if (dist / "index.html").is_file() else None


def fetch(folder: Path | None = None) -> Path:
    """``npm pack`` the pinned package and unpack its ``dist/`` into ``folder``."""
    folder = folder or default_dir()
    if installed(folder):
        return folder / "dist"
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=work, check=True, stdout=subprocess.DEVNULL)
        (tarball,) = Path(work).glob("*.tgz")
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / "dist", ignore_errors=True)
        shutil.move(str(Path(work) / "package" / "dist"), folder / "dist")
        shutil.copy(Path(work) / "package" / "LICENSE", folder / "LICENSE")
    return folder / "dist"


def app_config(dicomweb: str) -> str:
    """OHIF's ``app-config.js`` with ``dicomweb`` (``http://HOST:PORT/dicomweb``) as its only
    data source."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "wsistore",
        "configuration": {
            "friendlyName": "wsistore serve",
            "name": "wsistore",
            "wadoUriRoot": dicomweb,
            "qidoRoot": dicomweb,
            "wadoRoot": dicomweb,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": None,
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "wsistore",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


def app(dist: Path, dicomweb: str) -> Any:
    """The viewer over ``dist`` with its data source at ``dicomweb`` (a Starlette app)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    config = app_config(dicomweb)
    root = dist.resolve()

    async def page(request: Request) -> Response:
        path = request.path_params.get("path", "")
        if path == "app-config.js":
            return Response(config, media_type="application/javascript")
        target = (root / path).resolve()
        if path and target.is_file() and target.is_relative_to(root):
            return FileResponse(target)
        return FileResponse(root / "index.html")  # a route of the app itself

    return Starlette(routes=[Route("/", page), Route("/{path:path}", page)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("fetch", "where", "serve"))
    parser.add_argument("--dicomweb", default="http://127.0.0.1:8000/dicomweb", help="serve: the DICOMweb root")
    parser.add_argument("--port", type=int, default=3000, help="serve: the port on 127.0.0.1")
    args = parser.parse_args()
    if args.command == "serve":
        import uvicorn

        dist = installed() or fetch()
        print(f"OHIF at http://127.0.0.1:{args.port}/ (data: {args.dicomweb})")
        uvicorn.run(app(dist, args.dicomweb), host="127.0.0.1", port=args.port, log_level="warning")
        return
    print(fetch() if args.command == "fetch" else (installed() or "not fetched"))


if __name__ == "__main__":
    main()
