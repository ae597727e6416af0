"""DICOM whole-slide restore output (VL Whole Slide Microscopy Image): a folder of
instances written with wsidicom, for PACS, OpenSlide 4, QuPath and DICOMweb viewers.

Levels: level 0 is the super-resolved image; the archive's stored levels whose downsample
is a power of two follow, and wsidicom adds the dyadic levels between them (/2 from level 0,
/8 from /4 ...) down to one tile, so the pyramid steps by 2 as DICOM viewers expect. The
label, overview (``macro``) and thumbnail images the archive keeps are instances of their
own (an archive ingested with ``--strip-label`` has none).

Frames are JPEG baseline (YCbCr 4:2:0, ``YBR_FULL_422``) or JPEG 2000 (lossy ``YBR_ICT``;
lossless ``YBR_RCT``), encoded by wsidicom's encoders. Level 0 is encoded row by row into
the spool (:mod:`wsistore.restoration.spool`, journalled for ``--resume``) and wsidicom
copies the spooled frames into the instances at the end; the archive's levels are encoded
as wsidicom asks for their frames.

Attributes: a DICOM source's patient, study, equipment and Frame of Reference attributes
are copied from the archive's ``dicom.*`` properties; a new Series Instance UID and new SOP
Instance UIDs are made every time; for any other source the study and frame of reference
UIDs are made too (see README, "DICOM output"). Every instance's Derivation Description
says that level 0 is super-resolved and names the generator, its weights' sha256 and the
adaptation's sha256; it is also what marks a folder restore wrote (:func:`is_restored_dicom`).
"""

from __future__ import annotations

import datetime
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from wsistore._version import __version__
from wsistore.archive.reader import Archive
from wsistore.dicom import is_dicom_file
from wsistore.outputs import ascii_text
from wsistore.restoration.levels import OutputLevel
from wsistore.restoration.spool import SpooledLevel0, cut_tiles
from wsistore.restoration.tiff_writer import DEFAULT_JPEG_QUALITY

RESULT_NAME = "restored.dicom"
CODECS = ("jpeg", "jpeg2000")
#: Lossy JPEG 2000 is encoded to this PSNR (dB) target.
JPEG2000_PSNR = 45
#: The first line of every instance's Derivation Description: what marks a folder restore wrote.
DERIVATION_TITLE = "wsistore super-resolved image"
#: The value of a required identifier the source does not state (Container Identifier).
UNKNOWN = "unknown"
#: The source attributes copied as they are (from the archive's ``dicom.*`` properties).
COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "ContainerIdentifier",
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
)
#: The archive's associated images -> the wsidicom image type of their instances.
_ASSOCIATED = {"label": "LABEL", "macro": "OVERVIEW", "thumbnail": "THUMBNAIL"}


@dataclass(frozen=True)
class DicomCodec:
    """How DICOM frames are compressed: JPEG baseline at ``quality``, or JPEG 2000 (lossy
    at :data:`JPEG2000_PSNR` dB, or ``lossless``)."""

    name: str = "jpeg"
    quality: int = DEFAULT_JPEG_QUALITY
    lossless: bool = False

    @cached_property
    def encoder(self) -> Any:
        from wsidicom.codec import Encoder, Jpeg2kSettings, JpegSettings, Subsampling

        if self.name == "jpeg":
            return Encoder.create_for_settings(JpegSettings(quality=self.quality, subsampling=Subsampling.R420))
        return Encoder.create_for_settings(Jpeg2kSettings(levels=0 if self.lossless else JPEG2000_PSNR))

    def encode(self, tile: np.ndarray) -> bytes:
        return bytes(self.encoder.encode(tile))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.jpeg8_decode(data) if self.name == "jpeg" else imagecodecs.jpeg2k_decode(data)

    def describe(self) -> str:
        if self.name == "jpeg":
            return f"JPEG baseline quality {self.quality}, YCbCr 4:2:0"
        return "JPEG 2000 lossless (YBR_RCT)" if self.lossless else f"JPEG 2000 lossy, {JPEG2000_PSNR} dB PSNR target"


