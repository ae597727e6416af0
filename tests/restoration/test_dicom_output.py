"""``restore --format dicom``: a folder of DICOM WSI instances that wsidicom and OpenSlide 4
open, whose level 0 is the TIFF restore's within JPEG's error, that dciodvfy passes, that
keeps a DICOM source's patient and study, and that obeys ``--region``, ``--resume`` and
``--overwrite`` as TIFF output does.

JPEG tolerance: level 0 (quality 90, YCbCr 4:2:0) against the lossless TIFF restore of the
same archive by the same generator: mean absolute difference < 2 grey levels, PSNR > 40 dB.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import openslide
import pydicom
import pytest
import tifffile
from wsidicom import WsiDicom

from tests.data import DICOM_SLIDE
from tests.restoration.interrupt import interrupted_restore
from wsistore.errors import InputError, OutputExistsError
from wsistore.restoration.dicom_writer import DERIVATION_TITLE, DicomCodec, is_restored_dicom
from wsistore.restoration.pipeline import RestoreOptions, restore

BICUBIC = RestoreOptions(model="bicubic", device="cpu", workers=2, progress=False)
DICOM = replace(BICUBIC, format="dicom")
#: The values the source itself states invalidly (too long for their VR), copied verbatim:
#: a patient's and a study's identity are never cut short.
INHERITED = ("PatientName", "PatientID", "StudyID")


def headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def dicom_level0(folder: Path) -> np.ndarray:
    with WsiDicom.open(folder) as slide:
        return np.asarray(slide.read_region((0, 0), 0, (slide.size.width, slide.size.height)).convert("RGB"))


def tiff_level0(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].asarray()


def assert_within_jpeg_error(jpeg: np.ndarray, exact: np.ndarray) -> None:
    assert jpeg.shape == exact.shape
    diff = jpeg.astype(float) - exact
    assert np.abs(diff).mean() < 2
    assert 10 * np.log10(255**2 / np.mean(diff**2)) > 40


def dciodvfy_errors(folder: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; .ci/run installs it")
    errors = []
    for path in sorted(folder.glob("*.dcm")):
        out = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True)
        errors += [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    return errors


@pytest.fixture(scope="module")
def dicom_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsistore.archive.writer import IngestOptions, ingest

    out = tmp_path_factory.mktemp("dicom-archive") / "prostate.zarr"
    ingest(DICOM_SLIDE, out, IngestOptions(progress=False, workers=2))
    return out


def _restored_pair(folder: Path, archive: Path) -> tuple[Path, Path]:
    """``archive`` restored by bicubic into ``folder``: DICOM (JPEG) and lossless TIFF."""
    restore(archive, folder / "out.dicom", DICOM)
    restore(archive, folder / "exact.tif", replace(BICUBIC, lossless=True))
    return folder / "out.dicom", folder / "exact.tif"


@pytest.fixture(scope="module")
def svs_restores(tmp_path_factory: pytest.TempPathFactory, sample_archive: Path) -> tuple[Path, Path]:
    """The sample SVS archive restored both ways."""
    return _restored_pair(tmp_path_factory.mktemp("svs-dicom"), sample_archive)


@pytest.fixture(scope="module")
def dicom_restores(tmp_path_factory: pytest.TempPathFactory, dicom_archive: Path) -> tuple[Path, Path]:
    """The DICOM-sourced archive restored both ways."""
    return _restored_pair(tmp_path_factory.mktemp("dcm-dicom"), dicom_archive)


def test_tiff_sourced_output_opens_with_wsidicom_and_openslide(svs_restores: tuple[Path, Path]) -> None:
    out, exact = svs_restores
    assert is_restored_dicom(out)
    with WsiDicom.open(out) as slide:
        sizes = [(level.size.width, level.size.height) for level in slide.levels]
        assert sizes == [(2220, 2967), (1110, 1484), (555, 742), (278, 371)]  # dyadic, /2 made from level 0
        assert slide.mpp.width == pytest.approx(0.499)
        assert slide.labels is not None and slide.overviews is not None
    level0 = dicom_level0(out)
    assert_within_jpeg_error(level0, tiff_level0(exact))
    first = sorted(out.glob("*.dcm"))[0]
    with openslide.OpenSlide(first) as slide:  # OpenSlide 4: any one instance; it finds the rest
        assert slide.properties["openslide.vendor"] == "dicom"
        assert slide.level_dimensions[:3] == ((2220, 2967), (1110, 1484), (555, 742))
        assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
        region = np.asarray(slide.read_region((1000, 1200), 0, (300, 200)).convert("RGB"))
    assert np.array_equal(region, level0[1200:1400, 1000:1300])
    for ds in headers(out):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"
        assert str(ds.DerivationDescription).startswith(DERIVATION_TITLE)
        assert "generator = bicubic" in ds.DerivationDescription
        assert ds.ContributingEquipmentSequence[0].Manufacturer == "wsistore"
    level0_header = next(ds for ds in headers(out) if ds.TotalPixelMatrixColumns == 2220)
    assert list(level0_header.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    assert level0_header.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # JPEG baseline
    spacing = level0_header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [pytest.approx(0.000499)] * 2
    assert float(level0_header.ImagedVolumeWidth) == pytest.approx(2220 * 0.000499)


def test_tiff_sourced_output_passes_dciodvfy(svs_restores: tuple[Path, Path]) -> None:
    assert dciodvfy_errors(svs_restores[0]) == []


def test_dicom_round_trip_keeps_patient_and_study(
    dicom_restores: tuple[Path, Path], tmp_path: Path, dicom_archive: Path
) -> None:
    out, exact = dicom_restores
    source = pydicom.dcmread(DICOM_SLIDE, stop_before_pixels=True)
    written = headers(out)
    assert written
    for ds in written:
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyID"):
            assert ds.get(keyword) == source.get(keyword), keyword
        assert ds.StudyDate == "20210107"  # the source's 2021-01-07, as DA states it
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.SOPInstanceUID != source.SOPInstanceUID
    assert len({ds.SOPInstanceUID for ds in written}) == len(written)
    assert len({ds.SeriesInstanceUID for ds in written}) == 1
    assert "pixel_spacing = placeholder" in written[0].DerivationDescription  # the source states no mpp
    assert_within_jpeg_error(dicom_level0(out), tiff_level0(exact))
    with openslide.OpenSlide(sorted(out.glob("*.dcm"))[0]) as slide:
        assert slide.dimensions == (3236, 2638)
    # and once more through an archive: the third generation still names the same patient and study
    from wsistore.archive.writer import IngestOptions, ingest

    ingest(out, tmp_path / "again.zarr", IngestOptions(progress=False, workers=2))
    restore(tmp_path / "again.zarr", tmp_path / "again.dicom", replace(DICOM, region=(0, 0, 512, 512)))
    again = headers(tmp_path / "again.dicom")[0]
    assert (again.PatientName, again.PatientID, again.StudyInstanceUID) == (
        source.PatientName,
        source.PatientID,
        source.StudyInstanceUID,
    )
    assert again.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in written}


def test_dicom_sourced_output_errors_are_only_the_sources_own(dicom_restores: tuple[Path, Path]) -> None:
    errors = dciodvfy_errors(dicom_restores[0])
    assert all(any(f"/{k}(" in line for k in INHERITED) for line in errors), errors


def test_region_equals_the_tiff_region(sample_archive: Path, tmp_path: Path) -> None:
    x, y, w, h = 1000, 1200, 700, 500
    result = restore(sample_archive, tmp_path / "r.dicom", replace(DICOM, region=(x, y, w, h), tile=256))
    assert (result.width, result.height) == (700, 500)
    restore(sample_archive, tmp_path / "r.tif", replace(BICUBIC, region=(x, y, w, h), lossless=True, tile=256))
    assert_within_jpeg_error(dicom_level0(tmp_path / "r.dicom"), tiff_level0(tmp_path / "r.tif"))
    with WsiDicom.open(tmp_path / "r.dicom") as slide:
        assert slide.pyramid.thumbnails is None or not len(slide.pyramid.thumbnails)  # the whole slide's: left out
        assert (slide.levels[2].size.width, slide.levels[2].size.height) == (175, 125)  # the stored 4x level


def test_jpeg2000_frames(sample_archive: Path, tmp_path: Path) -> None:
    region = (0, 0, 600, 400)
    restore(sample_archive, tmp_path / "j2k.dicom", replace(DICOM, region=region, codec="jpeg2000", lossless=True))
    restore(sample_archive, tmp_path / "r.tif", replace(BICUBIC, region=region, lossless=True))
    level0 = next(ds for ds in headers(tmp_path / "j2k.dicom") if ds.TotalPixelMatrixColumns == 600)
    assert level0.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    assert np.array_equal(dicom_level0(tmp_path / "j2k.dicom"), tiff_level0(tmp_path / "r.tif"))
    with pytest.raises(InputError, match="JPEG 2000"):
        RestoreOptions(format="dicom", codec="jpeg", lossless=True)
    with pytest.raises(InputError, match="DICOM"):
        RestoreOptions(format="tiff", codec="jpeg2000")


def test_interrupted_restore_resumes(sample_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = replace(DICOM, tile=256, region=(0, 0, 2220, 1400))
    restore(sample_archive, tmp_path / "fresh.dicom", options)
    out = tmp_path / "out.dicom"
    interrupted_restore(monkeypatch, DicomCodec, sample_archive, out, options, tiles=9 * 3)  # three rows of nine
    with pytest.raises(InputError, match="different settings"):
        restore(sample_archive, out, replace(options, resume=True, quality=80))
    result = restore(sample_archive, out, replace(options, resume=True))
    assert result.rows_resumed == 3
    assert np.array_equal(dicom_level0(out), dicom_level0(tmp_path / "fresh.dicom"))
    assert not (tmp_path / "out.dicom.partial").exists()


def test_overwrite_replaces_only_a_dicom_output_restore_wrote(sample_archive: Path, tmp_path: Path) -> None:
    options = replace(DICOM, region=(0, 0, 300, 300))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a wsistore restore output"):
        restore(sample_archive, foreign, replace(options, overwrite=True))
    assert (foreign / "notes.txt").read_text() == "mine"
    shutil.copy(DICOM_SLIDE, foreign / "slide.dcm")  # a DICOM folder, but not one restore wrote
    (foreign / "notes.txt").unlink()
    assert not is_restored_dicom(foreign)
    with pytest.raises(OutputExistsError):
        restore(sample_archive, foreign, replace(options, overwrite=True))
    out = tmp_path / "out.dicom"
    restore(sample_archive, out, options)
    first = {ds.SOPInstanceUID for ds in headers(out)}
    inode = out.stat().st_ino
    with pytest.raises(OutputExistsError, match="already exists"):
        restore(sample_archive, out, options)
    restore(sample_archive, out, replace(options, overwrite=True))
    assert out.stat().st_ino != inode  # a new folder swapped in ...
    assert {ds.SOPInstanceUID for ds in headers(out)} == first  # ... of the same instances: UIDs are derived


def test_part10_offset_tables(svs_restores: tuple[Path, Path]) -> None:
    """Frame offsets past 4 GiB do not fit a Basic Offset Table: the header then carries an
    Extended Offset Table (and an empty BOT); a stream's header has an empty BOT."""
    import io

    from wsistore.restoration.dicom_series import ImageFrames, SeriesInstance, part10_header

    written = headers(svs_restores[0])[0]
    instance = SeriesInstance(written, ImageFrames(DicomCodec(), np.zeros((8, 8, 3), np.uint8)), None)
    for lengths, bot, extended in (([100, 102], 8, False), ([5 << 30, 10], 0, True), (None, 0, False)):
        header = part10_header(instance, lengths)
        ds = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True)
        assert ("ExtendedOffsetTable" in ds) == extended
        item = header[header.rindex(b"\xfe\xff\x00\xe0") :]
        assert int.from_bytes(item[4:8], "little") == bot  # the Basic Offset Table's length
        if extended:
            assert np.frombuffer(ds.ExtendedOffsetTable, "<u8").tolist() == [0, (5 << 30) + 8]
