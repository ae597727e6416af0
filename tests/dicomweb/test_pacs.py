"""Against a real PACS (Orthanc, :mod:`tests.dicomweb.conftest`): a slide uploaded to it is
ingested from it over DICOMweb, verified against it, and restored back into it by STOW-RS,
where Orthanc's WSI plugin lists the levels; bad input (a wrong URL, a 401, a series that is
not a WSI, a connection dropped mid-series) is one line and leaves no archive; a STOW-RS
refusal is reported instance by instance, never silently partial.

Slides: the shared DICOM (uploaded as its own bytes) and the shared Aperio SVS, which a PACS
only takes as DICOM: its archive restored by bicubic as DICOM (``restore --format dicom``), the
way the issue's first trial uploaded it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.data import DICOM_SLIDE
from tests.dicomweb.conftest import PROXY_PORT, Pacs, cli, error_line, in_process, leftovers
from tests.dicomweb.faults import DroppingProxy
from wsistore.dicomweb import store_series
from wsistore.restoration.pipeline import RestoreOptions, restore


def _uids(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture(scope="session")
def uploaded(pacs: Pacs, sample_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both slides stored in Orthanc by STOW-RS: name -> (study, series, files)."""
    import os

    from tests.dicomweb.conftest import PASSWORD, USER

    svs = tmp_path_factory.mktemp("svs-dicom") / "svs.dicom"
    restore(
        sample_archive, svs, RestoreOptions(model="bicubic", device="cpu", workers=2, format="dicom", progress=False)
    )
    slides = {"dicom": [DICOM_SLIDE], "svs": sorted(svs.glob("*.dcm"))}
    os.environ["WSISTORE_DICOMWEB_USER"], os.environ["WSISTORE_DICOMWEB_PASSWORD"] = USER, PASSWORD
    try:
        with pacs.namespace.entered():
            for files in slides.values():
                report = store_series(pacs.stow, files)
                assert report.ok, report.lines()
    finally:
        del os.environ["WSISTORE_DICOMWEB_USER"], os.environ["WSISTORE_DICOMWEB_PASSWORD"]
    return {name: (*_uids(files[0]), files) for name, files in slides.items()}


