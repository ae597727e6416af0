"""DICOM WSI input (wsidicom): the real shared instance reads as wsidicom and its own frames
say; folders and DICOMDIRs are one slide; damaged or foreign DICOM files fail in one line."""

from __future__ import annotations

import copy
import io
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

import wsistore
from tests.data import DICOM_SLIDE
from wsistore.archive.writer import IngestOptions
from wsistore.batch import expand_inputs
from wsistore.dicom import identifying
from wsistore.errors import InputError
from wsistore.readers import DicomReader, input_kind, open_input, open_slide


def _dataset(path: Path = DICOM_SLIDE) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _frames_stitched(ds: Any, order: str = "column") -> np.ndarray:
    """The instance's frames, taken out by pydicom and decoded by Pillow (as their JFIF marker
    says: YCbCr), laid by hand column by column (how the shared file stores them: laid row by
    row, its inked margin is cut into pieces) or row by row, cropped to the pixel matrix."""
    frames = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(f)))
            for f in generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
        ]
    )
    rows, cols = int(ds.Rows), int(ds.Columns)
    across = -(-int(ds.TotalPixelMatrixColumns) // cols)
    down = len(frames) // across
    if order == "column":
        grid = frames.reshape(across, down, rows, cols, 3).transpose(1, 0, 2, 3, 4)
    else:
        grid = frames.reshape(down, across, rows, cols, 3)
    whole = grid.transpose(0, 2, 1, 3, 4).reshape(down * rows, across * cols, 3)
    return whole[: int(ds.TotalPixelMatrixRows), : int(ds.TotalPixelMatrixColumns)]


def test_reads_the_real_dicom_file() -> None:
    for reader in ("auto", "dicom"):
        with open_slide(DICOM_SLIDE, reader) as slide:
            assert isinstance(slide, DicomReader) and slide.name == "dicom" and slide.vendor == "dicom"
            assert slide.dimensions == (3236, 2638) and slide.level_downsamples == (1.0,)
            assert slide.tile_size == (500, 500) and slide.files == (DICOM_SLIDE,)
            assert slide.mpp is None and slide.mpp_source is None  # no Pixel Spacing: never guessed
            assert slide.associated_image_names == ()
            props = slide.properties
            assert props["dicom.PatientID"].startswith("compressed_TCGA-XK-AAJU-01A-01-TS1")
            assert props["dicom.StudyInstanceUID"] and props["dicom.Modality"] == "SM"
            assert "no Image Type" in props["wsistore.dicom-repairs"]
            assert "YCbCr (JFIF)" in props["wsistore.dicom-repairs"]
            assert props["wsistore.dicom-frame-order"] == "column"
            assert props["wsistore.dicom-frame-order-evidence"].startswith("decided from the frames")
    assert input_kind(DICOM_SLIDE) == "slide"
    with open_input(DICOM_SLIDE) as slide:
        assert isinstance(slide, DicomReader)


def test_pixels_equal_wsidicoms_reading_and_the_frames() -> None:
    """Across tile edges and the border (past it: white), as wsidicom reads the instance and
    as pydicom decodes its frames placed column by column by hand (the natural H&E colours of
    the JFIF frames)."""
    whole = _frames_stitched(_dataset())
    rng = np.random.default_rng(3)
    with open_slide(DICOM_SLIDE) as slide:
        assert np.array_equal(slide.read_region((0, 0), 0, slide.dimensions), whole)
        for _ in range(6):
            w, h = (int(v) for v in rng.integers(1, 700, size=2))
            x, y = int(rng.integers(0, 3236 - w)), int(rng.integers(0, 2638 - h))
            region = slide.read_region((x, y), 0, (w, h))
            theirs = slide._slide.read_region((x, y), 0, (w, h), as_array=True)
            assert np.array_equal(region, theirs) and np.array_equal(region, whole[y : y + h, x : x + w])
        corner = slide.read_region((3200, 2600), 0, (100, 100))
        assert np.array_equal(corner[:38, :36], whole[2600:, 3200:]) and (corner[38:] == 255).all()
    pink = whole.reshape(-1, 3)[whole.reshape(-1, 3).std(axis=1) > 20].mean(axis=0)
    assert pink[0] > pink[1] + 30  # H&E: red above green (wsidicom alone, reading "RGB", gives teal)


@pytest.fixture
def dicom_folder(tmp_path: Path) -> Path:
    """The real instance and a label instance made of one of its frames, in a folder."""
    folder = tmp_path / "slide"
    folder.mkdir()
    base = _dataset()
    base.StudyTime = "000000"  # for the DICOMDIR's study record
    label = copy.deepcopy(base)
    frames = list(generate_frames(base.PixelData, number_of_frames=int(base.NumberOfFrames)))
    label.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    label.SOPInstanceUID = label.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    label.NumberOfFrames, label.TotalPixelMatrixColumns, label.TotalPixelMatrixRows = 1, 500, 500
    label.PixelData, label.InstanceNumber = encapsulate([frames[8]]), 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base.save_as(folder / "base.dcm")
        label.save_as(folder / "label.dcm")
    return folder


def test_a_folder_and_a_dicomdir_are_one_slide(tmp_path: Path, dicom_folder: Path) -> None:
    fileset = FileSet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("base.dcm", "label.dcm"):
            fileset.add(dicom_folder / name)
        fileset.write(tmp_path / "fs")
    label = _frames_stitched(_dataset(dicom_folder / "label.dcm"))
    for path in (dicom_folder, tmp_path / "fs", tmp_path / "fs" / "DICOMDIR"):
        assert input_kind(path) == "slide" and expand_inputs([str(path)]) == [path]
        with open_slide(path) as slide:
            assert slide.dimensions == (3236, 2638) and len(slide.files) == 2
            assert slide.associated_image_names == ("label",)
            assert np.array_equal(slide.associated_image("label"), label)
            digest, files = slide.fingerprint()
            assert len(files) == 2 and digest not in files.values()
    with open_slide(tmp_path / "fs") as a, open_slide(tmp_path / "fs" / "DICOMDIR") as b:
        assert a.fingerprint() == b.fingerprint()
        assert sorted(a.fingerprint()[1]) == [
            "PT000000/ST000000/SE000000/IM000000",
            "PT000000/ST000000/SE000000/IM000001",
        ]
    with pytest.raises(InputError, match="directory"):
        open_slide(dicom_folder, "openslide")


def test_a_folder_ingests_and_verifies_against_its_instances(tmp_path: Path, dicom_folder: Path) -> None:
    archive = tmp_path / "folder.zarr"
    wsistore.ingest(dicom_folder, archive, IngestOptions(progress=False, workers=2))
    report = wsistore.verify(archive, against=dicom_folder, workers=2, progress=False)
    assert report.ok, report
    source = wsistore.Archive.open(archive).metadata.source
    assert source.file_name == "slide" and source.reader == "dicom"
    assert source.bytes == sum(p.stat().st_size for p in dicom_folder.iterdir())
    assert set(source.properties) >= {"wsistore.source-sha256[base.dcm]", "wsistore.source-sha256[label.dcm]"}
    assert wsistore.Archive.open(archive).associated_image_names == ["label"]
    changed = _dataset(dicom_folder / "label.dcm")
    changed.ContentDate = "20210108"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        changed.save_as(dicom_folder / "label.dcm")
    report = wsistore.verify(archive, against=dicom_folder, workers=2, progress=False)
    assert not report.ok and any("sha256 differs: label.dcm" in p for p in report.problems), report.problems


def _corrupt_frame(data: bytes) -> bytes:
    """The 20th frame's JPEG start marker overwritten: it no longer decodes."""
    at = [i for i in range(len(data) - 4) if data[i : i + 4] == b"\xff\xd8\xff\xe0"][20]
    return data[:at] + b"\x00" * 16 + data[at + 16 :]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d[: len(d) // 2], "file is truncated: frame data item 20 needs"),
        (lambda d: d[:1000], "file is truncated: its 1,000 bytes end inside the header"),
        (lambda d: d[:1320], "file is truncated: 1,320 bytes end inside its frame data"),
    ],
)
def test_truncated_dicom_is_refused_by_name(tmp_path: Path, make: Any, message: str) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(make(DICOM_SLIDE.read_bytes()))
    with pytest.raises(InputError, match=message):
        open_slide(path)


