"""napari's reader for wsistore archives: full resolution restored as you pan.

An archive opens as one multiscale RGB image layer, in micrometres when the archive records the
source's mpp: level 0 is the slide restored by :func:`wsistore.open` with its defaults (the
default generator with the archive's adaptation, hybrid chunks as stored, bicubic where the
archive chose it, the same compute grid, cache and precision), seen through a
:class:`~.levels.ProgressiveLevel` so that napari's GUI thread never waits for the
generator; levels 1, 2 ... are the stored pyramid (:class:`~.levels.StoredLevel`), so zooming
out never runs the generator. A damaged chunk is painted and named in napari's error
notification. The archive's loss map, when it has one, comes as a second, hidden, image layer
over the same extent (one cell per level-0 chunk, grey levels RMS on the fixed scale of
``wsistore info --loss-map``).

napari and Qt are imported only inside the functions that talk to the GUI, the restoring side
only once an archive is read (napari asks :func:`get_reader` about every folder it opens), and
only napari imports this module (through the ``napari.manifest`` entry point).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsistore.archive.partial import unfinished
from wsistore.archive.store import Location
from wsistore.errors import WsistoreError

if TYPE_CHECKING:  # the restoring side (torch) is imported when an archive is read, not when napari asks
    from wsistore.napari_plugin.levels import ProgressiveLevel
    from wsistore.restoration.ondemand import RestoredSlide

#: What napari's reader functions return: (data, layer keyword arguments, layer type).
LayerData = tuple[Any, dict[str, Any], str]
#: Least time between the end of one refresh of a layer and the start of the next (seconds).
REFRESH_GAP_S = 0.1


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: :func:`read_archive` when ``path`` is one wsistore archive (or
    an unfinished ingest, whose reason is then shown), else None: napari's "no reader"."""
    paths = [path] if isinstance(path, str) else list(path)
    if len(paths) != 1 or not is_archive(paths[0]):
        return None
    return read_archive


def is_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` claims to be a wsistore archive: its group metadata has a ``wsistore``
    block, or an ingest is writing (or was interrupted writing) it. Cheap: one small read."""
    try:
        location = Location.parse(path)
        if os.fspath(path).endswith(".partial") or unfinished(location, "ingest"):
            return True
        attributes = json.loads(location.read_bytes("zarr.json")).get("attributes", {})
    except (WsistoreError, OSError, ValueError, AttributeError):
        return False
    return isinstance(attributes, dict) and "wsistore" in attributes


def read_archive(path: str | list[str]) -> list[LayerData]:
    """The layers of the archive at ``path``: the restored slide, then its loss map (hidden)."""
    from wsistore.restoration.ondemand import open_restored

    slide = open_restored(path if isinstance(path, str) else path[0])
    return archive_layers(slide, _qt_callbacks())


def archive_layers(
    slide: RestoredSlide,
    callbacks: tuple[Callable[[ProgressiveLevel], None], Callable[[str], None]] | None = None,
) -> list[LayerData]:
    """The layer data of ``slide``: the multiscale image (level 0 progressive, with
    ``callbacks`` = (on_ready, on_error)), then the loss map when the archive has one."""
    from wsistore.napari_plugin.levels import ProgressiveLevel, StoredLevel
    from wsistore.reports.loss_map import COLORMAP, LOSS_VMAX, cell_size

    archive = slide.archive
    md = archive.metadata
    on_ready, on_error = callbacks or (None, None)
    level0 = ProgressiveLevel(slide, on_ready, on_error)
    pyramid = [level0, level0.stored, *(StoredLevel(archive, i, on_error) for i in range(1, len(archive.levels)))]
    mpp = md.mpp
    scale = (mpp[1], mpp[0]) if mpp else (1.0, 1.0)  # (y, x)
    units = ("micrometer", "micrometer") if mpp else ("pixel", "pixel")
    name = md.source.file_name or os.path.basename(archive.location.url.rstrip("/"))
    metadata = {
        "wsistore": {
            **slide.provenance(),
            "adaptation": md.adaptation,
            "mode": md.mode,
            "mpp": list(mpp) if mpp else None,
            "format_version": md.format_version,
        }
    }
    image: LayerData = (
        pyramid,
        {
            "name": name,
            "rgb": True,
            "multiscale": True,
            "contrast_limits": (0, 255),
            "scale": scale,
            "units": units,
            "metadata": metadata,
        },
        "image",
    )
    loss = archive.loss_map()
    if loss is None:
        return [image]
    cell = cell_size(archive)
    return [
        image,
        (
            loss,
            {
                "name": f"{name} loss map",
                "colormap": COLORMAP,
                "contrast_limits": (0.0, LOSS_VMAX),
                "opacity": 0.5,
                "visible": False,
                # one cell per level-0 chunk of cell x cell source pixels, centred on them
                "scale": (cell * scale[0], cell * scale[1]),
                "translate": ((cell - 1) / 2 * scale[0], (cell - 1) / 2 * scale[1]),
                "units": units,
                "metadata": {"wsistore": {"loss_map": "grey levels RMS per level-0 chunk", "vmax": LOSS_VMAX}},
            },
            "image",
        ),
    ]


def _qt_callbacks() -> tuple[Callable[[ProgressiveLevel], None], Callable[[str], None]]:
    """``on_ready``: refresh, on napari's GUI thread, the layers that show a level: at most one
    refresh waiting, and at least :data:`REFRESH_GAP_S` after the last one ended, so that the
    GUI runs between two repaints however fast tiles land; ``on_error``: napari's error
    notification."""
    import napari
    from napari.utils.notifications import show_error
    from qtpy.QtCore import QTimer
    from superqt.utils import ensure_main_thread

    waiting: set[int] = set()
    ended: dict[int, float] = {}
    lock = threading.Lock()

    def refresh(level: ProgressiveLevel) -> None:
        with lock:
            waiting.discard(id(level))
        viewer = napari.current_viewer()
        for layer in viewer.layers if viewer is not None else []:
            if getattr(layer, "multiscale", False) and layer.data[0] is level:
                layer.refresh()
        ended[id(level)] = time.monotonic()

    @ensure_main_thread
    def schedule(level: ProgressiveLevel) -> None:
        wait = ended.get(id(level), 0.0) + REFRESH_GAP_S - time.monotonic()
        QTimer.singleShot(max(0, round(1000 * wait)), lambda: refresh(level))

    def on_ready(level: ProgressiveLevel) -> None:
        with lock:
            if id(level) in waiting:
                return
            waiting.add(id(level))
        schedule(level)

    notify = ensure_main_thread(show_error)

    def on_error(message: str) -> None:
        notify(message)

    return on_ready, on_error
