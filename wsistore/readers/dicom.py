"""DICOM whole-slide images (VL Whole Slide Microscopy): :class:`DicomReader` reads them with
wsidicom; :class:`DicomFramesReader` decodes the base instance's frames with pydicom and
places them by positions it computes itself, the independent decoder ``verify --against``
compares with.

:mod:`wsistore.dicom` checks and repairs the instances. Frames whose order an instance leaves
unsaid (:func:`wsistore.dicom.frame_order_unstated`) are placed in the order their seams tell
(:func:`wsistore.readers.placement.decide_frame_order`), or the order the user names; when the
seams do not tell and no order is named, the slide is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from wsistore.errors import InputError, first_line
from wsistore.readers.base import SingleLevelReader, SlideReader, decoded, positive_float, quiet, read_within, to_rgb
from wsistore.readers.placement import FRAME_ORDERS, FrameGrid, FrameOrder, decide_frame_order

#: Properties that record how frames of an unstated order were placed.
FRAME_ORDER_PROPERTY = "wsistore.dicom-frame-order"
FRAME_ORDER_EVIDENCE = "wsistore.dicom-frame-order-evidence"
#: The evidence's opening words when the user named the order.
GIVEN = "given by the user"
#: Decoded frames kept by :class:`DicomFramesReader`.
FRAME_CACHE = 64


class FrameOrderUnknown(InputError):
    """The frames' order is stated nowhere, the seams do not tell, and the user named none."""


class DicomReader(SlideReader):
    """wsidicom over a DICOM WSI: one instance file, a folder of instances, or a DICOMDIR
    (:mod:`wsistore.dicom` checks and, where needed, repairs the instances first).

    The levels are the stored ones of the first pyramid, read at their own resolution (never
    resampled). Properties: the base instance's attributes as ``dicom.*``, the mpp from its
    Pixel Spacing, the objective power from its optical path; its label, overview and
    thumbnail instances are the ``label``, ``macro`` and ``thumbnail`` images.
    """

    name = "dicom"

    def __init__(self, path: Path, frame_order: str | None = None) -> None:
        from upath import UPath
        from wsidicom import WsiDicom
        from wsidicom.file.io.wsidicom_io import WsiDicomReadIO
        from wsidicom.file.wsidicom_file_source import WsiDicomFileSource

        from wsistore import dicom

        super().__init__(path)
        self._instances = list(dicom.iter_instances(path))
        volumes = [i for i in self._instances if i.flavour == "VOLUME"]
        if not volumes:
            raise InputError(f"{path}: no DICOM whole-slide volume (pyramid level) instance")
        self._base = max(volumes, key=lambda i: i.pixels)
        self._order_record = place_frames(path, self._instances, self._base, frame_order)
        streams = [WsiDicomReadIO(i.open(), filepath=UPath(i.path)) for i in self._instances]
        try:
            with quiet():
                self._slide = WsiDicom(WsiDicomFileSource(streams), True)
                self._levels = list(self._slide.levels)
        except Exception as exc:
            for stream in streams:
                stream.close()
            raise InputError(f"{path}: DICOM slide that wsidicom cannot read ({first_line(exc)})") from None

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(i.path for i in self._instances)

    @cached_property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((level.size.width, level.size.height) for level in self._levels)

    @cached_property
    def level_downsamples(self) -> tuple[float, ...]:
        (w0, h0), *_ = self.level_dimensions
        return tuple((w0 / w + h0 / h) / 2 for w, h in self.level_dimensions)

    @cached_property
    def properties(self) -> Mapping[str, str]:
        from wsistore import dicom

        header = self._base.header
        props = dicom.properties(header)
        props["openslide.vendor"] = "dicom"
        props["openslide.level-count"] = str(self.level_count)
        props["openslide.level[0].tile-width"] = str(int(header.Columns))
        props["openslide.level[0].tile-height"] = str(int(header.Rows))
        for i, ((w, h), d) in enumerate(zip(self.level_dimensions, self.level_downsamples, strict=True)):
            props |= {f"openslide.level[{i}].width": str(w), f"openslide.level[{i}].height": str(h)}
            props[f"openslide.level[{i}].downsample"] = repr(d)
        spacing = dicom.pixel_spacing(header)
        if spacing:
            props["openslide.mpp-x"], props["openslide.mpp-y"] = (repr(v * 1000) for v in spacing)
        power = props.get("dicom.OpticalPathSequence[0].ObjectiveLensPower")
        if positive_float(power):
            props["openslide.objective-power"] = str(power)
        fixed = [f"{i.path.name}: {r}" for i in self._instances for r in i.repairs]
        if fixed:
            props["wsistore.dicom-repairs"] = "; ".join(fixed)
        return props | self._order_record

    @cached_property
    def icc_profile(self) -> bytes | None:
        try:
            profile = self._base.header.OpticalPathSequence[0].ICCProfile
        except (AttributeError, IndexError):
            return None
        return bytes(profile) if profile else None

    @cached_property
    def _associated(self) -> dict[str, Any]:
        """Associated image name -> its wsidicom group (the first label and overview, the
        largest thumbnail)."""
        found: dict[str, Any] = {}
        for name, series in (("label", self._slide.labels), ("macro", self._slide.overviews)):
            if series is not None and len(series):
                found[name] = series.get(0)
        thumbnails = self._slide.pyramid.thumbnails
        if thumbnails is not None and len(thumbnails):
            found["thumbnail"] = max(thumbnails.groups, key=lambda g: g.size.width * g.size.height)
        return found

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._associated))

    def associated_image(self, name: str) -> np.ndarray:
        from wsidicom.thread import ReadExecutor

        group = self._associated[name]

        def read() -> Any:
            with ReadExecutor() as executor:
                return group.get_default_full(executor=executor)

        return decoded(self.path, name, read)

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """The stored level's pixels; past its border white, as openslide's transparent is."""
        downsample = self.level_downsamples[level]
        origin = (int(location[0] / downsample), int(location[1] / downsample))
        return read_within(lambda xy, wh: self._read(level, xy, wh), origin, size, self.level_dimensions[level])

    def _read(self, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.read_region(location, self._levels[level].level, size, threads=1, as_array=True))

    def close(self) -> None:
        self._slide.close()