class DicomWsiWriter(SpooledLevel0[DicomCodec]):
    """Writes one restore as a folder of DICOM WSI instances inside a :class:`PartialOutput`."""

    #: The archive levels at powers of 2; wsidicom fills the dyadic levels between.
    level_factor = 2

    def finish(self, archive: Archive, levels: list[OutputLevel], provenance: dict[str, Any]) -> str:
        """Write the instances from the spooled level 0, the archive's levels and associated
        images; returns the folder's name in the work directory."""
        from wsidicom import WsiDicom

        from wsistore.dicom import _quiet

        lengths = self.spooled_lengths(levels[0])
        result = self.output.work.path / RESULT_NAME
        if result.exists():  # an assembly a kill cut short: the spool is all that counts
            shutil.rmtree(result)
        spacing = _level0_spacing(archive)
        frames: list[_Frames] = [_SpooledFrames(self, levels[0], spacing, lengths)]
        frames += [_ArchiveFrames(self.codec, self.tile, level, spacing, archive) for level in levels[1:]]
        description = _description(provenance, self.codec, archive.metadata.mpp is not None)
        source = _RestoredSource(archive, frames, description, provenance)
        with _quiet(), WsiDicom(source, True) as slide:
            slide.save(result, workers=self.workers, add_missing_levels=True)
        return RESULT_NAME


def _level0_spacing(archive: Archive) -> tuple[float, float]:
    """Level 0's ``(x, y)`` pixel spacing in mm: the source's mpp, or where it is unknown a
    placeholder that makes the whole slide 1 mm wide (DICOM requires Pixel Spacing; the
    Derivation Description says it is a placeholder)."""
    md = archive.metadata
    if md.mpp:
        return md.mpp[0] / 1000, md.mpp[1] / 1000
    return 1.0 / md.width, 1.0 / md.width


def _description(provenance: dict[str, Any], codec: DicomCodec, mpp_known: bool) -> str:
    """The Derivation Description: what the TIFF's ImageDescription records, on one line
    per item (ST, at most 1024 characters)."""
    gen = provenance["generator"]
    lines = [
        f"{DERIVATION_TITLE}: level 0 was rebuilt from a reduced-resolution archive by a generator",
        f"generator = {gen['name']} ({gen['architecture']}, scale {provenance['scale']})",
        f"weights_sha256 = {gen['weights_sha256'] or 'none (fixed interpolation)'}",
        *([f"adaptation_sha256 = {gen['adaptation_sha256']}"] if gen.get("adaptation_sha256") else []),
        f"region = {','.join(str(v) for v in provenance['region'])}",
        f"source = {provenance['source']} (sha256 {provenance['source_sha256']})",
        f"frames = {codec.describe()}",
        f"wsistore = {provenance['wsistore_version']}",
    ]
    if not mpp_known:
        lines.append("pixel_spacing = placeholder (the source's mpp is unknown)")
    return ascii_text("\n".join(lines))[:1024]


class _Frames(ABC):
    """What wsidicom's ``ImageData`` needs of one level, tiled ``tile`` x ``tile``."""

    def __init__(self, codec: DicomCodec, tile: int, level: OutputLevel, spacing: tuple[float, float]) -> None:
        self.codec, self.tile, self.level = codec, tile, level
        self.spacing = (spacing[0] * level.downsample, spacing[1] * level.downsample)

    @abstractmethod
    def encoded(self, x: int, y: int) -> bytes:
        """The coded frame at tile column ``x``, row ``y``."""

    def decoded(self, x: int, y: int) -> np.ndarray:
        return self.codec.decode(self.encoded(x, y))


class _SpooledFrames(_Frames):
    """Level 0: the spooled frames, read back by offset."""

    def __init__(
        self, spool: DicomWsiWriter, level: OutputLevel, spacing: tuple[float, float], lengths: dict[int, list[int]]
    ) -> None:
        super().__init__(spool.codec, spool.tile, level, spacing)
        self.paths = [spool.output.work.path / spool._row_key(k) for k in range(len(lengths))]
        self.offsets = [np.concatenate([[0], np.cumsum(lengths[k])]).tolist() for k in range(len(lengths))]

    def encoded(self, x: int, y: int) -> bytes:
        start, end = self.offsets[y][x], self.offsets[y][x + 1]
        with open(self.paths[y], "rb") as f:
            f.seek(start)
            return f.read(end - start)


