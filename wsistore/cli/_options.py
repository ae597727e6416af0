"""Options that several commands share, each written once, and small output helpers.

Only argparse at import time: a command loads torch, zarr or imagecodecs when it runs,
so ``wsistore train run`` never loads zarr or imagecodecs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsistore.errors import InputError
from wsistore.geometry import Region

if TYPE_CHECKING:
    from wsistore.batch import ClusterOptions, Job, SlideResult, Task
    from wsistore.codecs import ImageCodec
    from wsistore.training.adapt import AdaptOptions

Parser = argparse.ArgumentParser
#: The slide readers ``--reader`` offers (``auto``: openslide, else tiffslide; wsidicom for DICOM).
READERS = ("auto", "openslide", "tiffslide", "image", "dicom")
MODEL_HELP = "generator: a shipped name, bicubic, nearest, or a .safetensors weights file (default: the best shipped)"


def add_reader(p: Parser) -> None:
    """``--reader``: which library opens slides."""
    p.add_argument(
        "--reader",
        choices=READERS,
        default="auto",
        help="slide reader (default auto: openslide, else tiffslide; dicom (wsidicom) for DICOM files and folders)",
    )


def add_frame_order(p: Parser) -> None:
    """``--frame-order``: where the frames of a DICOM instance that leaves their order unsaid go."""
    p.add_argument(
        "--frame-order",
        choices=("row", "column"),
        default=None,
        help="DICOM whose frames' order is stated nowhere (no Dimension Organization Type, no per-frame "
        "positions): place them row by row or column by column (default: as the seams between frames tell; "
        "refused when they do not)",
    )


def add_workers(p: Parser, what: str = "parallel work items") -> None:
    """``--workers``, defaulting to every core."""
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help=f"{what} (default: all cores)")


def add_device(p: Parser, default: str | None = "auto", sets: str = "") -> None:
    """``--device``: auto (CUDA when present), cpu, cuda or cuda:N."""
    p.add_argument("--device", default=default, help=f"auto (CUDA when present), cpu, cuda or cuda:N{sets}")


def add_model(p: Parser) -> None:
    """``--model`` and ``--device``: the generator that restores, and where it runs."""
    p.add_argument("--model", default=None, help=MODEL_HELP)
    add_device(p)


def add_precision(p: Parser) -> None:
    """``--precision``: auto, fp32, or the int8 CPU path (OpenVINO)."""
    p.add_argument(
        "--precision",
        choices=("fp32", "int8", "auto"),
        default="auto",  # wsistore.restoration.int8.DEFAULT_PRECISION (not imported here: it loads torch)
        help="CPU arithmetic of the generator: auto (default: int8 for compact generators on a CPU with VNNI, "
        "else fp32), fp32, or int8 (quantised, run by OpenVINO; compact generators)",
    )


def add_quiet(p: Parser) -> None:
    """``--quiet``: no progress bar."""
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_json(p: Parser) -> None:
    """``--json``: machine-readable output."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_overwrite(p: Parser, what: str) -> None:
    """``--overwrite`` of a command that writes ``what``: it replaces only its own kind."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing {what} that wsistore wrote; anything else there (a folder or file of another "
        "kind, a slide, a link) is refused, and the old one is kept until the new one is complete",
    )


def add_overwrite_resume(p: Parser, what: str) -> None:
    """``--overwrite`` and ``--resume`` of a command that writes ``what``."""
    add_overwrite(p, what)
    p.add_argument(
        "--resume",
        action="store_true",
        help=f"continue an interrupted {what}; where it left nothing to continue, start afresh (and say so)",
    )


def resume_or_afresh(resume: bool, out: object, nothing_to_resume: Callable[[], bool]) -> bool:
    """``--resume``, unless ``nothing_to_resume()`` (a run killed before it left anything to
    continue): that run starts afresh, and says so in one line on stderr."""
    if resume and nothing_to_resume():
        print(f"wsistore: nothing to resume at {out}: starting afresh", file=sys.stderr)
        return False
    return resume


def storage_options(text: str) -> dict[str, Any]:
    """argparse type of ``--storage-options``: a JSON object."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def add_storage_options(p: Parser) -> None:
    """``--storage-options JSON``: fsspec options of an archive URL's filesystem."""
    p.add_argument(
        "--storage-options",
        type=storage_options,
        default=None,
        metavar="JSON",
        help="fsspec options of an archive URL's filesystem, e.g. "
        '{"endpoint_url": "http://127.0.0.1:9000"} (default: its environment variables and the fsspec configuration)',
    )


