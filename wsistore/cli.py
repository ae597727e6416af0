"""The ``wsistore`` command line.

Every failure the user can cause prints one line, ``wsistore: error: ...``, and exits
non-zero (2 bad input, 3 damaged/incomplete archive, 4 output exists, 1 other,
130 interrupted). ``WSISTORE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from wsistore.reports.command import add_bench_parser
from wsistore.errors import WsistoreError, first_line
from wsistore.options import add_codec_options, codec_from_args
from wsistore.restoration.command import add_restore
from wsistore.training.command import add_models_parser, add_train_parser

Command = Callable[[argparse.Namespace], int]


# -- ingest / info / verify -----------------------------------------------------------------
def _add_ingest(sub: Any) -> None:
    p = sub.add_parser("ingest", help="archive a slide at reduced resolution", description=_cmd_ingest.__doc__)
    p.add_argument("slide", help="slide file (SVS, NDPI, MRXS, generic/OME TIFF, ...)")
    p.add_argument("archive", help="archive to create (directory or fsspec URL)")
    add_codec_options(p)
    p.add_argument("--scale", type=int, default=4, help="downsample factor (default 4)")
    p.add_argument("--chunk", type=int, default=256, help="LR chunk side in pixels, multiple of 16 (default 256)")
    p.add_argument("--shard", type=int, default=None, help="LR shard side (default: chosen from slide size, up to 2048)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel shards (default: all cores)")
    p.add_argument("--reader", choices=("auto", "openslide", "tiffslide"), default="auto")
    p.add_argument("--keep-background", action="store_true", help="store glass chunks too")
    p.add_argument("--strip-label", action="store_true", help="drop label and macro images (may show patient identifiers)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing archive")
    p.add_argument("--resume", action="store_true", help="continue an interrupted ingest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_ingest)


def _cmd_ingest(args: argparse.Namespace) -> int:
    """Read a slide, downsample it, and write a verifiable Zarr v3 archive."""
    from wsistore.archive.writer import IngestOptions, ingest

    options = IngestOptions(
        scale=args.scale,
        codec=codec_from_args(args),
        chunk=args.chunk,
        shard=args.shard,
        workers=args.workers,
        keep_background=args.keep_background,
        strip_label=args.strip_label,
        overwrite=args.overwrite,
        resume=args.resume,
        reader=args.reader,
        progress=not args.quiet,
    )
    start = time.perf_counter()
    result = ingest(args.slide, args.archive, options)
    seconds = time.perf_counter() - start
    print(
        f"wrote {result.archive}: {result.chunks_written}/{result.chunks_total} chunks "
        f"({result.source_pixels / 1e6:.1f} source MP in {seconds:.1f} s"
        + (f", {result.shards_skipped} shards resumed" if result.shards_skipped else "")
        + ")"
    )
    return 0


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="describe an archive", description=_cmd_info.__doc__)
    p.add_argument("archive")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    """Sizes, compression, dimensions, mpp, tissue and codec of an archive."""
    from wsistore.archive.reader import Archive

    info = Archive.open(args.archive).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    codec = info["codec"]
    settings = ", ".join(f"{k}={v}" for k, v in codec.get("configuration", {}).items())
    mpp = info["mpp"]
    lines = [
        ("archive", f"{info['archive']} (format {info['format_version']}, complete)"),
        ("source", f"{info['source']} ({_size(info['source_bytes'])}, {info['vendor'] or 'unknown vendor'})"),
        ("dimensions", f"{info['dimensions'][0]} x {info['dimensions'][1]} source px; LR {info['lr_dimensions'][0]} x {info['lr_dimensions'][1]} (scale {info['scale']}), {len(info['levels'])} levels"),
        ("mpp", f"{mpp[0]:.4g} x {mpp[1]:.4g} um/px ({info['mpp_source']})" if mpp else "unknown (not in the source)"),
        ("archive bytes", f"{_size(info['archive_bytes'])}: {info['bits_per_source_pixel']:.3f} bits per source pixel, ratio {info['compression_ratio']:.2f}x vs source"),
        ("pyramid bytes", f"{_size(info['pyramid_bytes'])} ({info['pyramid_bits_per_source_pixel']:.3f} bits/px); associated images {_size(info['associated_bytes'])}"),
        ("tissue", f"{info['tissue_fraction']:.1%} of the slide; {info['background_dropped']:.1%} of chunks dropped as background ({info['chunks_written']}/{info['chunks_total']} stored)"),
        ("codec", f"{codec['name']} ({settings})"),
        ("associated", ", ".join(info["associated_images"]) + (f" (stripped: {', '.join(info['stripped_images'])})" if info["stripped_images"] else "")),
        ("created", info["created"]),
    ]
    for key, value in lines:
        print(f"{key:>14}: {value}")
    return 0


def _add_verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="check every chunk (and optionally against the source)", description=_cmd_verify.__doc__)
    p.add_argument("archive")
    p.add_argument("--against", metavar="SLIDE", help="also compare with the source slide (sha256 and pixels)")
    p.add_argument("--reader", choices=("auto", "openslide", "tiffslide"), default="auto")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    """Check every shard and chunk against the manifest; with --against, that the source
    file is the one archived and each LR chunk matches a fresh downsample of it."""
    from wsistore.archive.verify import verify

    report = verify(args.archive, against=args.against, reader=args.reader, workers=args.workers, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.__dict__ | {"ok": report.ok}, indent=2))
    else:
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        for note in report.notes:
            print(f"note: {note}")
        summary = f"{report.shards} shards, {report.chunks} chunks"
        if report.against:
            a = report.against
            summary += f"; source {'matches' if a.get('sha256_matches') else 'DIFFERS'} (sha256)"
            if "chunks_compared" in a:
                summary += f", {a['chunks_compared']} chunks compared with a fresh downsample"
        print(("OK: " if report.ok else f"FAILED ({len(report.problems)} problems): ") + summary)
    return 0 if report.ok else 3


# -- demo ----------------------------------------------------------------------------------
def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the embedded sample slide", description=_cmd_demo.__doc__)
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--slide", default=None, help="use this slide instead of the embedded sample")
    p.set_defaults(run=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    """Ingest the embedded sample slide (a real Aperio SVS), describe the archive, verify
    it against the source, and restore it to a full-resolution pyramidal TIFF."""
    from wsistore.sample import sample_slide_path

    slide = args.slide or str(sample_slide_path())
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    archive = os.path.join(out, "sample.zarr")
    print(f"== ingest {slide}")
    _run_sub(["ingest", slide, archive, "--overwrite"])
    print(f"== info {archive}")
    _run_sub(["info", archive])
    print(f"== verify {archive} --against the source")
    _run_sub(["verify", archive, "--against", slide])
    restored = os.path.join(out, "sample-restored.tif")
    print(f"== restore {archive} -> {restored} (default model; opens in OpenSlide, QuPath, tiffslide)")
    return _run_sub(["restore", archive, restored, "--overwrite"])


def _run_sub(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    code = int(args.run(args))
    if code:
        raise SystemExit(code)
    return code


# -- entry point -----------------------------------------------------------------------------
class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


#: Explicit registry of subcommands: name -> parser builder.
SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "ingest": _add_ingest,
    "info": _add_info,
    "verify": _add_verify,
    "restore": add_restore,
    "demo": _add_demo,
    "bench": add_bench_parser,
    "models": add_models_parser,
    "train": add_train_parser,
}


def build_parser() -> argparse.ArgumentParser:
    from wsistore._version import __version__

    parser = _OneLineErrors(prog="wsistore", description="Archive whole-slide images at 4x reduced resolution; rebuild them with super-resolution.")
    parser.add_argument("--version", action="version", version=f"wsistore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("WSISTORE_DEBUG") == "1"
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("wsistore: interrupted; partial output is kept and marked incomplete (rerun with --resume where offered)", file=sys.stderr)
        return 130
    except WsistoreError as exc:
        if debug:
            raise
        print(f"wsistore: error: {first_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print("wsistore: error: out of memory; try fewer --workers", file=sys.stderr)
        return 1
    except OSError as exc:
        if debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"wsistore: error: {exc.strerror or first_line(exc)}{where}", file=sys.stderr)
        return 1


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n} B"


if __name__ == "__main__":
    sys.exit(main())