class _ArchiveFrames(_Frames):
    """One of the archive's stored levels, encoded tile by tile as wsidicom reads it."""

    def __init__(
        self, codec: DicomCodec, tile: int, level: OutputLevel, spacing: tuple[float, float], archive: Archive
    ) -> None:
        super().__init__(codec, tile, level, spacing)
        self.archive = archive

    def decoded(self, x: int, y: int) -> np.ndarray:
        x0, y0, x1, y1 = self.level.box
        left, top = x0 + x * self.tile, y0 + y * self.tile
        assert self.level.archive_level is not None
        pixels = self.archive.read_lr(
            self.level.archive_level, (left, top, min(left + self.tile, x1), min(top + self.tile, y1))
        )
        return next(cut_tiles(pixels, self.tile))

    def encoded(self, x: int, y: int) -> bytes:
        return self.codec.encode(self.decoded(x, y))


def _image_data(frames: _Frames) -> Any:
    """``frames`` as wsidicom ``ImageData``."""
    from wsidicom.codec import LossyCompressionIsoStandard
    from wsidicom.geometry import Point, Size, SizeMm
    from wsidicom.instance import ImageData
    from wsidicom.metadata import LossyCompression

    encoder = frames.codec.encoder

    class FramesImageData(ImageData):
        transfer_syntax = encoder.transfer_syntax
        image_size = Size(frames.level.width, frames.level.height)
        tile_size = Size(frames.tile, frames.tile)
        pixel_spacing = SizeMm(*frames.spacing)
        imaged_size = None
        samples_per_pixel = 3
        bits = 8
        photometric_interpretation = encoder.photometric_interpretation
        image_coordinate_system = None
        thread_safe = True
        transcoder = None

        @property
        def lossy_compression(self) -> list[Any] | None:
            iso = LossyCompressionIsoStandard.transfer_syntax_to_iso(self.transfer_syntax)
            return None if iso is None else [LossyCompression(iso, _RATIO)]

        def get_decoded_tile(self, tile_point: Point, z: float, path: str, cache: bool = True) -> np.ndarray:
            return frames.decoded(tile_point.x, tile_point.y)

        def get_encoded_tile(self, tile: Point, z: float, path: str) -> bytes:
            return frames.encoded(tile.x, tile.y)

    return FramesImageData(encoder)


#: The compression ratio stated (Lossy Image Compression Ratio is required; frames vary).
_RATIO = 10.0


def _metadata(archive: Archive, provenance: dict[str, Any]) -> Any:
    """wsidicom's metadata model of the output: the ICC profile, the processing equipment."""
    from pydicom.uid import UID, generate_uid
    from wsidicom.conceptcode import ContributingEquipmentPurposeCode
    from wsidicom.metadata import (
        ContributingEquipment,
        Equipment,
        Image,
        Label,
        OpticalPath,
        Patient,
        Pyramid,
        Series,
        Slide,
        SlideSample,
        Study,
        WsiMetadata,
    )

    gen = provenance["generator"]
    weights = gen["weights_sha256"] or "none (fixed interpolation)"
    adaptation = f"; adaptation sha256 {gen['adaptation_sha256']}" if gen.get("adaptation_sha256") else ""
    processing = ContributingEquipment(
        purpose=ContributingEquipmentPurposeCode("Processing Equipment"),
        manufacturer="wsistore",
        model_name=ascii_text(gen["name"])[:64],
        software_versions=[f"wsistore {__version__}"],
        description=ascii_text(
            f"super-resolved level 0: generator {gen['name']}, weights sha256 {weights}{adaptation}"
        ),
        contribution_datetime=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
    )
    icc = archive.icc_profile
    props = archive.metadata.source.properties
    study = props.get("dicom.StudyInstanceUID") or generate_uid()
    frame_of_reference = props.get("dicom.FrameOfReferenceUID") or generate_uid()
    container = props.get("dicom.ContainerIdentifier") or UNKNOWN
    specimen = props.get("dicom.SpecimenDescriptionSequence[0].SpecimenIdentifier") or container
    specimen_uid = props.get("dicom.SpecimenDescriptionSequence[0].SpecimenUID") or generate_uid()
    return WsiMetadata(
        study=Study(uid=UID(study)),
        series=Series(uid=generate_uid(), number=1, description="super-resolved (wsistore restore)"),
        patient=Patient(),
        equipment=Equipment(manufacturer=archive.metadata.source.vendor or None),
        slide=Slide(identifier=container, samples=[SlideSample(identifier=specimen, uid=UID(specimen_uid))]),
        pyramid=Pyramid(uid=generate_uid(), image=Image(), optical_paths=[OpticalPath(icc_profile=icc)] if icc else []),
        label=Label(),
        frame_of_reference_uid=UID(frame_of_reference),
        dimension_organization_uids=[generate_uid()],
        contributing_equipment=[processing],
    )