def region(text: str) -> Region:
    """argparse type of ``--region``: ``x,y,w,h`` integers in level-0 pixels."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be x,y,w,h integers in level-0 pixels, got {text!r}") from None
    return x, y, w, h


def mpp(text: str) -> tuple[float, float]:
    """argparse type of ``--mpp``: ``X`` or ``X,Y`` micrometres per pixel."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"must be X or X,Y micrometres per pixel, got {text!r}")
    return values[0], values[-1]


def positive_float(text: str) -> float:
    """argparse type of a number that must be above 0 (``--adapt-seconds``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type of a finite number at least 0 (``--lambda``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number at least 0, got {text!r}")
    return value


def add_adaptation(p: Parser) -> None:
    """``--no-adapt`` and ``--adapt-seconds``: the per-slide adaptation of the generator."""
    p.add_argument(
        "--no-adapt",
        action="store_true",
        help="do not tune the per-slide adaptation of the generator (also: WSISTORE_ADAPT=0)",
    )
    p.add_argument(
        "--adapt-seconds",
        type=positive_float,
        default=None,
        metavar="S",
        help="stop tuning the adaptation after S seconds (default: all 300 steps, under a minute on 2 cores; "
        "a limit makes the archive depend on the machine's speed: the steps run are recorded)",
    )


def adaptation_from_args(args: argparse.Namespace) -> AdaptOptions | None:
    """The adaptation settings ``--no-adapt`` and ``--adapt-seconds`` ask for."""
    from wsistore.training.adapt import default_adaptation

    adapt = None if args.no_adapt else default_adaptation()
    if adapt is not None and args.adapt_seconds is not None:
        adapt = dataclasses.replace(adapt, seconds=args.adapt_seconds)
    return adapt


def adaptation_text(record: dict[str, Any] | None) -> str:
    """An archive's adaptation record in words: what was kept, or why none was."""
    if record is None:
        return "none (ingested with --no-adapt, or format before 1.4)"
    if record.get("kept"):
        return (
            f"{record['base']} adapted: {record['held_out_gain_db']:+.3f} dB on held-out pairs, "
            f"{record['bytes']} bytes, {record['steps']} steps (sha256 {record['sha256'][:12]}...)"
        )
    if "reason" in record:
        return f"not adapted: {record['reason']}"
    return (
        f"not kept: {record['held_out_gain_db']:+.3f} dB on held-out pairs does not pay for "
        f"its {record['bytes']} bytes ({record['cost_db']:.3f} dB at AVIF's slope)"
    )


def add_region(p: Parser, help: str) -> None:  # noqa: A002
    """``--region X,Y,W,H``."""
    p.add_argument("--region", type=region, default=None, metavar="X,Y,W,H", help=help)


def add_codec_options(p: Parser) -> None:
    """``--codec``, ``--quality`` and ``--lossless``, shared by ingest and train prepare."""
    p.add_argument(
        "--codec",
        default=None,
        help="LR codec: avif, jpegxl, webp, jpeg, jpeg2k, png, optionally with settings, "
        "e.g. 'jpegxl:distance=1,effort=7' (default avif: quality 75, speed 8, 4:4:4)",
    )
    p.add_argument(
        "--quality",
        type=float,
        default=None,
        help="the codec's own quality knob: JPEG-XL distance (lower is better), AVIF/WebP/JPEG "
        "quality 0-100, JPEG 2000 target PSNR",
    )
    p.add_argument("--lossless", action="store_true", help="lossless LR (JPEG-XL lossless unless --codec png)")


def codec_from_args(args: argparse.Namespace) -> ImageCodec:
    """The codec that ``--codec``, ``--quality`` and ``--lossless`` name."""
    from wsistore.codecs import DEFAULT_CODEC, parse_codec

    codec = args.codec or DEFAULT_CODEC
    if args.lossless:
        if args.quality is not None:
            raise InputError("--lossless and --quality exclude each other")
        return parse_codec("png" if codec.partition(":")[0] == "png" else "jpegxl:lossless=true")
    return parse_codec(codec, args.quality)


