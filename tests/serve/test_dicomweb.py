"""``wsistore serve``'s DICOMweb (``/dicomweb``) over the real sample archive: wsidicom's
``open_web`` (a DICOMweb client of its own, through dicomweb-client) reads it, its instances are
the ones ``restore --format dicom`` writes (the same UIDs, attributes and frame bytes), and QIDO-RS
matching, media types, errors and CORS behave as DICOMweb says. Orthanc as a client, and OHIF in
Chromium: ``tests/dicomweb``.

JPEG tolerance: a level-0 region read through ``open_web`` against ``wsistore.open(...).read_region``
of the same region (the frames are JPEG quality 90, YCbCr 4:2:0): PSNR above 40 dB, mean absolute
difference under 2 grey levels; a region of the stored 4x level, whose tissue is 4x denser, against
the stored pixels: above 34 dB (that JPEG's own loss there is 35.8 dB).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from wsidicom import WsiDicom
from wsidicom.web import WsiDicomWebClient

from tests.serve.conftest import Running, fetch, running
from wsistore.models.weights import LoadedGenerator
from wsistore.restoration.pipeline import RestoreOptions, restore

#: What differs between a restore's files and the served instances: when each was made.
WHEN = ("InstanceCreationDate", "InstanceCreationTime", "ContributionDateTime")


def _json(srv: Running, path: str, headers: dict[str, str] | None = None) -> Any:
    reply = srv.get("/dicomweb" + path, headers)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/dicom+json")
    return json.loads(reply.body)


def _value(record: dict[str, Any], tag: str) -> Any:
    return record[tag]["Value"][0]


def _uids(srv: Running) -> tuple[str, str]:
    studies = _json(srv, "/studies")
    assert len(studies) == 1
    study = _value(studies[0], "0020000D")
    series = _json(srv, f"/studies/{study}/series")
    return study, _value(series[0], "0020000E")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2)))


def _without_when(record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for tag, element in record.items():
        if pydicom.datadict.keyword_for_tag(int(tag, 16)) in WHEN:
            continue
        if element.get("vr") == "SQ":
            element = dict(element, Value=[_without_when(item) for item in element.get("Value", [])])
        out[tag] = element
    return out


def test_open_web_reads_levels_and_pixels(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic") as srv:
        study, series = _uids(srv)
        client = WsiDicomWebClient.create_client(srv.url + "/dicomweb")
        with WsiDicom.open_web(client, study, series) as slide:
            sizes = [(level.size.width, level.size.height) for level in slide.levels]
            assert sizes == [(2220, 2967), (1110, 1484), (555, 742), (278, 371)]
            assert slide.mpp.width == pytest.approx(0.499)
            web = np.asarray(slide.read_region((1000, 1200), 0, (600, 400)).convert("RGB"))
            coarse = np.asarray(slide.read_region((0, 0), 2, (555, 742)).convert("RGB"))
            assert slide.labels is not None and slide.overviews is not None
        restored = np.asarray(srv.slide.slide.read_region((1000, 1200), 0, (600, 400)).convert("RGB"))
        assert _psnr(web, restored) > 40 and np.abs(web.astype(float) - restored).mean() < 2
        stored = srv.slide.archive.read_lr(0, (0, 0, 555, 742))  # /4 is the stored pyramid's base
        assert _psnr(coarse, stored) > 34  # the same JPEG on 4x denser tissue: 35.8 dB on this level


def test_served_instances_are_what_restore_writes(sample_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "restored.dicom"
    restore(
        sample_archive, out, RestoreOptions(model="bicubic", device="cpu", workers=2, format="dicom", progress=False)
    )
    files = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in out.glob("*.dcm")}
    with running(sample_archive, "bicubic") as srv:
        study, series = _uids(srv)
        served = _json(srv, f"/studies/{study}/series/{series}/metadata")
        assert {_value(r, "00080018") for r in served} == set(files)  # the same SOP Instance UIDs
        for record in served:
            uid = _value(record, "00080018")
            written = files[uid]
            written_json = written.to_json_dict(bulk_data_threshold=1 << 30)
            written_json.pop("7FE00010")
            assert _without_when(record) == _without_when(written_json), uid
            frames = pydicom.encaps.generate_frames(written.PixelData, number_of_frames=int(written.NumberOfFrames))
            reply = srv.get(
                f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/frames/1",
                {"Accept": 'multipart/related; type="image/jpeg"'},
            )
            first = next(frames)  # a frame item is padded to an even length
            first = first[:-1] if len(first) % 2 == 0 and first.endswith(b"\xff\xd9\x00") else first
            assert reply.status == 200 and _parts(reply)[0] == first  # the same bytes, frame 1 of each
    with running(sample_archive, "bicubic") as again:  # stable across restarts
        assert _uids(again) == (study, series)


def _parts(reply: Any) -> list[bytes]:
    boundary = reply.headers["content-type"].split("boundary=")[1].strip('"').encode()
    pieces = reply.body.split(b"--" + boundary)[1:-1]
    return [piece.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for piece in pieces]


def test_level0_frames_use_the_tile_cache(sample_archive: Path, counting: LoadedGenerator) -> None:
    with running(sample_archive, counting) as srv:
        study, series = _uids(srv)
        instances = _json(srv, f"/studies/{study}/series/{series}/instances")
        level0 = next(r for r in instances if _value(r, "00480006") == 2220)
        base = f"/dicomweb/studies/{study}/series/{series}/instances/{_value(level0, '00080018')}/frames"
        assert srv.counting is not None and srv.counting.windows == 0
        jpeg = srv.get(f"{base}/1")
        assert jpeg.status == 200 and srv.counting.windows == 1  # frame 1 = (0, 0, 512, 512): one compute tile
        raw = srv.get(f"{base}/1", {"Accept": "multipart/related; type=application/octet-stream"})
        assert "transfer-syntax=1.2.840.10008.1.2.1" in raw.headers["content-type"]
        pixels = np.frombuffer(_parts(raw)[0], dtype=np.uint8).reshape(512, 512, 3)
        restored = np.asarray(srv.slide.slide.read_region((0, 0), 0, (512, 512)).convert("RGB"))
        assert _psnr(pixels, restored) > 40
        tile = srv.get(srv.tile(12, 0, 0))  # the DeepZoom tile over the same area: no new generator run
        assert tile.status == 200 and srv.counting.windows == 1


def test_qido_matching(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic") as srv:
        study, series = _uids(srv)
        assert len(_json(srv, "/studies?ModalitiesInStudy=SM")) == 1
        assert _json(srv, "/studies?ModalitiesInStudy=CT") == []
        assert len(_json(srv, f"/studies?StudyInstanceUID=1.2.3,{study}")) == 1
        assert len(_json(srv, "/series?00080060=SM&SeriesDescription=super-resolved*")) == 1
        assert _json(srv, "/series?SeriesDescription=other*") == []
        instances = _json(srv, f"/studies/{study}/series/{series}/instances")
        assert len(instances) == 7 and all(_value(r, "00083002") == "1.2.840.10008.1.2.4.50" for r in instances)
        volumes = _json(srv, f"/studies/{study}/instances?ImageType=*VOLUME*&includefield=00480001")
        assert len(volumes) == 4 and all("00480001" in r for r in volumes)
        assert "00480001" not in _json(srv, "/instances?limit=1")[0]
        everything = _json(srv, "/instances?includefield=all&limit=1")[0]
        assert "00480105" in everything  # the optical path sequence
        assert len(_json(srv, "/instances?limit=2&offset=6")) == 1
        root = _value(_json(srv, "/studies")[0], "00081190")
        assert root == f"{srv.url}/dicomweb/studies/{study}"
        summary = json.loads(srv.get(f"/slides/{srv.slide.name}.json").body)
        assert summary["dicomweb"] == {"study": study, "series": series, "root": "/dicomweb"}


@pytest.mark.parametrize(
    ("path", "headers", "status", "text"),
    [
        ("/studies?NoSuchKeyword=1", {}, 400, "unknown attribute"),
        ("/studies?limit=x", {}, 400, "limit must be"),
        ("/studies/1.2.3/series", {}, 404, "no study 1.2.3"),
        ("/studies/{study}/series/{series}/instances/1.2.3/metadata", {}, 404, "no instance 1.2.3"),
        ("/studies/{study}/series/{series}/instances/{instance}/frames/0", {}, 404, "frame 0 outside"),
        ("/studies/{study}/series/{series}/instances/{instance}/frames/1,x", {}, 400, "malformed frame list"),
        ("/studies/{study}/series/{series}/instances/{instance}/frames/1", {"Accept": "image/png"}, 406, "image/jpeg"),
        ("/studies/{study}", {"Accept": 'multipart/related; type="application/dicom+xml"'}, 406, "application/dicom"),
    ],
)
def test_errors_in_dicomwebs_form(
    sample_archive: Path, path: str, headers: dict[str, str], status: int, text: str
) -> None:
    with running(sample_archive, "bicubic") as srv:
        study, series = _uids(srv)
        instance = _value(_json(srv, f"/studies/{study}/series/{series}/instances?limit=1")[0], "00080018")
        reply = srv.get("/dicomweb" + path.format(study=study, series=series, instance=instance), headers)
        assert reply.status == status and text in reply.body.decode()
        assert reply.body.decode().count("\n") == 1  # one line
        assert reply.headers["warning"].startswith('299 wsistore: "') and text in reply.headers["warning"]


def test_cors_and_retrieve(sample_archive: Path) -> None:
    with running(sample_archive, "bicubic") as srv:
        study, series = _uids(srv)
        reply = srv.get("/dicomweb/studies", {"Origin": "http://127.0.0.1:3000"})
        assert reply.headers["access-control-allow-origin"] == "*"
        preflight = urllib.request.Request(
            srv.url + "/dicomweb/studies",
            method="OPTIONS",
            headers={
                "Origin": "http://127.0.0.1:3000",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "accept,authorization",
            },
        )
        with urllib.request.urlopen(preflight, timeout=30) as answer:
            assert answer.status == 200 and "authorization" in answer.headers["access-control-allow-headers"].lower()
        instances = _json(srv, f"/studies/{study}/series/{series}/instances?ImageType=*LABEL*")
        label = _value(instances[0], "00080018")
        part10 = fetch(
            f"{srv.url}/dicomweb/studies/{study}/series/{series}/instances/{label}",
            {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert part10.status == 200
        ds = pydicom.dcmread(__import__("io").BytesIO(_parts(part10)[0]))
        assert ds.SOPInstanceUID == label and ds.pixel_array.shape == (int(ds.Rows), int(ds.Columns), 3)
