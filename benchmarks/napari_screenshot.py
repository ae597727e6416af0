"""A screenshot of napari, for the README: the sample slide opened through the plugin, at full
resolution, beside what the archive stores.

Ingests the embedded sample slide with the default settings (or takes ``--archive``), opens it
in napari on Xvfb through the plugin napari discovers, adds the stored LR level 0 as a second
layer (4x the source's pixel size, so both cover the same micrometres), shows the two side by
side (napari's grid mode: one camera) at 1 screen pixel per source pixel over the epidermis,
waits until every tile in view is restored and saves the whole window as
``napari-restored-vs-stored.jpg`` in ``--out`` (the README's copy).

    python -m benchmarks.napari_screenshot [--archive A.zarr] [--out docs]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

#: Where the screenshot looks, in source pixels of the sample slide (epidermis and dermis).
FOCUS = (1250, 1900)


def screenshot(archive: str, out: Path) -> Path:
    """Save napari's window over ``archive`` to ``out/napari-restored-vs-stored.jpg``."""
    from benchmarks.napari_view import look_at, set_canvas, spin, virtual_display

    with virtual_display(1800, 1000):
        import napari

        from wsistore.archive.reader import Archive
        from wsistore.napari_plugin.levels import StoredLevel

        viewer = napari.Viewer(show=True, title="napari: a wsistore archive, restored (left) and as stored (right)")
        image, _ = viewer.open(archive, plugin="wsistore")
        image.name = f"restored: {image.metadata['wsistore']['generator']['name']}"
        stored = Archive.open(archive)
        sy, sx = image.scale
        scale = stored.metadata.scale
        viewer.add_image(
            StoredLevel(stored, 0),
            rgb=True,
            name=f"stored: {scale}x reduced",
            scale=(scale * sy, scale * sx),
            translate=((scale - 1) / 2 * sy, (scale - 1) / 2 * sx),  # an LR pixel's centre is its HR block's
            units=image.units,
        )
        viewer.canvas.grid.enabled = True
        viewer.canvas.grid.shape = (1, 2)
        viewer.layers.selection.active = image
        set_canvas(viewer, 1400, 640)
        look_at(viewer, image, *FOCUS)
        level = image.data[0]
        spin(until=lambda: image.data_level == 0 and level.pending == 0 and level.last_read_complete, timeout=300)
        spin(1.0)
        path = out / "napari-restored-vs-stored.jpg"
        Image.fromarray(viewer.screenshot(canvas_only=False)).convert("RGB").save(path, quality=88)
        level.close()
        viewer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", help="an archive (default: the embedded sample, ingested here)")
    parser.add_argument("--out", default=".", help="folder for the screenshots")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wsistore-napari-shot-") as tmp:
        archive = args.archive
        if archive is None:
            from wsistore.archive.writer import IngestOptions, ingest
            from wsistore.sample import sample_slide_path

            archive = str(Path(tmp) / "sample.zarr")
            ingest(sample_slide_path(), archive, IngestOptions(progress=False))
        path = screenshot(archive, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