@pytest.mark.parametrize("name", ["dicom", "svs"])
def test_round_trip_through_the_pacs(
    name: str,
    pacs: Pacs,
    uploaded: dict[str, Any],
    credentials: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study, series, files = uploaded[name]
    source = pacs.source(study, series)
    archive = tmp_path / "from-pacs.zarr"

    ingested = cli("ingest", source, str(archive), "--workers", "2", "--quiet", env=credentials)
    assert ingested.returncode == 0, ingested.stderr
    info = in_process(capsys, "info", str(archive), "--json")
    recorded = json.loads(info.stdout)
    assert recorded["source"].startswith(f"dicomweb+http://127.0.0.1:8042/dicom-web?study={study}")
    assert ".wsistore-dicomweb-" not in "".join(leftovers(tmp_path))  # the fetched copy is gone

    verified = in_process(capsys, "verify", str(archive), "--against", source, "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "source matches (sha256)" in verified.stdout and "second decoder (pydicom)" in verified.stdout

    stowed = cli(
        "restore", str(archive), pacs.stow, "--format", "dicom", "--model", "bicubic", "--quiet", env=credentials
    )
    assert stowed.returncode == 0, stowed.stderr
    stored = [line.split()[1] for line in stowed.stdout.splitlines() if line.startswith("stored ")]
    assert stored and f"{len(stored)} of {len(stored)} instances stored" in stowed.stdout
    restored_series = pacs.get(f"/instances/{pacs.post('/tools/lookup', stored[0])[0]['ID']}/series")
    uid = restored_series["MainDicomTags"]["SeriesInstanceUID"]
    assert restored_series["ParentStudy"] == pacs.series_of(series)["ParentStudy"]  # the source's study
    pyramid = pacs.pyramid(uid)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    width, height = max((int(h.TotalPixelMatrixColumns), int(h.TotalPixelMatrixRows)) for h in headers)
    assert pyramid["Sizes"][0] == [int(width), int(height)]  # level 0 at full resolution
    dyadic = [[-(-width // 2**k), -(-height // 2**k)] for k in range(int(max(width, height) / 512).bit_length() + 1)]
    # every level, down to one tile (Orthanc WSI 1.1 lists a single-frame label among them too)
    assert all(size in pyramid["Sizes"] for size in dyadic), (dyadic, pyramid["Sizes"])


def test_bad_sources_are_one_line_and_leave_nothing(
    pacs: Pacs,
    uploaded: dict[str, Any],
    credentials: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study, series, _ = uploaded["dicom"]
    out = tmp_path / "out.zarr"

    def fails(source: str) -> str:
        result = in_process(capsys, "ingest", source, str(out), "--quiet")
        assert result.returncode == 2, result.stderr
        assert leftovers(tmp_path) == []  # no archive, no partial one, no fetched copy
        return error_line(result)

    assert "connection refused" in fails(pacs.source(study, series, port=9))
    wrong_root = pacs.source(study, series).replace("/dicom-web", "/no-such-root")
    assert "not found (404" in fails(wrong_root)
    monkeypatch.setenv("WSISTORE_DICOMWEB_PASSWORD", "wrong")
    assert "refused the credentials (401" in fails(pacs.source(study, series))
    monkeypatch.setenv("WSISTORE_DICOMWEB_PASSWORD", credentials["WSISTORE_DICOMWEB_PASSWORD"])
    assert "no series 1.2.3.4" in fails(pacs.source(study, "1.2.3.4"))
    with_password = pacs.source(study, series).replace("127.0.0.1", "user:secret@127.0.0.1")
    assert "credentials never go on the command line" in fails(with_password)

    ct = Path(pydicom.data.get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    assert store_series(pacs.stow, [ct]).ok
    ct_study, ct_series = _uids(ct)
    not_wsi = fails(pacs.source(ct_study, ct_series))
    assert "is not a whole-slide image: it holds 1 instance(s) of CT Image Storage" in not_wsi


def test_a_connection_dropped_mid_series(
    pacs: Pacs,
    uploaded: dict[str, Any],
    credentials: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("wsistore.dicomweb.BACKOFF", 0.05)
    study, series, files = uploaded["svs"]
    assert len(files) > 2
    out = tmp_path / "out.zarr"
    through_proxy = pacs.source(study, series, port=PROXY_PORT)
    # cut each answer after 2 kB: short of every instance, whichever the second is (UIDs order them)
    with DroppingProxy(PROXY_PORT, 8042, cut_from=2, keep=2_000, times=None) as proxy:
        result = in_process(capsys, "ingest", through_proxy, str(out), "--quiet")
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert "dropped the connection during instance" in line and f"(2 of {len(files)})" in line and "3 times" in line
    assert proxy.dropped == 3 and leftovers(tmp_path) == []  # never a partial archive, nor the fetched part

    with DroppingProxy(PROXY_PORT, 8042, cut_from=2, keep=2_000, times=1) as proxy:  # dropped once: fetched again
        result = in_process(capsys, "ingest", through_proxy, str(out), "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert proxy.dropped == 1
    verified = in_process(capsys, "verify", str(out), "--against", pacs.source(study, series), "--quiet")
    assert verified.returncode == 0 and "source matches (sha256)" in verified.stdout, verified.stdout


def test_stow_refusals_are_reported_and_a_rerun_completes_the_series(
    pacs: Pacs, sample_archive: Path, credentials: dict[str, str]
) -> None:
    # a region: a series of its own (UIDs derive from the region), not stored by another test
    restore_args = ("restore", str(sample_archive), pacs.stow, "--format", "dicom", "--model", "bicubic")
    restore_args += ("--region", "0,0,1024,1024", "--quiet")
    pacs.refuse("LABEL")
    try:
        refused = cli(*restore_args, env=credentials)
    finally:
        pacs.refuse(None)
    assert refused.returncode == 1
    lines = refused.stdout.splitlines()
    refusals = [line for line in lines if line.startswith("refused ")]
    stored = [line for line in lines if line.startswith("stored ")]
    assert len(refusals) == 1 and len(stored) >= 3, refused.stdout
    assert f"{len(stored)} of {len(stored) + 1} instances stored" in lines[-1]
    assert "1 of" in error_line(refused) and "were not stored" in error_line(refused)
    label = refusals[0].split()[1].rstrip(":")
    assert pacs.post("/tools/lookup", label) == []  # really not there

    again = cli(*restore_args, env=credentials)  # the same instances (derived UIDs): the series completes
    assert again.returncode == 0, again.stderr
    assert {line.split()[1] for line in again.stdout.splitlines() if line.startswith("stored ")} == {
        line.split()[1] for line in stored
    } | {label}
    assert pacs.post("/tools/lookup", label)
