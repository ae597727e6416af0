"""Which reader opens an input, and what an input path is: the explicit registry of readers,
:func:`open_slide` (the rules of ``--reader auto``), :func:`independent_reader` (the second
decoder ``verify --against`` compares with), and the kinds of input paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from wsistore.dicom import is_dicom_input
from wsistore.errors import InputError, first_line
from wsistore.readers.base import SlideReader, clean_error, quiet
from wsistore.readers.dicom import DicomFramesReader, DicomReader, FrameOrderUnknown
from wsistore.readers.image import PLAIN_FORMATS, ArraySlide, ImageCodecsReader, PlainImageReader, image_format
from wsistore.readers.placement import refusal
from wsistore.readers.tiff import PALETTE, OpenSlideReader, TiffSlideReader, check_tiff, is_tiff

#: Image files read whole into memory (with PIL): tiles. Every other file is a slide.
TILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: The slide files a folder of inputs contributes (a slide named directly may have any suffix).
SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".dcm",
    ".vsi",
    ".czi",
)
#: What an input path is: see :func:`input_kind`.
InputKind = Literal["archive", "folder", "tile", "slide"]


#: Explicit registry of reader backends.
READERS: dict[str, Callable[[Path], SlideReader]] = {
    "openslide": OpenSlideReader,
    "tiffslide": TiffSlideReader,
    "image": PlainImageReader,
    "dicom": DicomReader,
}


def open_slide(path: str | os.PathLike[str], reader: str = "auto", frame_order: str | None = None) -> SlideReader:
    """Open a slide with ``reader`` (``auto``, ``openslide``, ``tiffslide``, ``image`` or ``dicom``).

    ``auto`` prefers tiffslide for TIFF-based formats it reads natively (Aperio SVS,
    generic and OME-TIFF: it decodes faster) and openslide for every other vendor
    format, then falls back to the other backend, and last to :class:`PlainImageReader`
    (PNG, JPEG, BMP, or a TIFF that is an image but no slide). A PNG, JPEG or BMP file
    goes straight to the plain-image reader, DICOM (a file, a folder of instances, a
    DICOMDIR) to :class:`DicomReader`: the only reader that opens a folder.

    A TIFF-based file is checked first (:func:`check_tiff`): cut short, without image
    data, or not 8-bit RGB/grey brightfield, it is refused by name; so is a format whose image
    no reader here decodes (:func:`~wsistore.readers.placement.refusal`: Olympus VSI, Zeiss CZI).
    ``frame_order`` (``row`` or ``column``) places the frames of a DICOM instance that leaves
    their order unsaid (:func:`~wsistore.readers.dicom.place_frames`).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if reader != "auto" and reader not in READERS:
        raise InputError(f"unknown reader {reader!r}; choose auto, {', '.join(READERS)}")
    if path.is_dir() and not (reader in ("auto", "dicom") and is_dicom_input(path)):
        raise InputError(f"{path} is a directory, not a slide file (nor a folder of DICOM instances)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied (not readable)")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    refused = refusal(path)
    if refused:
        raise InputError(refused)
    channels = check_tiff(path) if path.is_file() and is_tiff(path) else None
    order = [reader] if reader != "auto" else _auto_order(path)
    if channels == PALETTE:  # the slide readers return palette indices as grey
        if reader not in ("auto", "image"):
            raise InputError(f"{path}: palette-colour TIFF: {reader} reads its indices as grey; use --reader image")
        order = ["image"]
    failures = []
    for name in order:
        try:
            with quiet():
                slide = DicomReader(path, frame_order) if name == "dicom" else READERS[name](path)
                width, height = slide.dimensions  # backends open lazily: probe now
        except InputError as exc:
            if len(order) == 1:
                raise
            failures.append(f"{name}: {first_line(exc).removeprefix(f'{path}: ')}")
            continue
        except Exception as exc:
            failures.append(f"{name}: {clean_error(exc)}")
            continue
        if width <= 0 or height <= 0:
            slide.close()
            raise InputError(f"{path}: slide has no pixels ({width} x {height})")
        if channels and not isinstance(slide, ArraySlide):
            slide.properties["wsistore.source-channels"] = channels  # type: ignore[index]
        return slide
    what = "a slide or image" if "image" in order else "a slide"
    raise InputError(f"{path}: not {what} that {' or '.join(order)} can open ({'; '.join(failures)})")