def test_a_corrupt_frame_fails_when_read(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(_corrupt_frame(DICOM_SLIDE.read_bytes()))
    # met when its frames are placed (their seams decide the order) or when read
    with pytest.raises(InputError, match="(frame 20 does not decode|cannot decode region) .* truncated or corrupt"):
        with open_slide(path) as slide:
            slide.read_region((0, 0), 0, slide.dimensions)


def test_dicom_that_is_not_a_slide_is_refused(tmp_path: Path) -> None:
    ct = _dataset()
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.save_as(tmp_path / "ct.dcm")
    with pytest.raises(InputError, match="a DICOM file, but not a whole-slide image \\(SOP class CT Image Storage\\)"):
        open_slide(tmp_path / "ct.dcm")
    (tmp_path / "folder").mkdir()
    shutil.copy(tmp_path / "ct.dcm", tmp_path / "folder" / "a.dcm")
    shutil.copy(tmp_path / "ct.dcm", tmp_path / "folder" / "b.dcm")
    with pytest.raises(InputError, match="no DICOM whole-slide volume"):
        open_slide(tmp_path / "folder")


def test_identifying_attributes_wherever_they_stand() -> None:
    assert identifying("dicom.PatientName") and identifying("dicom.AccessionNumber")
    assert identifying("dicom.SpecimenDescriptionSequence[0].SpecimenIdentifier")
    assert identifying("dicom.OtherPatientIDsSequence[1].PatientID")
    assert not identifying("dicom.StudyInstanceUID") and not identifying("dicom.Modality")
    assert not identifying("aperio.PatientName")  # other vendors' properties are not DICOM attributes
