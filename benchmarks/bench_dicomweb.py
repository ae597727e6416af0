"""DICOMweb speed: ``wsistore serve``'s full-resolution frames against its DeepZoom tiles of the
same archive, and ingest from a PACS over DICOMweb against ingest of the same files from disk.

Serving (as :mod:`benchmarks.bench_serve` measures tiles, on 127.0.0.1, the default model on the
CPU): the level-0 frames of the DICOM series (512 x 512 JPEG, ``/dicomweb/.../frames/N``) and the
finest DeepZoom tiles (254 px + 1 px overlap, ``/slides/...``), each kind

* cold: every item once, one at a time, the restored-tile cache off (each runs the generator);
* first visit: ``--clients`` threads share every item once, fresh server, cache on;
* cached: the items again, one at a time;
* cached under load: ``--clients`` threads in a closed loop for ``--seconds``.

Ingest (``--pacs``, needs root, iproute2 and Orthanc: :mod:`benchmarks.pacs`): the shared DICOM
and the sample's restored DICOM series (7 instances) stored in Orthanc, then each ingested
``--runs`` times from its ``dicomweb+http://`` URL and from the files, ``--no-adapt``, 2 workers.

    python -m benchmarks.bench_dicomweb [--pacs] [--clients 8] [--seconds 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench_serve import _first_visit, _get, _load, _stats

ACCEPT_JPEG = 'multipart/related; type="image/jpeg"'


@contextmanager
def _server(archive: Path, model: str | None, cache_bytes: int) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """The app on 127.0.0.1; yields its URL and the paths of every level-0 frame and every
    finest DeepZoom tile."""
    from wsistore.serve.app import build_app, open_slides
    from wsistore.serve.dicomweb import DicomWebSeries
    from wsistore.serve.server import ServerThread

    slides = open_slides([archive], model, "cpu", cache_bytes=cache_bytes)
    served = slides[0]
    zoom = served.zoom()
    level = zoom.level_count - 1
    cols, rows = zoom.level_tiles[level]
    tiles = [f"/slides/{served.name}/{served.version}/{level}/{c}_{r}.jpeg" for r in range(rows) for c in range(cols)]
    series = DicomWebSeries(served.name, served.slide)
    level0 = series.instances[0]
    root = f"/dicomweb/studies/{series.study_uid}/series/{series.series_uid}/instances/{level0.uid}/frames"
    frames = [f"{root}/{n}" for n in range(1, level0.frames.count + 1)]
    with ServerThread(build_app(slides)) as server:
        yield server.url, {"dicomweb_frames": frames, "deepzoom_tiles": tiles}


def _measure_kind(archive: Path, model: str | None, kind: str, clients: int, seconds: float) -> dict[str, Any]:
    """Cold, first-visit, cached and loaded figures of one kind of item."""
    result: dict[str, Any] = {}
    with _server(archive, model, cache_bytes=0) as (url, paths):
        items = paths[kind]
        _get(url + items[0])  # the model is loaded and warmed once
        result["items"] = len(items)
        result["cold"] = _stats([_get(url + p) for p in items[1:]])
    with _server(archive, model, cache_bytes=1 << 30) as (url, paths):
        _get(url + items[0])
        result["first_visit_under_load"] = _first_visit(url, items, clients)
        result["cached"] = _stats([_get(url + p) for p in items[1:]])
        result["load_cached"] = _load(url, items, clients, seconds)
    return result


def _accept_jpeg() -> None:
    """The frames as a DICOMweb viewer asks for them (``image/jpeg`` parts): bench_serve's
    ``_get`` sends no Accept header, so urllib's requests get one here."""
    import urllib.request

    opener = urllib.request.build_opener()
    opener.addheaders = [("Accept", ACCEPT_JPEG)]
    urllib.request.install_opener(opener)


def measure_serving(archive: Path, model: str | None, clients: int, seconds: float) -> dict[str, Any]:
    _accept_jpeg()
    return {
        kind: _measure_kind(archive, model, kind, clients, seconds) for kind in ("dicomweb_frames", "deepzoom_tiles")
    }


def measure_ingest(archive: Path, runs: int) -> dict[str, Any]:
    """Ingest over DICOMweb from Orthanc against ingest of the same files, ``runs`` times each."""
    from benchmarks.netns import LoopbackNamespace
    from benchmarks.pacs import PASSWORD, USER, start
    from tests.data import DICOM_SLIDE
    from wsistore.archive.writer import IngestOptions, ingest
    from wsistore.dicomweb import fetched_series, store_series
    from wsistore.restoration.pipeline import RestoreOptions, restore

    os.environ["WSISTORE_DICOMWEB_USER"], os.environ["WSISTORE_DICOMWEB_PASSWORD"] = USER, PASSWORD
    options = IngestOptions(progress=False, workers=2, adapt=None)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, LoopbackNamespace() as ns:
        work = Path(tmp)
        svs = work / "svs.dicom"
        restore(archive, svs, RestoreOptions(model="bicubic", device="cpu", workers=2, format="dicom", progress=False))
        pacs = start(ns, work)
        with ns.entered():
            for name, files, on_disk in (
                ("shared DICOM (1 instance)", [DICOM_SLIDE], DICOM_SLIDE),
                ("sample as restored DICOM (7 instances)", sorted(svs.glob("*.dcm")), svs),
            ):
                assert store_series(pacs.stow, files).ok
                import pydicom

                ds = pydicom.dcmread(files[0], stop_before_pixels=True)
                url = pacs.source(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
                timings: dict[str, list[float]] = {"disk": [], "dicomweb": [], "fetch_only": []}
                for k in range(runs):
                    for source, key in ((on_disk, "disk"), (url, "dicomweb")):
                        out = work / f"{len(result)}-{key}-{k}.zarr"
                        begin = time.perf_counter()
                        ingest(source, out, options)
                        timings[key].append(time.perf_counter() - begin)
                    begin = time.perf_counter()
                    with fetched_series(url):
                        timings["fetch_only"].append(time.perf_counter() - begin)
                result[name] = {
                    "bytes": sum(f.stat().st_size for f in files),
                    **{key: {"median_s": statistics.median(v), "runs_s": v} for key, v in timings.items()},
                }
    return result


def main() -> None:
    import torch

    import wsistore
    from wsistore.models.weights import default_model
    from wsistore.sample import sample_slide_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, help="a wsistore archive (default: the sample slide, ingested)")
    parser.add_argument("--model", default=None, help="model name or path (default: the default model)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--pacs", action="store_true", help="also ingest from Orthanc against from disk (root)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        archive = args.archive
        if archive is None:
            archive = Path(tmp) / "sample.zarr"
            wsistore.ingest(sample_slide_path(), archive)
        result: dict[str, Any] = {"serving": measure_serving(archive, args.model, args.clients, args.seconds)}
        if args.pacs:
            result["ingest"] = measure_ingest(archive, args.runs)
    result["model"] = args.model or default_model()
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
