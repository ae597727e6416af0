"""A restored slide as a DICOM VL Whole Slide Microscopy series: the one home of its
instances' attributes, UIDs, frames and Part 10 encoding. ``restore --format dicom`` writes
these instances as files (:mod:`wsistore.restoration.dicom_writer`) and ``serve`` offers the
same instances over DICOMweb (:mod:`wsistore.serve.dicomweb`), frames made on demand.

Levels: level 0 is the super-resolved image; the archive's stored levels whose downsample
is a power of two follow, and every dyadic level between them (/2 from level 0 ...) down to
one frame is the 2 x 2 mean of the decoded frames of the level below (:class:`HalfFrames`),
so the pyramid steps by 2 as DICOM viewers expect. The label, overview (``macro``) and
thumbnail images the archive keeps are instances of their own (an archive ingested with
``--strip-label`` has none).

Frames are JPEG baseline (YCbCr 4:2:0, ``YBR_FULL_422``) or JPEG 2000 (lossy ``YBR_ICT``;
lossless ``YBR_RCT``), encoded by wsidicom's encoders; the associated images JPEG baseline.

Attributes: wsidicom's model of the metadata dumped as DICOM, a DICOM source's patient,
study, equipment and Frame of Reference attributes copied from the archive's ``dicom.*``
properties, the Derivation Description that names the generator (what marks a folder restore
wrote) and a Processing Equipment item. UIDs are derived, never random (:class:`SeriesUids`):
the same archive restored by the same generator with the same frames is the same series
with the same instances, in a restore's files, after a rerun and on every start of serve.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from functools import cached_property
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from wsistore._version import __version__
from wsistore.archive.reader import Archive
from wsistore.geometry import Box
from wsistore.outputs import ascii_text
from wsistore.restoration.levels import OutputLevel
from wsistore.restoration.tiff_writer import DEFAULT_JPEG_QUALITY

CODECS = ("jpeg", "jpeg2000")
#: Lossy JPEG 2000 is encoded to this PSNR (dB) target.
JPEG2000_PSNR = 45
#: The first line of every instance's Derivation Description: what marks a folder restore wrote.
DERIVATION_TITLE = "wsistore super-resolved image"
#: The value of a required identifier the source does not state (Container Identifier).
UNKNOWN = "unknown"
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: The root of every UID made here (pydicom's, as ``generate_uid`` uses it).
UID_ROOT = "1.2.826.0.1.3680043.8.498."
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
#: The archive's associated images -> the wsidicom image type of their instances, in the
#: order their instances are numbered (after the levels).
ASSOCIATED = {"thumbnail": "THUMBNAIL", "macro": "OVERVIEW", "label": "LABEL"}
#: The compression ratio stated (Lossy Image Compression Ratio is required; frames vary).
_RATIO = 10.0


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

    @property
    def transfer_syntax(self) -> str:
        return str(self.encoder.transfer_syntax)

    @property
    def media_type(self) -> str:
        """The frames' media type in DICOMweb (``image/jpeg``, ``image/jp2``)."""
        return "image/jpeg" if self.name == "jpeg" else "image/jp2"

    def encode(self, tile: np.ndarray) -> bytes:
        return bytes(self.encoder.encode(tile))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.jpeg8_decode(data) if self.name == "jpeg" else imagecodecs.jpeg2k_decode(data)

    def describe(self) -> str:
        if self.name == "jpeg":
            return f"JPEG baseline quality {self.quality}, YCbCr 4:2:0"
        return "JPEG 2000 lossless (YBR_RCT)" if self.lossless else f"JPEG 2000 lossy, {JPEG2000_PSNR} dB PSNR target"


