"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage), the parts wsidicom does
not do: which files an input is made of, the checks that refuse a damaged one by name, the
repairs that let wsidicom read an instance that leaves out what it needs, and the attributes
kept as properties (and which of them identify a patient).

An input is one instance file, a folder of instances, a DICOMDIR, or a folder holding one.
Instances are checked before wsidicom sees them (:func:`check_instance`): a file cut short
(its header, or frame data that ends beyond it), or of another SOP class, is refused in one
line. Instances that omit what wsidicom needs are read through :class:`SplicedFile`, the
original bytes behind a rewritten header (:func:`repairs`); the archive records what was
assumed (``wsistore.dicom-repairs``). Pixel Spacing is never invented: without it the mpp is
unknown (the placeholder wsidicom is given is not reported).

pydicom and wsidicom are imported when a DICOM input is first read.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from wsistore.errors import InputError, first_line, held_back

#: Bytes 128-131 of a DICOM Part 10 file.
MAGIC = b"DICM"
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
#: Top-level attributes left out of the properties: per-tile positions (one item per frame) and
#: the pixels. Binary values (ICC profiles, ...) are left out too.
_SKIPPED = ("PerFrameFunctionalGroupsSequence", "PixelData", "FloatPixelData", "DoubleFloatPixelData")
_BINARY_VRS = ("OB", "OW", "OF", "OD", "OL", "OV", "UN")
#: Items of a sequence kept as properties (the rest are counted, not listed).
_MAX_ITEMS = 16
#: The header is read up to here: what follows it is the per-frame functional groups and the pixels.
_PER_FRAME_TAG = 0x52009230
#: What the image-type values (the third) map to: the associated-image names of the other readers.
ASSOCIATED = {"LABEL": "label", "OVERVIEW": "macro", "THUMBNAIL": "thumbnail"}

#: Attributes that identify a patient, or lead to one, dropped by ``--strip-label`` wherever they
#: stand (top level or inside a sequence): patient identity and demographics, the people and the
#: institution, the study's and the request's identifiers, the slide's and the specimens' own
#: identifiers (a barcode is on the label), and dates and times. UIDs are kept.
IDENTIFYING_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "EthnicGroup",
    "PatientComments",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "RequestingPhysician",
    "ReferringPhysicianName",
    "PhysiciansOfRecord",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ContainerIdentifier",
    "SpecimenIdentifier",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDateTime",
    "ContentDate",
    "ContentTime",
)


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a file with the DICOM Part 10 marker."""
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == MAGIC
    except OSError:
        return False


def is_dicom_input(path: Path) -> bool:
    """Whether ``path`` is a DICOM file, or a folder that is one slide's instances: one that
    holds a DICOMDIR, or whose files are all DICOM (and there is one at least)."""
    if not path.is_dir():
        return path.is_file() and is_dicom_file(path)
    if (path / "DICOMDIR").is_file():
        return True
    files = _visible_files(path)
    return bool(files) and all(is_dicom_file(p) for p in files)


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def instance_files(path: Path) -> list[Path]:
    """The DICOM files ``path`` names, not yet checked: a file's own (a DICOMDIR's, the files
    it lists), a folder's DICOMDIR's, or a folder's DICOM files."""
    if path.is_dir():
        if (path / "DICOMDIR").is_file():
            return _dicomdir_files(path / "DICOMDIR")
        files = [p for p in _visible_files(path) if is_dicom_file(p)]
        if not files:
            raise InputError(f"{path}: no DICOM files in the folder")
        return files
    if path.name.upper() == "DICOMDIR" or _sop_class(path) == DICOMDIR_SOP_CLASS:
        return _dicomdir_files(path)
    return [path]


def _sop_class(path: Path) -> str | None:
    import pydicom

    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:
        return None
    return str(meta.get("MediaStorageSOPClassUID", "")) or None


def _dicomdir_files(path: Path) -> list[Path]:
    import pydicom
    from pydicom.fileset import FileSet

    try:
        with _quiet():
            fileset = FileSet(pydicom.dcmread(path))
            files = sorted({Path(instance.path) for instance in fileset})
    except Exception as exc:
        raise InputError(f"{path}: unreadable DICOMDIR ({first_line(exc)})") from None
    if not files:
        raise InputError(f"{path}: the DICOMDIR lists no instances")
    return files