def _auto_order(path: Path) -> list[str]:
    if is_dicom_input(path):
        return ["dicom"]
    if image_format(path) in PLAIN_FORMATS:
        return ["image"]
    import openslide

    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        vendor = None
    if vendor in (None, "aperio", "generic-tiff") and is_tiff(path):
        return ["tiffslide", "openslide", "image"]
    return ["openslide", "tiffslide"]


def source_files(slide: str | os.PathLike[str]) -> list[Path]:
    """The files and folders a slide is read from: the slide itself and the companion folder
    of formats that keep their data beside it (MIRAX ``NAME/``, Olympus VSI ``_NAME_/``)."""
    path = Path(slide)
    found = [path]
    companion = {".mrxs": path.stem, ".vsi": f"_{path.stem}_"}.get(path.suffix.lower())
    if companion and (path.parent / companion).is_dir():
        found.append(path.parent / companion)
    return found


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a Zarr folder (what :mod:`wsistore.archive` reads)."""
    return path.is_dir() and (path / "zarr.json").is_file()


def input_kind(path: Path) -> InputKind:
    """What ``path`` is: an archive (a Zarr folder), a slide (a folder of one DICOM slide's
    instances: :func:`~wsistore.dicom.is_dicom_input`), another folder, a tile (a file with
    one of :data:`TILE_SUFFIXES`) or a slide (any other file)."""
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if is_archive(path):
        return "archive"
    if path.is_dir():
        return "slide" if is_dicom_input(path) else "folder"
    return "tile" if path.suffix.lower() in TILE_SUFFIXES else "slide"


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The tile and slide files in ``folder`` (with ``recursive``, in every folder below it too), sorted."""
    suffixes = TILE_SUFFIXES + SLIDE_SUFFIXES
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in suffixes)


def open_input(path: Path, reader: str = "auto") -> SlideReader:
    """Open an image file by its :func:`input_kind`: a tile read whole (a :class:`PlainImageReader`,
    an :class:`ArraySlide`), else a slide with :func:`open_slide`."""
    if input_kind(path) == "tile":
        return PlainImageReader(path)
    return open_slide(path, reader)


def independent_reader(path: Path, used: str, frame_order: str | None = None) -> tuple[SlideReader | None, str]:
    """A second decoder of the slide that reader ``used`` read, independent of it, and what it
    is; None and why when no other decoder reads the format.

    OpenSlide and tiffslide check each other (different code over the same TIFF); a DICOM
    slide read by wsidicom is checked against pydicom's frames placed by
    :class:`~wsistore.readers.dicom.DicomFramesReader`; a plain image decoded by PIL against
    imagecodecs."""
    other = {"openslide": "tiffslide", "tiffslide": "openslide"}.get(used)
    try:
        with quiet():
            if other is not None:
                reader: SlideReader = READERS[other](path)
            elif used == "dicom":
                reader = _frames_reader(path, frame_order)
            elif used == "image":
                reader = ImageCodecsReader(path)
            else:
                return None, f"no second decoder for reader {used}"
            reader.dimensions  # noqa: B018  (backends open lazily: probe now)
    except Exception as exc:
        name = other or {"dicom": "pydicom", "image": "imagecodecs"}[used]
        return None, f"{name} cannot read it ({clean_error(exc).removeprefix(f'{path}: ')})"
    return reader, reader.name


def _frames_reader(path: Path, frame_order: str | None) -> DicomFramesReader:
    """pydicom's frames placed as their own seams tell; in the order the user named only where
    the seams do not tell (a named order that the seams contradict is not followed: the check
    then fails, as it should)."""
    try:
        return DicomFramesReader(path)
    except FrameOrderUnknown:
        return DicomFramesReader(path, frame_order)
