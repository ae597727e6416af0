"""Orthanc's own DICOMweb client (its ``DicomWeb.Servers`` entry ``wsistore``) queries and
retrieves from ``wsistore serve``: a second client, independent of wsidicom and dicomweb-client.
The served series lands in Orthanc whole: its WSI plugin lists the levels, and its frames are
the bytes ``wsistore serve`` sent."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.dicomweb.conftest import PASSWORD, SERVE_PORT, USER, Pacs
from tests.generators import counting_generator
from wsistore.serve.app import build_app, open_slides
from wsistore.serve.server import ServerThread


def test_orthanc_queries_and_retrieves_from_serve(pacs: Pacs, sample_archive: Path) -> None:
    # the counting generator: a series of its own (UIDs derive from the generator), new to Orthanc
    slides = open_slides([sample_archive], counting_generator(), "cpu", workers=2)
    with ServerThread(build_app(slides), port=SERVE_PORT) as server:
        served = requests.get(f"{server.url}/dicomweb/studies", timeout=60).json()
        study = served[0]["0020000D"]["Value"][0]
        series = requests.get(f"{server.url}/dicomweb/studies/{study}/series", timeout=60).json()
        series_uid = series[0]["0020000E"]["Value"][0]

        found = pacs.post(
            "/dicom-web/servers/wsistore/qido", {"Uri": "/studies", "Arguments": {"ModalitiesInStudy": "SM"}}
        )
        assert [s["0020000D"]["Value"] for s in found] == [study]
        none = pacs.post(
            "/dicom-web/servers/wsistore/qido", {"Uri": "/studies", "Arguments": {"ModalitiesInStudy": "CT"}}
        )
        assert none == []
        listed = pacs.post("/dicom-web/servers/wsistore/qido", {"Uri": f"/studies/{study}/series"})
        assert [s["0020000E"]["Value"] for s in listed] == [series_uid]

        got = pacs.post("/dicom-web/servers/wsistore/retrieve", {"Resources": [{"Study": study, "Series": series_uid}]})
        assert int(got["ReceivedInstancesCount"]) == 7

        pyramid = pacs.pyramid(series_uid)
        for size in ([2220, 2967], [1110, 1484], [555, 742], [278, 371]):
            assert size in pyramid["Sizes"]
        level0 = requests.get(
            f"{server.url}/dicomweb/studies/{study}/series/{series_uid}/instances?TotalPixelMatrixColumns=2220",
            timeout=60,
        ).json()
        uid = level0[0]["00080018"]["Value"][0]
        path = f"/dicomweb/studies/{study}/series/{series_uid}/instances/{uid}/frames/7"
        accept = {"Accept": 'multipart/related; type="image/jpeg"'}
        ours = requests.get(server.url + path, headers=accept, timeout=60)
        orthanc_id = pacs.post("/tools/lookup", uid)[0]["ID"]
        theirs = requests.get(f"{pacs.url}/instances/{orthanc_id}/frames/6/raw", auth=(USER, PASSWORD), timeout=60)
        assert theirs.status_code == 200 and _jpeg(theirs.content) == _jpeg(ours.content)  # the frame as stored


def _jpeg(body: bytes) -> bytes:
    """The JPEG in a one-part multipart answer (a trailing pad byte left out)."""
    start, end = body.index(b"\xff\xd8"), body.rindex(b"\xff\xd9") + 2
    return body[start:end]