@dataclass
class Instance:
    """One checked WSI instance: its header (to the per-frame functional groups), the repairs
    it needs before wsidicom reads it, and, for frames whose order it leaves unsaid
    (:func:`frame_order_unstated`), the order they are placed in (``row`` or ``column``)."""

    path: Path
    header: Any  # pydicom Dataset
    repairs: list[str] = field(default_factory=list)
    frame_order: str | None = None
    #: whether per-frame functional groups follow the header (read up to them: one item per frame)
    per_frame_groups: bool = False

    @property
    def flavour(self) -> str:
        """``VOLUME``, ``LABEL``, ``OVERVIEW`` or ``THUMBNAIL`` (the third Image Type value;
        an instance that states none is read as a volume)."""
        values = list(self.header.get("ImageType") or [])
        return str(values[2]).upper() if len(values) > 2 else "VOLUME"

    @property
    def pixels(self) -> int:
        return int(self.header.get("TotalPixelMatrixColumns", 0)) * int(self.header.get("TotalPixelMatrixRows", 0))

    def open(self) -> BinaryIO:
        """A stream of the file as wsidicom should read it: the file itself, or, with
        repairs (a frame order decided included), the original bytes behind the repaired header."""
        if not self.repairs and self.frame_order is None:
            return self.path.open("rb")
        return io.BufferedReader(SplicedFile(self.path, *self._repaired_header()))

    def _repaired_header(self) -> tuple[bytes, int]:
        """The repaired header's bytes and where the original's pixel data starts."""
        import pydicom
        from pydicom.dataset import Dataset

        with _quiet(), self.path.open("rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            offset = f.tell()
        if "ImageType" not in ds:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        if self.flavour == "VOLUME" and pixel_spacing(ds) is None:
            # a placeholder for wsidicom alone (1 mm wide): levels keep their ratios; never reported
            spacing = 1.0 / int(ds.TotalPixelMatrixColumns)
            measures = Dataset()
            measures.PixelSpacing = [f"{spacing:.10g}", f"{spacing:.10g}"]
            if "SharedFunctionalGroupsSequence" not in ds:
                ds.SharedFunctionalGroupsSequence = [Dataset()]
            ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = [measures]
        if self.frame_order == "row":
            ds.DimensionOrganizationType = "TILED_FULL"
        elif self.frame_order == "column":
            ds.DimensionOrganizationType = "TILED_SPARSE"
            ds.PerFrameFunctionalGroupsSequence = _column_positions(ds)
        if _YCBCR in self.repairs:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        out = io.BytesIO()
        with _quiet():
            ds.save_as(out, enforce_file_format=True)
        return out.getvalue(), offset


def check_instance(path: Path, alone: bool) -> Instance | None:
    """The checked instance at ``path``; None for a DICOM file of another SOP class in a set
    (``alone``: the input is this file, so it is refused instead). Refused in one line: a file
    cut short or damaged, or whose pixels wsistore does not archive."""
    import pydicom
    from pydicom.filereader import read_partial

    size = path.stat().st_size
    if not is_dicom_file(path):
        raise InputError(f"{path}: not a DICOM file (no DICM marker at byte 128)")
    try:
        with _quiet(), path.open("rb") as f:
            header = read_partial(f, stop_when=lambda tag, vr, length: tag >= _PER_FRAME_TAG)
            header.decode()
            ended = f.tell() >= size
            group, element = (int.from_bytes(b, "little") for b in (f.read(2), f.read(2)))
            per_frame = (group << 16 | element) == _PER_FRAME_TAG
    except Exception as exc:
        reason = "file is truncated" if isinstance(exc, EOFError) or "end of file" in str(exc).lower() else None
        raise InputError(f"{path}: damaged or truncated DICOM ({reason or first_line(exc)})") from None
    if ended:
        raise InputError(f"{path}: file is truncated: its {size:,} bytes end inside the header")
    sop_class = str(header.get("SOPClassUID", "")) or str(header.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class != WSI_SOP_CLASS:
        if not alone:
            return None
        name = pydicom.uid.UID(sop_class).name if sop_class else "none stated"
        raise InputError(f"{path}: a DICOM file, but not a whole-slide image (SOP class {name})")
    missing = [k for k in ("Rows", "Columns", "TotalPixelMatrixColumns", "TotalPixelMatrixRows") if k not in header]
    if missing:
        raise InputError(f"{path}: damaged or truncated DICOM (no {', '.join(missing)} in its header)")
    _check_pixels(path, header)
    instance = Instance(path, header, per_frame_groups=per_frame)
    instance.repairs = repairs(instance, _frame_data(path, header, size))
    return instance


_BRIGHTFIELD = "wsistore archives 8-bit RGB brightfield"
_YCBCR = "JPEG frames are YCbCr (JFIF) although Photometric Interpretation says RGB: read as YBR_FULL_422"


def _check_pixels(path: Path, header: Any) -> None:
    bits, samples = int(header.get("BitsAllocated", 8)), int(header.get("SamplesPerPixel", 3))
    width, height = int(header.TotalPixelMatrixColumns), int(header.TotalPixelMatrixRows)
    if bits != 8:
        raise InputError(f"{path}: {bits}-bit samples ({width} x {height}) are not supported; {_BRIGHTFIELD}")
    paths = int(header.get("NumberOfOpticalPaths", 1) or 1)
    if paths > 1 or samples not in (1, 3):
        raise InputError(
            f"{path}: multichannel image ({max(paths, samples)} channels), e.g. fluorescence, "
            f"is not supported; {_BRIGHTFIELD}"
        )


def _frame_data(path: Path, header: Any, size: int) -> bytes:
    """The first bytes of the first frame (to tell its colour space), after checking that
    the pixel data ends within the file: a file cut short is refused by name."""
    explicit = str(header.file_meta.get("TransferSyntaxUID", "")) != "1.2.840.10008.1.2"
    frames = int(header.get("NumberOfFrames", 1) or 1)
    with path.open("rb") as f:
        f.seek(_pixel_data_offset(path, header))
        head = f.read(12 if explicit else 8)
        if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
            raise InputError(f"{path}: file is truncated or damaged: no pixel data after the header")
        length = int.from_bytes(head[8:12] if explicit else head[4:8], "little")
        if length != 0xFFFFFFFF:  # native (not encapsulated) pixels
            end = f.tell() + length
            if end > size:
                raise InputError(
                    f"{path}: file is truncated: its pixel data needs {end:,} bytes, the file has {size:,}"
                )
            return b""
        fragments, first = 0, b""
        while True:
            item = f.read(8)
            if len(item) < 8:
                raise InputError(
                    f"{path}: file is truncated: {size:,} bytes end inside its frame data "
                    f"({max(fragments - 1, 0)} of {frames} frames)"
                )
            length = int.from_bytes(item[4:8], "little")
            if item[:4] == b"\xfe\xff\xdd\xe0":  # sequence delimiter
                break
            if item[:4] != b"\xfe\xff\x00\xe0":
                raise InputError(f"{path}: damaged DICOM: frame data item {fragments} is not an item")
            if f.tell() + length > size:
                raise InputError(
                    f"{path}: file is truncated: frame data item {fragments} needs {f.tell() + length:,} bytes, "
                    f"the file has {size:,}"
                )
            if fragments == 1:
                first = f.read(min(length, 64))
                f.seek(length - len(first), os.SEEK_CUR)
            else:
                f.seek(length, os.SEEK_CUR)
            fragments += 1
    if fragments - 1 < frames:
        raise InputError(f"{path}: damaged DICOM: {fragments - 1} frame data items for {frames} frames")
    return first


def _pixel_data_offset(path: Path, header: Any) -> int:
    """Where the pixel data element starts (just after the header pydicom reads)."""
    import pydicom

    with _quiet(), path.open("rb") as f:
        pydicom.dcmread(f, stop_before_pixels=True)
        return f.tell()


def repairs(instance: Instance, first_frame: bytes) -> list[str]:
    """What must be assumed for wsidicom to read ``instance``, one phrase each (empty for a
    conformant instance)."""
    header, found = instance.header, []
    if "ImageType" not in header:
        found.append("no Image Type: read as a volume (pyramid level)")
    if instance.flavour == "VOLUME" and pixel_spacing(header) is None:
        found.append("no Pixel Spacing: mpp unknown")
    syntax = str(header.file_meta.get("TransferSyntaxUID", ""))
    if (
        syntax == JPEG_BASELINE
        and header.get("PhotometricInterpretation") == "RGB"
        and re.match(rb"\xff\xd8\xff\xe0..JFIF\x00", first_frame, re.DOTALL)
    ):
        found.append(_YCBCR)
    return found


def _tiles(header: Any) -> int:
    rows, cols = int(header.Rows), int(header.Columns)
    return -(-int(header.TotalPixelMatrixRows) // rows) * -(-int(header.TotalPixelMatrixColumns) // cols)


def frame_order_unstated(header: Any, per_frame_groups: bool = False) -> bool:
    """Whether a tiled instance leaves its frames' order unsaid: one frame per tile, no
    Dimension Organization Type and no per-frame functional groups (positions; ``header`` may
    stop before them, ``per_frame_groups`` then says whether they follow)."""
    return (
        "DimensionOrganizationType" not in header
        and not per_frame_groups
        and "PerFrameFunctionalGroupsSequence" not in header
        and int(header.get("NumberOfFrames", 1) or 1) == _tiles(header)
        and _tiles(header) > 1
    )


def _column_positions(ds: Any) -> list[Any]:
    """Per-frame functional groups placing the frames column by column: frame ``k`` at tile
    ``(k mod down, k div down)``, as Plane Position (Slide) items (1-based pixel positions)."""
    from pydicom.dataset import Dataset

    rows, cols = int(ds.Rows), int(ds.Columns)
    down = -(-int(ds.TotalPixelMatrixRows) // rows)
    items = []
    for frame in range(int(ds.NumberOfFrames)):
        column, row = divmod(frame, down)
        position = Dataset()
        position.ColumnPositionInTotalImagePixelMatrix = column * cols + 1
        position.RowPositionInTotalImagePixelMatrix = row * rows + 1
        item = Dataset()
        item.PlanePositionSlideSequence = [position]
        items.append(item)
    return items


def pixel_spacing(header: Any) -> tuple[float, float] | None:
    """``(x, y)`` millimetres per pixel from the shared functional groups' Pixel Spacing
    (stated as row spacing, then column spacing), or None."""
    try:
        values = header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        y, x = float(values[0]), float(values[1])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def properties(header: Any) -> dict[str, str]:
    """The header's attributes as ``dicom.Keyword`` properties, sequences as
    ``dicom.Sequence[i].Keyword``; binary values, per-frame groups and pixels left out."""
    found: dict[str, str] = {}
    _flatten(header, "dicom.", found)
    return found


def _flatten(dataset: Any, prefix: str, into: dict[str, str]) -> None:
    for element in dataset:
        keyword = element.keyword
        if not keyword or keyword in _SKIPPED or element.VR in _BINARY_VRS or element.tag.group == 2:
            continue
        if element.VR == "SQ":
            items = list(element.value or [])
            for i, item in enumerate(items[:_MAX_ITEMS]):
                _flatten(item, f"{prefix}{keyword}[{i}].", into)
            if len(items) > _MAX_ITEMS:
                into[f"{prefix}{keyword}.count"] = str(len(items))
            continue
        value = element.value
        if value is None or value == "":
            continue
        text = "\\".join(str(v) for v in value) if _is_multi(value) else str(value)
        into[prefix + keyword] = text


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def identifying(key: str) -> bool:
    """Whether the property ``key`` (``dicom.[Sequence[i].]Keyword``) is one of
    :data:`IDENTIFYING_ATTRIBUTES`, or lies inside one."""
    if not key.startswith("dicom."):
        return False
    parts = [re.sub(r"\[\d+\]$", "", part) for part in key.removeprefix("dicom.").split(".")]
    return any(part in IDENTIFYING_ATTRIBUTES for part in parts)


class SplicedFile(io.RawIOBase):
    """A file read as ``header`` followed by its own bytes from ``offset`` on: a repaired
    header before the original pixel data, which is read from the file, never copied."""

    def __init__(self, path: Path, header: bytes, offset: int) -> None:
        super().__init__()
        self.name = str(path)
        self._header, self._offset = header, offset
        self._file = path.open("rb")
        self._size = len(header) + path.stat().st_size - offset
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(base + offset, 0)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        if self._position < len(self._header):
            part = self._header[self._position : self._position + len(view)]
            view[: len(part)] = part
            done = len(part)
        if done < len(view) and self._position + done >= len(self._header):
            self._file.seek(self._position + done - len(self._header) + self._offset)
            done += self._file.readinto(view[done:]) or 0
        self._position += done
        return done

    def close(self) -> None:
        self._file.close()
        super().close()


def _quiet() -> contextlib.AbstractContextManager[None]:
    """pydicom's and wsidicom's warnings and log lines held back (values longer than their VR
    allows ...): errors are one line."""
    return held_back(("pydicom", "wsidicom"))


def iter_instances(path: Path) -> Iterator[Instance]:
    """The checked WSI instances of the input ``path`` (see :func:`instance_files`)."""
    files = instance_files(path)
    alone = len(files) == 1
    for file in files:
        if not file.is_file():
            raise InputError(f"{path}: instance {file} is missing")
        instance = check_instance(file, alone)
        if instance is not None:
            yield instance