def place_frames(path: Path, instances: list[Any], base: Any, given: str | None = None) -> dict[str, str]:
    """Decide where the frames of every instance that leaves their order unsaid go (the order
    ``given`` by the user, else what the base's seams tell), set it on those instances, and
    return the properties that record it (empty when every instance states its order).

    Refused in one line when the seams do not tell and no order is given."""
    from wsistore.dicom import frame_order_unstated

    if given is not None and given not in FRAME_ORDERS:
        raise InputError(f"frame order must be {' or '.join(FRAME_ORDERS)}, got {given!r}")
    unstated = [i for i in instances if frame_order_unstated(i.header, i.per_frame_groups)]
    if not unstated:
        return {}
    probe = base if base in unstated else max(unstated, key=lambda i: i.pixels)
    decision = decide_frame_order(frame_grid(probe.header), lambda k: decode_frame(probe.path, k))
    if given is not None and decision.order not in (None, given):
        raise InputError(
            f"{path}: --frame-order {given} contradicts the frames: their seams join {decision.order} by "
            f"{decision.order} ({decision.describe()}); leave --frame-order out"
        )
    if given is not None:
        order = given
        evidence = f"{GIVEN} (--frame-order {given}); the frames' {decision.describe()}"
    elif decision.order is not None:
        order, evidence = decision.order, f"decided from the frames: {decision.describe()}"
    else:
        raise FrameOrderUnknown(
            f"{path}: the order of its frames is not stated (no Dimension Organization Type, no per-frame "
            f"positions) and their seams do not tell row by row from column by column ({decision.describe()}); "
            "name it with --frame-order row|column"
        )
    for instance in unstated:
        instance.frame_order = order
        instance.repairs.append(
            f"no Dimension Organization Type nor per-frame positions: frames placed {order} by {order}"
        )
    return {FRAME_ORDER_PROPERTY: order, FRAME_ORDER_EVIDENCE: evidence}


def frame_grid(header: Any) -> FrameGrid:
    """The tiling of an instance's total pixel matrix by its frames."""
    return FrameGrid(
        (int(header.Columns), int(header.Rows)), (int(header.TotalPixelMatrixColumns), int(header.TotalPixelMatrixRows))
    )


