"""``wsistore ingest SLIDE ARCHIVE``: read a slide, downsample it, write a verifiable archive;
``wsistore ingest INPUT... --output-dir DIR``: one archive per slide, ``DIR/<stem>.zarr``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from typing import TYPE_CHECKING, Any

from wsistore.cli import _options

if TYPE_CHECKING:
    from wsistore.archive.writer import IngestOptions, IngestResult


def add_parser(sub: Any) -> None:
    """Register ``ingest``."""
    p = sub.add_parser("ingest", help="archive a slide at reduced resolution", description=run.__doc__)
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="SLIDE ARCHIVE: a slide file (SVS, NDPI, MRXS, generic/OME TIFF, DICOM, ...) or a series on a "
        "DICOMweb server (dicomweb+http://HOST:PORT/ROOT?study=UID&series=UID; credentials from the environment) "
        f"and the archive to create (directory or fsspec URL); with --output-dir: {_options.INPUTS_HELP}",
    )
    _options.add_codec_options(p)
    p.add_argument("--scale", type=int, default=4, help="downsample factor (default 4)")
    p.add_argument("--chunk", type=int, default=256, help="LR chunk side in pixels, multiple of 16 (default 256)")
    p.add_argument(
        "--shard", type=int, default=None, help="LR shard side (default: chosen from slide size, up to 2048)"
    )
    _options.add_workers(p, "parallel shards")
    _options.add_reader(p)
    _options.add_frame_order(p)
    p.add_argument(
        "--mpp",
        type=_options.mpp,
        default=None,
        metavar="X[,Y]",
        help="micrometres per pixel, for inputs that lack it or state it wrongly (recorded as given by the user)",
    )
    p.add_argument("--keep-background", action="store_true", help="store glass chunks too")
    p.add_argument(
        "--strip-label", action="store_true", help="drop label and macro images (may show patient identifiers)"
    )
    _options.add_adaptation(p)
    p.add_argument(
        "--mode",
        choices=("sr", "hybrid"),
        default="sr",
        help="sr (default): every chunk LR, restored by the generator; hybrid: each level-0 chunk stored as its LR "
        "or at full resolution, whichever of its options costs least SSE + lambda x bits (format 1.8)",
    )
    p.add_argument(
        "--hr-codec",
        nargs="+",
        default=None,
        metavar="CODEC",
        help="hybrid: the settings each full-resolution chunk is weighed at, one codec at several quality levels, "
        "with settings as --codec; AVIF is first probed at speed 9 and coded only at the setting chosen "
        "(default AVIF 4:4:4 at speed 6, every other level from 4 to 44, and 45)",
    )
    rate = p.add_mutually_exclusive_group()
    for flag, field, kind, metavar, text in (
        (
            "--lambda",
            "hr_lambda",
            _options.non_negative_float,
            "L",
            "hybrid: grey levels squared of SSE a bit must save, the same for every chunk and option (default: the "
            "LR's own slope at its quality, 900 at AVIF 75; 0: each chunk's closest option)",
        ),
        (
            "--target-bpp",
            "hr_target_bpp",
            _options.positive_float,
            "B",
            "hybrid: the level-0 rate to meet, bits per source pixel (LR of the SR chunks and the HR chunks): "
            "lambda is found for it",
        ),
    ):
        rate.add_argument(flag, dest=field, type=kind, default=None, metavar=metavar, help=text)
    _options.add_storage_options(p)
    _options.add_overwrite_resume(p, "archive")
    _options.add_quiet(p)
    _options.add_batch(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read a slide, downsample it, and write a verifiable Zarr v3 archive."""
    from wsistore.archive.partial import nothing_to_resume
    from wsistore.archive.writer import INGEST_OUTPUT, IngestOptions, ingest

    options = IngestOptions(
        scale=args.scale,
        codec=_options.codec_from_args(args),
        chunk=args.chunk,
        shard=args.shard,
        workers=args.workers,
        keep_background=args.keep_background,
        strip_label=args.strip_label,
        overwrite=args.overwrite,
        resume=args.resume,
        reader=args.reader,
        frame_order=args.frame_order,
        progress=not args.quiet,
        mpp=args.mpp,
        adapt=_options.adaptation_from_args(args),
        **_hybrid_from_args(args),
    )
    if _options.wants_batch(args, args.paths):
        return _batch(args, options)
    source, out = args.paths
    fresh = functools.partial(nothing_to_resume, out, INGEST_OUTPUT, args.overwrite, args.storage_options)
    options = dataclasses.replace(options, resume=_options.resume_or_afresh(args.resume, out, fresh))
    start = time.perf_counter()
    result = ingest(source, out, options, args.storage_options)
    print(summary(result, time.perf_counter() - start))
    return 0


def _hybrid_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``IngestOptions`` fields that ``--mode``, ``--hr-codec`` and ``--lambda`` set, and the
    SR path that chooses each chunk's restorer (and, in hybrid mode, its path)."""
    from wsistore.codecs import parse_codec
    from wsistore.errors import InputError
    from wsistore.restoration.hybrid import SrPath

    if args.mode != "hybrid":
        if args.hr_codec is not None or args.hr_lambda is not None or args.hr_target_bpp is not None:
            raise InputError("--hr-codec, --lambda and --target-bpp apply to --mode hybrid")
        return {"upscaler": SrPath()}
    fields: dict[str, Any] = {"mode": "hybrid", "upscaler": SrPath(), "hr_target_bpp": args.hr_target_bpp}
    if args.hr_codec is not None:
        fields["hr_codecs"] = tuple(parse_codec(text) for text in args.hr_codec)
    if args.hr_lambda is not None:
        fields["hr_lambda"] = args.hr_lambda
    return fields


def _batch(args: argparse.Namespace, options: IngestOptions) -> int:
    """One archive per slide in ``--output-dir``."""
    from wsistore.batch import IngestJob, expand_inputs, plan

    tasks = plan(expand_inputs(args.paths), args.output_dir, ".zarr", args.paths)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    return _options.run_batch(args, tasks, IngestJob(options, args.resume), "ingest")


def summary(result: IngestResult, seconds: float) -> str:
    """The one line that reports a finished ingest."""
    resumed = f", {result.shards_skipped} shards resumed" if result.shards_skipped else ""
    return (
        f"wrote {result.archive}: {result.chunks_written}/{result.chunks_total} chunks "
        f"({result.source_pixels / 1e6:.1f} source MP in {seconds:.1f} s{resumed})"
        + (f"; {result.hr_chunks} at full resolution (hybrid)" if result.hr_chunks is not None else "")
        + (f"; {_options.adaptation_text(result.adaptation)}" if result.adaptation else "")
    )
