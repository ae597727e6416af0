"""The archive's loss map as a picture: a heat map of what the 4x archive loses per chunk.

The loss map itself (RMS, in grey levels, of the source minus the bicubic upscale of the
stored chunk, or minus the decoded HR chunk of a hybrid archive's full-resolution chunk; NaN
on background) is measured at ingest and read with
:meth:`wsistore.archive.reader.Archive.loss_map`. Here it gets one fixed colour scale, so that
two slides' maps compare at a glance: black is lossless, the brightest colour
:data:`LOSS_VMAX` grey levels RMS or more.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsistore.archive.reader import Archive
from wsistore.errors import ArchiveError
from wsistore.outputs import OutputKind, check_not_input, check_replaceable, occupied

#: Grey levels RMS at the top of the colour scale (and above).
LOSS_VMAX = 32.0
#: The matplotlib colour map of the heat map.
COLORMAP = "inferno"


def heat_map(loss: np.ndarray, vmax: float = LOSS_VMAX, cell_px: int = 16, alpha: int = 255) -> np.ndarray:
    """``loss`` (rows, cols) as an RGBA image, ``cell_px`` pixels per chunk; background (NaN)
    cells are transparent."""
    import matplotlib

    colours = matplotlib.colormaps[COLORMAP](np.clip(np.nan_to_num(loss, nan=0.0) / vmax, 0.0, 1.0), bytes=True)
    colours[..., 3] = np.where(np.isnan(loss), 0, alpha)
    return cells_picture(colours, cell_px)


def cells_picture(colours: np.ndarray, cell_px: int) -> np.ndarray:
    """A colour per chunk, ``(rows, cols, channels)``, as a picture of ``cell_px`` pixels per chunk."""
    return np.repeat(np.repeat(colours, cell_px, axis=0), cell_px, axis=1)


def legend(stops: int = 9) -> list[str]:
    """The colour scale from 0 to :data:`LOSS_VMAX` as ``stops`` CSS colours."""
    import matplotlib

    cmap = matplotlib.colormaps[COLORMAP]
    return [matplotlib.colors.to_hex(cmap(i / (stops - 1))) for i in range(stops)]


def cell_size(archive: Archive) -> int:
    """Source pixels per loss-map cell (one level-0 chunk) along each axis."""
    return archive.metadata.chunk * archive.metadata.scale


def is_loss_figure(path: Path) -> bool:
    """Whether ``path`` is a PNG that :func:`loss_figure` drew (its ``Software`` text)."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == LOSS_MAP_SOFTWARE
    except (OSError, ValueError):
        return False


#: The ``Software`` text of a loss-map PNG: what marks one that wsistore drew.
LOSS_MAP_SOFTWARE = "wsistore loss map"
#: What ``info --loss-map`` writes, and so all it replaces.
LOSS_MAP_OUTPUT = OutputKind("info", "a loss-map PNG that wsistore drew", is_loss_figure)


def loss_figure(archive: Archive, path: str | os.PathLike[str], opacity: float = 0.55) -> dict[str, Any]:
    """Draw the slide (its coarsest stored level of at most 1024 pixels a side) with the loss
    map over it and a colour bar to the PNG ``path``; return what it shows. ``path`` may not
    be (or be inside) the archive, and replaces only a loss map drawn here before; the PNG
    lands complete (written aside, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    target = Path(path)
    check_not_input(target, [archive.location.url])
    if occupied(target):
        check_replaceable(target, LOSS_MAP_OUTPUT, os.fspath(path), "--loss-map")
    loss = archive.loss_map()
    if loss is None:
        raise ArchiveError(f"{archive.location.url} has no loss map (format before 1.2)")
    md = archive.metadata
    index = next((i for i, lv in enumerate(md.levels) if max(lv.width, lv.height) <= 1024), len(md.levels) - 1)
    stored = archive.level(index)
    picture = stored.read((0, 0, stored.width, stored.height))
    width, height = archive.metadata.source.width, archive.metadata.source.height
    cell = cell_size(archive)
    rows, cols = loss.shape

    fig, ax = plt.subplots(figsize=(5.0, 5.0 * height / width + 0.6), dpi=100)
    ax.imshow(picture, extent=(0, width, height, 0))
    shown = ax.imshow(
        np.ma.masked_invalid(loss),
        cmap=COLORMAP,
        vmin=0,
        vmax=LOSS_VMAX,
        alpha=opacity,
        extent=(0, cols * cell, rows * cell, 0),
        interpolation="nearest",
    )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(f"{md.source.file_name}: archive loss per {cell} px chunk", fontsize=9)
    ax.set_xlabel("source pixels")
    bar = fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("RMS, source minus bicubic of the archive (grey levels)", fontsize=8)
    bicubic = sorted(archive.bicubic_chunks)
    for r, q in bicubic:  # format 1.7: the chunks restored by bicubic, hatched
        ax.add_patch(
            Rectangle((q * cell, r * cell), cell, cell, fill=False, hatch="///", edgecolor="white", linewidth=0.5)
        )
    if bicubic:
        patch = Rectangle((0, 0), 1, 1, fill=False, hatch="///", edgecolor="black", linewidth=0.5)
        label = f"restored by bicubic ({len(bicubic)} chunks): the generator restores them worse"
        ax.legend([patch], [label], loc="upper left", bbox_to_anchor=(0, -0.12), fontsize=7, frameon=False)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".wsistore-", suffix=".png", delete=False) as tmp:
        try:
            fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": LOSS_MAP_SOFTWARE})
            tmp.close()
            os.replace(tmp.name, target)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
        finally:
            plt.close(fig)
    tissue = loss[~np.isnan(loss)]
    return {
        "cells": [rows, cols],
        "cell_px": cell,
        "tissue_cells": int(tissue.size),
        "median_rms": float(np.median(tissue)) if tissue.size else None,
        "max_rms": float(tissue.max()) if tissue.size else None,
        "bicubic_cells": len(bicubic),
    }
