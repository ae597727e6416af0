"""``wsistore demo``: the whole pipeline on the embedded sample slide, through the library."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from wsistore.cli import _options, info, ingest, restore, verify


def add_parser(sub: Any) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help="run the whole pipeline on the embedded sample slide", description=run.__doc__)
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--slide", default=None, help="use this slide instead of the embedded sample")
    _options.add_adaptation(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Ingest the embedded sample slide (a real Aperio SVS) with its per-slide adaptation and
    each chunk's restorer chosen, as ``wsistore ingest`` does, describe the archive, verify it
    against the source, and restore it to a full-resolution pyramidal TIFF."""
    import wsistore
    from wsistore.archive.writer import IngestOptions
    from wsistore.restoration.hybrid import SrPath
    from wsistore.restoration.pipeline import RestoreOptions
    from wsistore.sample import sample_slide_path

    slide = args.slide or str(sample_slide_path())
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    archive = os.path.join(out, "sample.zarr")

    print(f"== ingest {slide}")
    start = time.perf_counter()
    options = IngestOptions(overwrite=True, adapt=_options.adaptation_from_args(args), upscaler=SrPath())
    written = wsistore.ingest(slide, archive, options)
    print(ingest.summary(written, time.perf_counter() - start))

    print(f"== info {archive}")
    print(info.describe(wsistore.Archive.open(archive).info()))

    print(f"== verify {archive} --against the source")
    report = wsistore.verify(archive, against=slide)
    print(verify.describe(report))
    if not report.ok:
        return verify.FAILED

    restored = os.path.join(out, "sample-restored.tif")
    print(f"== restore {archive} -> {restored} (default model; opens in OpenSlide, QuPath, tiffslide)")
    print(restore.summary(wsistore.restore(archive, restored, RestoreOptions(overwrite=True))))
    return 0