def _base_dataset(archive: Archive, metadata: Any, image_type: Any, description: str) -> Any:
    """The attributes every instance of ``image_type`` shares: wsidicom's dump of the
    metadata, the source's copied attributes, new series UID, the Derivation Description."""
    from wsidicom.metadata.schema.dicom import WsiMetadataDicomSchema

    ds = WsiMetadataDicomSchema().dump(metadata, image_type, require_icc_profile=True)
    props = archive.metadata.source.properties
    for keyword in COPIED:
        value = props.get(f"dicom.{keyword}")
        if value is None:
            continue
        if keyword.endswith(("Date", "Time")) and re.fullmatch(r"[\d:-]+(\.\d+)?", value):
            value = value.replace("-", "").replace(":", "")  # the ACR-NEMA form (2021-01-07) as DA/TM state it
        setattr(ds, keyword, value.split("\\") if "\\" in value else value)
    ds.DerivationDescription = description
    return ds


class _RestoredSource:
    """A wsidicom ``Source`` of the restored levels and the archive's associated images."""

    def __new__(cls, archive: Archive, frames: Sequence[_Frames], description: str, provenance: dict[str, Any]) -> Any:
        from wsidicom.geometry import SizeMm
        from wsidicom.instance import NumpyImageData, WsiDataset, WsiInstance
        from wsidicom.metadata.image import ImageType
        from wsidicom.source import Source

        metadata = _metadata(archive, provenance)

        def base(image_type: Any) -> Any:
            return _base_dataset(archive, metadata, image_type, description)

        volume = base(ImageType.VOLUME)
        levels = []
        for index, level in enumerate(frames):
            data = _image_data(level)
            dataset = WsiDataset.create_instance_dataset(deepcopy(volume), ImageType.VOLUME, data, index).as_dataset()
            if index == 0:  # super-resolved: derived, not the scanner's original
                dataset.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
                dataset.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence[
                    0
                ].FrameType = dataset.ImageType
            levels.append(WsiInstance(WsiDataset(dataset), data))
        associated: dict[str, list[Any]] = {name: [] for name in _ASSOCIATED.values()}

        class _SpacedImageData(NumpyImageData):
            def __init__(self, pixels: np.ndarray, spacing: Any) -> None:
                super().__init__(pixels)
                self.spacing = spacing

            @property
            def pixel_spacing(self) -> Any:
                return self.spacing

        whole = frames[0].level.box == (0, 0, archive.metadata.width, archive.metadata.height)
        for name, flavour in _ASSOCIATED.items():
            if name not in archive.associated_image_names or (flavour == "THUMBNAIL" and not whole):
                continue  # a thumbnail shows the whole slide: left out of a region's pyramid
            kind = ImageType[flavour]
            pixels = np.ascontiguousarray(archive.associated_image(name)[..., :3])
            data = NumpyImageData(pixels)
            if flavour == "THUMBNAIL":  # a view of the volume: it states its pixel spacing
                scale = archive.metadata.width / pixels.shape[1]
                data = _SpacedImageData(pixels, SizeMm(*(v * scale for v in frames[0].spacing)))
            dataset = WsiDataset.create_instance_dataset(base(kind), kind, data)
            associated[flavour].append(WsiInstance(dataset, data))

        class RestoredSource(Source):
            base_dataset = levels[0].dataset
            level_instances = levels
            label_instances = associated["LABEL"]
            overview_instances = associated["OVERVIEW"]
            thumbnail_instances = associated["THUMBNAIL"]
            annotation_instances: list[Any] = []

            def close(self) -> None:
                pass

        return RestoredSource()


def is_restored_dicom(path: Path) -> bool:
    """Whether ``path`` is a folder of DICOM instances that restore wrote (their Derivation
    Description starts with :data:`DERIVATION_TITLE`)."""
    import pydicom

    if not path.is_dir():
        return False
    files = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not files or not all(p.is_file() and is_dicom_file(p) for p in files):
        return False
    try:
        header = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["DerivationDescription"])
    except Exception:  # a damaged file: not ours to replace
        return False
    return str(header.get("DerivationDescription", "")).startswith(DERIVATION_TITLE)