# -- frames ---------------------------------------------------------------------------------
class Frames(ABC):
    """One instance's frames: ``size`` pixels cut into ``tile`` frames, row by row
    (TILED_FULL), each coded by ``codec``; ``spacing`` is the pixel spacing ``(x, y)`` in mm
    (None for a label or an overview)."""

    def __init__(
        self, codec: DicomCodec, tile: tuple[int, int], size: tuple[int, int], spacing: tuple[float, float] | None
    ) -> None:
        self.codec, self.tile, self.size, self.spacing = codec, tile, size, spacing
        self.cols, self.rows = -(-size[0] // tile[0]), -(-size[1] // tile[1])
        #: where coded frames are read from once coded elsewhere (a spool, a cache): ``(x, y) -> bytes``
        self.source: Callable[[int, int], bytes] | None = None

    @property
    def count(self) -> int:
        return self.cols * self.rows

    def box(self, x: int, y: int) -> Box:
        """Frame ``(x, y)``'s pixels in this level (cut at the level's edge)."""
        (tw, th), (w, h) = self.tile, self.size
        return x * tw, y * th, min((x + 1) * tw, w), min((y + 1) * th, h)

    @abstractmethod
    def pixels(self, x: int, y: int) -> np.ndarray:
        """Frame ``(x, y)`` before coding, full size (edge frames padded by repeating their
        last pixels)."""

    def code(self, x: int, y: int) -> bytes:
        """Frame ``(x, y)`` coded now."""
        return self.codec.encode(self.pixels(x, y))

    def encoded(self, x: int, y: int) -> bytes:
        """The coded frame at column ``x``, row ``y`` (from :attr:`source` when set)."""
        return self.source(x, y) if self.source is not None else self.code(x, y)

    def decoded(self, x: int, y: int) -> np.ndarray:
        """The frame as a reader decodes it."""
        return self.codec.decode(self.encoded(x, y))

    def frame(self, index: int) -> bytes:
        """The coded frame ``index`` (0-based, row by row)."""
        y, x = divmod(index, self.cols)
        return self.encoded(x, y)


def padded(pixels: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """``pixels`` padded to a full ``tile`` (width, height) by repeating the last row and
    column, as restore's spool pads its edge tiles (:func:`~wsistore.restoration.spool.cut_tiles`)."""
    (tw, th), (h, w) = tile, pixels.shape[:2]
    if (w, h) == (tw, th):
        return np.ascontiguousarray(pixels)
    return np.pad(pixels, ((0, th - h), (0, tw - w), (0, 0)), mode="edge")


class ReadFrames(Frames):
    """A level read region by region: ``read(box)`` gives the level's RGB pixels of ``box``."""

    def __init__(
        self,
        codec: DicomCodec,
        tile: int,
        size: tuple[int, int],
        spacing: tuple[float, float],
        read: Callable[[Box], np.ndarray],
    ) -> None:
        super().__init__(codec, (tile, tile), size, spacing)
        self.read = read

    def pixels(self, x: int, y: int) -> np.ndarray:
        return padded(self.read(self.box(x, y)), self.tile)


class ArchiveFrames(ReadFrames):
    """One of the archive's stored levels (``level``, a box of it for a region)."""

    def __init__(
        self, codec: DicomCodec, tile: int, level: OutputLevel, spacing: tuple[float, float], archive: Archive
    ) -> None:
        x0, y0 = level.box[:2]
        index = level.archive_level
        assert index is not None

        def read(box: Box) -> np.ndarray:
            return archive.read_lr(index, (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0))

        super().__init__(codec, tile, (level.width, level.height), spacing, read)


class HalfFrames(Frames):
    """A dyadic level the archive does not store: each pixel the mean of 2 x 2 pixels of the
    level below as a reader decodes it (``finer``), rounded (PIL's ``reduce(2)``)."""

    def __init__(self, finer: Frames) -> None:
        spacing = (finer.spacing[0] * 2, finer.spacing[1] * 2) if finer.spacing else None
        super().__init__(finer.codec, finer.tile, (-(-finer.size[0] // 2), -(-finer.size[1] // 2)), spacing)
        self.finer = finer

    def pixels(self, x: int, y: int) -> np.ndarray:
        (tw, th), f = self.tile, self.finer
        stitched = np.empty((2 * th, 2 * tw, 3), dtype=np.uint8)
        for dy in (0, 1):
            for dx in (0, 1):
                fx, fy = min(2 * x + dx, f.cols - 1), min(2 * y + dy, f.rows - 1)
                stitched[dy * th : (dy + 1) * th, dx * tw : (dx + 1) * tw] = f.decoded(fx, fy)
        x0, y0, x1, y1 = self.box(x, y)
        half = np.asarray(Image.fromarray(stitched).reduce(2))[: y1 - y0, : x1 - x0]
        return padded(half, self.tile)


class ImageFrames(Frames):
    """A label, overview or thumbnail: the whole image as one frame."""

    def __init__(self, codec: DicomCodec, image: np.ndarray, spacing: tuple[float, float] | None = None) -> None:
        size = (image.shape[1], image.shape[0])
        super().__init__(codec, size, size, spacing)
        self.image = np.ascontiguousarray(image[..., :3])

    def pixels(self, x: int, y: int) -> np.ndarray:
        return self.image


# -- UIDs and attributes ----------------------------------------------------------------------
class SeriesUids:
    """The series' UIDs, derived from what its pixels depend on (``seed``: the archive's
    manifest, the generator's weights and the adaptation, the region, the frames' codec and
    size), and the source's own study, frame of reference and specimen UIDs where it states
    them (a DICOM source), else derived from the source's sha256: the same slide is always the
    same study. Each is ``generate_uid`` of pydicom's root with its role as entropy."""

    def __init__(self, archive: Archive, provenance: dict[str, Any], codec: DicomCodec, tile: int) -> None:
        gen = provenance["generator"]
        identity = {
            "archive": archive.metadata.manifest_sha256,
            "generator": [gen["name"], gen["weights_sha256"], gen.get("adaptation_sha256")],
            "region": list(provenance["region"]),
            "frames": [codec.describe(), tile],
        }
        self.seed = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        self.source = archive.metadata.source.sha256
        self.properties = archive.metadata.source.properties

    def _uid(self, *entropy: str) -> Any:
        from pydicom.uid import generate_uid

        return generate_uid(UID_ROOT, entropy_srcs=list(entropy))

    def of_series(self, role: str) -> Any:
        """The UID of ``role`` (series, pyramid, dimension organisation) in this series."""
        return self._uid("wsistore", role, self.seed)

    def of_source(self, role: str, keyword: str) -> Any:
        """The source's own UID ``keyword`` (``dicom.*`` property), else one of ``role`` made
        from the source's sha256."""
        from pydicom.uid import UID

        return UID(self.properties.get(f"dicom.{keyword}") or self._uid("wsistore", role, self.source))

    def of_instance(self, flavour: str, size: tuple[int, int]) -> Any:
        """The SOP Instance UID of the ``flavour`` (VOLUME, LABEL ...) instance of ``size``."""
        return self._uid("wsistore", "instance", self.seed, flavour, f"{size[0]}x{size[1]}")


def description(provenance: dict[str, Any], codec: DicomCodec, mpp_known: bool) -> str:
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


def level0_spacing(archive: Archive) -> tuple[float, float]:
    """Level 0's ``(x, y)`` pixel spacing in mm: the source's mpp, or where it is unknown a
    placeholder that makes the whole slide 1 mm wide (DICOM requires Pixel Spacing; the
    Derivation Description says it is a placeholder)."""
    md = archive.metadata
    if md.mpp:
        return md.mpp[0] / 1000, md.mpp[1] / 1000
    return 1.0 / md.width, 1.0 / md.width


def _metadata(archive: Archive, provenance: dict[str, Any], uids: SeriesUids, created: datetime.datetime) -> Any:
    """wsidicom's metadata model of the series: study, series, slide, the ICC profile, the
    processing equipment."""
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
        contribution_datetime=created,
    )
    icc = archive.icc_profile
    props = archive.metadata.source.properties
    container = props.get("dicom.ContainerIdentifier") or UNKNOWN
    specimen = props.get("dicom.SpecimenDescriptionSequence[0].SpecimenIdentifier") or container
    return WsiMetadata(
        study=Study(uid=uids.of_source("study", "StudyInstanceUID")),
        series=Series(uid=uids.of_series("series"), number=1, description="super-resolved (wsistore restore)"),
        patient=Patient(),
        equipment=Equipment(manufacturer=archive.metadata.source.vendor or None),
        slide=Slide(
            identifier=container,
            samples=[
                SlideSample(
                    identifier=specimen, uid=uids.of_source("specimen", "SpecimenDescriptionSequence[0].SpecimenUID")
                )
            ],
        ),
        pyramid=Pyramid(
            uid=uids.of_series("pyramid"),
            image=Image(),
            optical_paths=[OpticalPath(icc_profile=icc)] if icc else [],
        ),
        label=Label(),
        frame_of_reference_uid=uids.of_source("frame-of-reference", "FrameOfReferenceUID"),
        dimension_organization_uids=[uids.of_series("dimension-organization")],
        contributing_equipment=[processing],
    )


def _base_dataset(archive: Archive, metadata: Any, image_type: Any, derivation: str) -> Any:
    """The attributes every instance of ``image_type`` shares: wsidicom's dump of the
    metadata, the source's copied attributes, the Derivation Description."""
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
    ds.DerivationDescription = derivation
    return ds


def _image_data(frames: Frames) -> Any:
    """What wsidicom's ``create_instance_dataset`` reads of ``frames`` (an ``ImageData``)."""
    from wsidicom.codec import LossyCompressionIsoStandard
    from wsidicom.geometry import Point, Size, SizeMm
    from wsidicom.instance import ImageData
    from wsidicom.metadata import LossyCompression

    encoder = frames.codec.encoder

    class FramesImageData(ImageData):
        transfer_syntax = encoder.transfer_syntax
        image_size = Size(*frames.size)
        tile_size = Size(*frames.tile)
        pixel_spacing = SizeMm(*frames.spacing) if frames.spacing else None
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


# -- the series -----------------------------------------------------------------------------
@dataclass
class SeriesInstance:
    """One instance of the series: its header (``dataset``, a pydicom Dataset without Pixel
    Data) and its frames; ``level`` is its index in the pyramid (None for an associated image)."""

    dataset: Any
    frames: Frames
    level: int | None

    @property
    def uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def transfer_syntax(self) -> str:
        return self.frames.codec.transfer_syntax


def pyramid(level0: Frames, stored: dict[int, Frames]) -> list[Frames]:
    """The dyadic pyramid from ``level0``: at each downsample 2, 4, 8 ... the archive's level
    of that downsample (``stored``), else the half of the level below, down to the coarsest
    stored level and on to one frame."""
    levels, downsample = [level0], 1
    while levels[-1].count > 1 or downsample < max(stored, default=1):
        downsample *= 2
        levels.append(stored.get(downsample) or HalfFrames(levels[-1]))
    return levels


def restored_series(
    archive: Archive,
    provenance: dict[str, Any],
    level0: Frames,
    levels: Sequence[OutputLevel],
    created: datetime.datetime,
) -> list[SeriesInstance]:
    """The instances of ``archive`` restored as ``provenance`` says (with its ``region`` and
    ``wsistore_version``): ``level0``'s frames (``tile`` square, ``codec``) and the archive's
    stored ``levels`` after it (:func:`~wsistore.restoration.levels.output_levels`), then the
    associated images; ``created`` is their Instance Creation and Contribution DateTime."""
    from wsidicom.instance import WsiDataset
    from wsidicom.metadata.image import ImageType

    codec, tile = level0.codec, level0.tile[0]
    uids = SeriesUids(archive, provenance, codec, tile)
    metadata = _metadata(archive, provenance, uids, created)
    derivation = description(provenance, codec, archive.metadata.mpp is not None)
    spacing = level0_spacing(archive)
    stored: dict[int, Frames] = {
        lv.downsample: ArchiveFrames(codec, tile, lv, (spacing[0] * lv.downsample, spacing[1] * lv.downsample), archive)
        for lv in levels[1:]
    }
    instances: list[SeriesInstance] = []

    def add(kind: Any, frames: Frames, level: int | None, base: Any) -> None:
        data = _image_data(frames)
        made = WsiDataset.create_instance_dataset(base, kind, data, level).as_dataset()
        if level == 0:  # super-resolved: derived, not the scanner's original
            made.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
            made.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence[0].FrameType = [
                "DERIVED",
                "PRIMARY",
                "VOLUME",
                "NONE",
            ]
        paths = [str(item.OpticalPathIdentifier) for item in made.get("OpticalPathSequence", [])]
        tiled = WsiDataset(made).as_tiled_full(data.focal_planes, paths or data.optical_paths, data.tiled_size)
        uid = uids.of_instance(kind.value, frames.size)
        ds = tiled.as_instance(instance_uid=uid, instance_number=len(instances) + 1).as_dataset()
        ds.InstanceCreationDate = created.strftime("%Y%m%d")
        ds.InstanceCreationTime = created.strftime("%H%M%S")
        instances.append(SeriesInstance(ds, frames, level))

    volume = _base_dataset(archive, metadata, ImageType.VOLUME, derivation)
    levels_made = pyramid(level0, stored)
    for index, frames in enumerate(levels_made):
        add(ImageType.VOLUME, frames, index, deepcopy(volume))
    whole = level0.size == (archive.metadata.width, archive.metadata.height)
    jpeg = DicomCodec("jpeg", codec.quality if codec.name == "jpeg" else DEFAULT_JPEG_QUALITY)
    for name, flavour in ASSOCIATED.items():
        if name not in archive.associated_image_names or (flavour == "THUMBNAIL" and not whole):
            continue  # a thumbnail shows the whole slide: left out of a region's series
        pixels = archive.associated_image(name)
        thumb = None
        if flavour == "THUMBNAIL":  # a view of the volume at one of its levels' size and spacing
            pixels, thumb = _at_nearest_level(pixels, levels_made)
        kind = ImageType[flavour]
        frames = ImageFrames(jpeg, pixels, thumb)
        add(kind, frames, None, _base_dataset(archive, metadata, kind, derivation))
    return instances


def _at_nearest_level(image: np.ndarray, levels: Sequence[Frames]) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The thumbnail resized to the size of the pyramid level nearest to its own, and that
    level's pixel spacing. Viewers built on dicom-microscopy-viewer (OHIF's microscopy mode,
    Slim) put a thumbnail into the pyramid unless a level has its resolution; one between two
    levels gives two levels the same zoom, and they draw nothing."""
    width = image.shape[1]
    level = min(levels, key=lambda f: abs(np.log(f.size[0] / width)))
    if (image.shape[1], image.shape[0]) != level.size:
        image = np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., :3])).resize(level.size, Image.Resampling.LANCZOS)
        )
    return image, level.spacing


# -- Part 10 ----------------------------------------------------------------------------------
#: The byte lengths above which frame offsets no longer fit a Basic Offset Table.
_BOT_LIMIT = 0xFFFFFFFF


def part10_header(instance: SeriesInstance, lengths: Sequence[int] | None = None) -> bytes:
    """The DICOM Part 10 file up to the first frame: preamble, file meta, the dataset and the
    start of the encapsulated Pixel Data. With the frames' ``lengths`` the Basic Offset Table
    is filled (an Extended Offset Table where the offsets pass 4 GiB); without them it is empty,
    as for a stream whose frames are not made yet."""
    import io

    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

    ds = instance.dataset
    offsets: list[int] = []
    if lengths is not None:
        position = 0
        for n in lengths:
            offsets.append(position)
            position += 8 + n + n % 2
    extended = bool(offsets) and offsets[-1] > _BOT_LIMIT
    if extended:
        ds = deepcopy(ds)
        ds.ExtendedOffsetTable = np.asarray(offsets, dtype="<u8").tobytes()
        ds.ExtendedOffsetTableLengths = np.asarray(lengths, dtype="<u8").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(instance.transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"WSISTORE_{__version__}"[:16]
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    fp = DicomFileLike(buffer)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta)
    write_dataset(fp, ds)
    table = b"" if extended else np.asarray(offsets, dtype="<u4").tobytes()
    buffer.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")  # Pixel Data, encapsulated
    buffer.write(b"\xfe\xff\x00\xe0" + len(table).to_bytes(4, "little") + table)
    return buffer.getvalue()


def frame_item(data: bytes) -> bytes:
    """One frame as an item of encapsulated Pixel Data (padded to an even length)."""
    pad = b"\x00" if len(data) % 2 else b""
    return b"\xfe\xff\x00\xe0" + (len(data) + len(pad)).to_bytes(4, "little") + data + pad


#: What ends encapsulated Pixel Data (the Sequence Delimitation Item).
PART10_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def part10_chunks(instance: SeriesInstance, frames: Iterable[bytes]) -> Iterator[bytes]:
    """The instance as a Part 10 file, piece by piece, its frames coded as they are needed
    (an empty Basic Offset Table: for streaming, as WADO-RS retrieve sends it)."""
    yield part10_header(instance)
    for data in frames:
        yield frame_item(data)
    yield PART10_END


def write_part10(out: BinaryIO, instance: SeriesInstance, frames: Iterable[bytes], lengths: Sequence[int]) -> None:
    """Write the instance as a Part 10 file to ``out``: its coded ``frames`` (in order, of
    ``lengths`` bytes) after a filled Basic Offset Table."""
    out.write(part10_header(instance, lengths))
    for data in frames:
        out.write(frame_item(data))
    out.write(PART10_END)