def size(n: float) -> str:
    """Bytes in decimal units: ``1.24 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n} B"


def show(data: Any, as_json: bool, describe: Callable[[Any], str]) -> None:
    """Print ``data`` as indented JSON, or as ``describe`` words it for people."""
    if as_json:
        import json

        print(json.dumps(data, indent=2))
    else:
        print(describe(data))


# -- batches: many inputs, a summary, a cluster ---------------------------------------------
#: Exit code of a batch in which some slides failed (the others were done).
BATCH_FAILED = 5
INPUTS_HELP = "slides, folders of slides, globs, or lists of paths (@FILE or a .txt file)"


def add_batch(p: Parser, output_dir: bool = True) -> None:
    """``--output-dir`` (with ``output_dir``), ``--summary``, ``--scheduler`` and ``--cluster``."""
    g = p.add_argument_group("batches (many inputs, one task per slide)")
    if output_dir:
        g.add_argument(
            "--output-dir", type=Path, default=None, metavar="DIR", help="batch: write one output per input here"
        )
    g.add_argument("--summary", type=Path, default=None, metavar="FILE", help="batch summary: a .csv or .json file")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on this dask.distributed scheduler")
    where.add_argument(
        "--cluster", default=None, metavar="local:N", help="start a dask LocalCluster of N worker processes (127.0.0.1)"
    )


def cluster_from_args(args: argparse.Namespace) -> ClusterOptions:
    """Where ``--scheduler`` and ``--cluster`` say a batch runs."""
    from wsistore.batch import ClusterOptions, parse_cluster

    local = parse_cluster(args.cluster) if args.cluster else None
    return ClusterOptions(scheduler=args.scheduler, local_workers=local)


def wants_batch(args: argparse.Namespace, paths: list[str]) -> bool:
    """Whether a command given ``paths`` runs as a batch: with ``--output-dir``. Without it,
    only ``SOURCE OUT`` is accepted, and the batch options are refused."""
    if args.output_dir is not None:
        return True
    if len(paths) != 2:
        raise InputError(f"give one input and its output, or inputs with --output-dir DIR (got {' '.join(paths)})")
    if args.summary or args.scheduler or args.cluster:
        raise InputError("--summary, --scheduler and --cluster apply to batches (inputs with --output-dir DIR)")
    return False


def run_batch(args: argparse.Namespace, tasks: list[Task], job: Job, desc: str, device: str | None = None) -> int:
    """Run a batch as ``args`` say, printing a line per slide and the totals; the exit code
    is :data:`BATCH_FAILED` when any slide failed. ``device``: a restore's or a bench's, for
    the GPU resource of a scheduler's tasks (:func:`wsistore.batch.task_resources`)."""
    from wsistore.batch import connect, counts, run_batch, task_resources

    if getattr(args, "storage_options", None):
        raise InputError("--storage-options applies to one archive; a batch reads and writes local paths")
    cluster = cluster_from_args(args)
    with connect(cluster) as client:
        # a local cluster's workers share this machine's GPU as cuda:0: only a scheduler's GPU workers take resources
        resources = task_resources(client, device) if client is not None and cluster.scheduler and device else None
        rows = run_batch(tasks, job, client, args.summary, resources, _print_row, not args.quiet, desc)
    n = counts(rows)
    where = f"; summary in {args.summary}" if args.summary else ""
    print(f"{desc}: {n['ok']} ok, {n['skipped']} skipped, {n['failed']} failed of {len(rows)}{where}")
    return BATCH_FAILED if n["failed"] else 0


def _print_row(row: SlideResult) -> None:
    name = Path(row.slide).name
    if row.status == "failed":
        print(f"FAILED {name}: {row.error}", flush=True)
        return
    ratio = f" ({row.ratio:.1f}x)" if row.ratio else ""
    sizes = f"{size(row.bytes_in)} -> {size(row.bytes_out)}{ratio}" if row.bytes_out else size(row.bytes_in)
    target = f" -> {row.output}" if row.output else ""
    print(f"{row.status} {name}{target}: {sizes} in {row.seconds:.1f} s", flush=True)
