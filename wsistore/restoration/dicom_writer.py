"""DICOM whole-slide restore output (VL Whole Slide Microscopy Image): a folder of
instances, for PACS, OpenSlide 4, QuPath and DICOMweb viewers.

The instances, their attributes and UIDs are :mod:`wsistore.restoration.dicom_series`'s (the
same that ``serve`` offers over DICOMweb); this module writes them. Level 0 is encoded row by
row into the spool (:mod:`wsistore.restoration.spool`, journalled for ``--resume``); at the
end every other level is encoded into a spool of its own (the dyadic levels the archive does
not store from the decoded frames of the level below), and each instance is written as a
Part 10 file from its spooled frames, with a Basic Offset Table. The Derivation Description
that starts every instance's header is what marks a folder restore wrote
(:func:`is_restored_dicom`).
"""

from __future__ import annotations

import datetime
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wsistore.archive.reader import Archive
from wsistore.dicom import is_dicom_file
from wsistore.geometry import Box
from wsistore.restoration.dicom_series import (
    CODECS,
    DERIVATION_TITLE,
    JPEG2000_PSNR,
    DicomCodec,
    Frames,
    ReadFrames,
    level0_spacing,
    restored_series,
    write_part10,
)
from wsistore.restoration.levels import OutputLevel
from wsistore.restoration.spool import SpooledLevel0

__all__ = ["CODECS", "DERIVATION_TITLE", "JPEG2000_PSNR", "DicomCodec", "DicomWsiWriter", "is_restored_dicom"]

RESULT_NAME = "restored.dicom"
#: The spool of the levels after level 0, one file each, in the work directory.
LEVELS_DIR = "levels"


class DicomWsiWriter(SpooledLevel0[DicomCodec]):
    """Writes one restore as a folder of DICOM WSI instances inside a :class:`PartialOutput`."""

    #: The archive levels at powers of 2; the dyadic levels between are made from the level below.
    level_factor = 2

    def finish(self, archive: Archive, levels: list[OutputLevel], provenance: dict[str, Any]) -> str:
        """Write the instances from the spooled level 0, the archive's levels and associated
        images; returns the folder's name in the work directory."""
        lengths = self.spooled_lengths(levels[0])
        work = self.output.work.path
        result = work / RESULT_NAME
        for old in (result, work / LEVELS_DIR):  # an assembly a kill cut short: the level-0 spool is all that counts
            if old.exists():
                shutil.rmtree(old)
        level0 = levels[0]
        offsets = [np.concatenate([[0], np.cumsum(lengths[k])]).tolist() for k in range(len(lengths))]

        def spooled(x: int, y: int) -> bytes:
            with open(work / self._row_key(y), "rb") as f:
                f.seek(offsets[y][x])
                return f.read(offsets[y][x + 1] - offsets[y][x])

        def read(box: Box) -> np.ndarray:  # a spooled frame, decoded (boxes are whole frames)
            return self.codec.decode(spooled(box[0] // self.tile, box[1] // self.tile))[
                : box[3] - box[1], : box[2] - box[0]
            ]

        size = (level0.width, level0.height)
        frames = ReadFrames(self.codec, self.tile, size, level0_spacing(archive), read)
        frames.source = spooled
        created = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        instances = restored_series(archive, provenance, frames, levels, created)
        (work / LEVELS_DIR).mkdir()
        result.mkdir()
        for index, instance in enumerate(instances):
            if index == 0:
                coded = (frames.encoded(x, y) for y in range(frames.rows) for x in range(frames.cols))
                write = (coded, [n for k in range(len(lengths)) for n in lengths[k]])
            else:
                write = self._spool(instance.frames, work / LEVELS_DIR / f"{index}.bin")
            with open(result / f"{instance.uid}.dcm", "wb") as out:
                write_part10(out, instance, *write)
        shutil.rmtree(work / LEVELS_DIR)
        return RESULT_NAME

    def _spool(self, frames: Frames, path: Path) -> tuple[Any, list[int]]:
        """Code ``frames`` in parallel into the file ``path``; then read them from there (the
        level above is made from them): the frames, read back in order, and their lengths."""
        lengths: list[int] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="wsistore-encode") as pool, open(path, "wb") as f:
            for data in pool.map(frames.frame, range(frames.count)):
                f.write(data)
                lengths.append(len(data))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()

        def spooled(x: int, y: int) -> bytes:
            k = y * frames.cols + x
            with open(path, "rb") as f:
                f.seek(offsets[k])
                return f.read(offsets[k + 1] - offsets[k])

        frames.source = spooled
        return (spooled(x, y) for y in range(frames.rows) for x in range(frames.cols)), lengths


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
