"""Slide readers: one small OpenSlide-style interface over openslide-python, tiffslide and
wsidicom, and the rules for what an input path is and which image of a file is the slide.

Modules, in the order data flows through them:

- :mod:`~wsistore.readers.base`: the :class:`SlideReader` interface, RGB conversion, the mpp rule;
- :mod:`~wsistore.readers.placement`: which image of a file is the slide, formats refused by
  name, and where the frames of a tiled image go (the one home of these rules);
- :mod:`~wsistore.readers.tiff`: OpenSlide and tiffslide (TIFF-based and vendor formats);
- :mod:`~wsistore.readers.dicom`: DICOM WSI through wsidicom, and pydicom's frames placed by hand;
- :mod:`~wsistore.readers.image`: arrays and plain image files (PIL, imagecodecs);
- :mod:`~wsistore.readers.registry`: the registry, ``--reader auto``, the second decoder of
  ``verify --against``, and the kinds of input paths.
"""

from wsistore.readers.base import SlideReader, resolve_mpp
from wsistore.readers.dicom import FRAME_ORDER_PROPERTY, DicomFramesReader, DicomReader, given_frame_order
from wsistore.readers.image import (
    PLAIN_IMAGE_MAX_PIXELS,
    ArraySlide,
    ImageCodecsReader,
    PlainImageReader,
    read_image,
    read_tile,
)
from wsistore.readers.placement import FRAME_ORDERS
from wsistore.readers.registry import (
    READERS,
    SLIDE_SUFFIXES,
    TILE_SUFFIXES,
    InputKind,
    image_files,
    independent_reader,
    input_kind,
    is_archive,
    open_input,
    open_slide,
    source_files,
)
from wsistore.readers.tiff import OpenSlideReader, TiffSlideReader, check_tiff, stored_associated_bytes

__all__ = [
    "FRAME_ORDER_PROPERTY",
    "FRAME_ORDERS",
    "PLAIN_IMAGE_MAX_PIXELS",
    "READERS",
    "SLIDE_SUFFIXES",
    "TILE_SUFFIXES",
    "ArraySlide",
    "DicomFramesReader",
    "DicomReader",
    "ImageCodecsReader",
    "InputKind",
    "OpenSlideReader",
    "PlainImageReader",
    "SlideReader",
    "TiffSlideReader",
    "check_tiff",
    "given_frame_order",
    "image_files",
    "independent_reader",
    "input_kind",
    "is_archive",
    "open_input",
    "open_slide",
    "read_image",
    "read_tile",
    "resolve_mpp",
    "source_files",
    "stored_associated_bytes",
]