def decode_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of a DICOM file decoded by pydicom (its own decoders: Pillow for
    JPEG, as the frame's markers say), as RGB."""
    from pydicom.pixels import pixel_array

    try:
        with quiet():
            return to_rgb(np.asarray(pixel_array(path, index=index)))
    except Exception as exc:  # decoders raise many types for corrupt data
        raise InputError(
            f"{path.name}: frame {index} does not decode ({type(exc).__name__}: {first_line(exc)}); "
            "the file may be truncated or corrupt"
        ) from None


def given_frame_order(properties: Mapping[str, str]) -> str | None:
    """The frame order an archive's source was read with when the user named it (else None:
    the reader decides again)."""
    if properties.get(FRAME_ORDER_EVIDENCE, "").startswith(GIVEN):
        return properties.get(FRAME_ORDER_PROPERTY)
    return None


class DicomFramesReader(SingleLevelReader):
    """The base instance of a DICOM WSI as pydicom decodes its frames, each placed where this
    class computes (not wsidicom): row by row for TILED_FULL, at its Plane Position (Slide) for
    per-frame positions in any order, else in the order :func:`place_frames` decides. Level 0
    only; cells without a frame and the area past the border read white."""

    name = "pydicom"

    def __init__(self, path: Path, frame_order: str | None = None) -> None:
        import pydicom

        from wsistore import dicom

        super().__init__(path)
        instances = list(dicom.iter_instances(path))
        volumes = [i for i in instances if i.flavour == "VOLUME"]
        if not volumes:
            raise InputError(f"{path}: no DICOM whole-slide volume (pyramid level) instance")
        base = max(volumes, key=lambda i: i.pixels)
        self._file = base.path
        with quiet():
            header = pydicom.dcmread(base.path, stop_before_pixels=True)
        self._grid = frame_grid(header)
        place_frames(path, [base], base, frame_order)
        self._cells = self._frame_cells(header, base.frame_order)
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()

    def _frame_cells(self, header: Any, decided: str | None) -> dict[tuple[int, int], int]:
        """``(row, col)`` of the tile grid -> the frame stored there."""
        grid = self._grid
        (tw, th), count = grid.tile, int(header.get("NumberOfFrames", 1) or 1)
        per_frame = header.get("PerFrameFunctionalGroupsSequence")
        if per_frame and header.get("DimensionOrganizationType") != "TILED_FULL":
            cells: dict[tuple[int, int], int] = {}
            for frame, item in enumerate(per_frame):
                position = item.PlanePositionSlideSequence[0]
                x = int(position.ColumnPositionInTotalImagePixelMatrix) - 1
                y = int(position.RowPositionInTotalImagePixelMatrix) - 1
                if x % tw or y % th:
                    raise InputError(f"{self.path}: frame {frame} at ({x}, {y}) is not on the {tw} x {th} tile grid")
                cells.setdefault((y // th, x // tw), frame)
            return cells
        order: FrameOrder = "column" if decided == "column" else "row"
        return {grid.cell(frame, order): frame for frame in range(min(count, grid.frames))}

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return (self._grid.size,)

    def _read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return read_within(self._read, location, size, self._grid.size)

    def _read(self, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        (x, y), (w, h), (tw, th) = location, size, self._grid.tile
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        for row in range(y // th, -(-(y + h) // th)):
            for col in range(x // tw, -(-(x + w) // tw)):
                frame = self._cells.get((row, col))
                if frame is None:
                    continue
                pixels = self._frame(frame)
                x0, y0 = max(x, col * tw), max(y, row * th)
                x1, y1 = min(x + w, (col + 1) * tw), min(y + h, (row + 1) * th)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[
                    y0 - row * th : y1 - row * th, x0 - col * tw : x1 - col * tw
                ]
        return out

    def _frame(self, index: int) -> np.ndarray:
        if index in self._frames:
            self._frames.move_to_end(index)
            return self._frames[index]
        pixels = self._frames[index] = decode_frame(self._file, index)
        while len(self._frames) > FRAME_CACHE:
            self._frames.popitem(last=False)
        return pixels

    def close(self) -> None:
        self._frames.clear()
