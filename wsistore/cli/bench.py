"""``wsistore bench INPUT... --out DIR``: storage-vs-quality reports at equal bytes, all inputs
in one report; ``--output-dir DIR`` instead: a batch, one report per input in ``DIR/<stem>/``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsistore.cli import _options
from wsistore.errors import InputError

if TYPE_CHECKING:
    from wsistore.reports.run import BenchOptions


def add_parser(sub: Any) -> None:
    """Register ``bench``."""
    p = sub.add_parser("bench", help="storage-vs-quality benchmark reports", description=run.__doc__)
    p.add_argument(
        "inputs", nargs="+", type=Path, help="slides, archives (with their source beside them) or folders of tiles"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (results.json, report.md, report.html) of one report"
    )
    p.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="SR models to score besides nearest (i-HR) and bicubic: shipped names or weights files "
        "(default: the default generator, as restore uses it; --models alone: none)",
    )
    p.add_argument(
        "--codecs", nargs="*", default=None, help="archive LR codec settings to sweep, e.g. jpegxl:distance=1.0"
    )
    p.add_argument("--hr-codecs", nargs="*", default=None, help="full-resolution codec settings to sweep")
    p.add_argument(
        "--hybrid-lambdas",
        nargs="*",
        type=_options.non_negative_float,
        default=None,
        metavar="LAMBDA",
        help="lambdas of the hybrid archive (ingest --mode hybrid), scored for the first SR model at every "
        "archive setting (default: 300 900 2700; --quick: 900; --hybrid-lambdas alone: none)",
    )
    p.add_argument(
        "--hybrid-codecs",
        nargs="+",
        default=None,
        metavar="SETTING",
        help="HR codec settings each chunk of the hybrid archive is weighed at (default: ingest's 22 AVIF levels)",
    )
    _options.add_device(p)
    p.add_argument("--quick", action="store_true", help="small sweep on a 1024-pixel region (CI)")
    p.add_argument("--crop", type=int, default=2048, help="side of the slide region scored (default 2048)")
    _options.add_region(p, "slide region (level-0 pixels) instead of the densest square")
    p.add_argument("--lpips-weights", type=Path, default=None, help="torchvision AlexNet ImageNet state dict for LPIPS")
    _options.add_adaptation(p)
    _options.add_overwrite(p, "report")
    _options.add_quiet(p)
    _options.add_batch(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Score archive settings x SR models against standard codecs on the full image, at
    equal bytes, on tissue only; write results.json, report.md and report.html."""
    from wsistore.reports.run import BenchOptions, run_bench

    if (args.out is None) == (args.output_dir is None):
        raise InputError("give --out DIR (one report) or --output-dir DIR (a batch: one report per input)")
    options = BenchOptions(
        inputs=args.inputs,
        out=args.out or args.output_dir,
        models=args.models,
        archive_codecs=args.codecs,
        hr_codecs=args.hr_codecs,
        device=args.device,
        quick=args.quick,
        crop=args.crop,
        region=args.region,
        lpips_weights=args.lpips_weights,
        progress=not args.quiet,
        overwrite=args.overwrite,
        adapt=_options.adaptation_from_args(args),
        hybrid_lambdas=args.hybrid_lambdas,
        hybrid_codecs=args.hybrid_codecs,
    )
    if args.output_dir is not None:
        return _batch(args, options)
    if args.summary or args.scheduler or args.cluster:
        raise InputError("--summary, --scheduler and --cluster apply to batches (--output-dir DIR)")
    results = run_bench(options)
    print(f"wrote {args.out}/results.json, report.md, report.html ({len(results['records'])} records)")
    return 0


def _batch(args: argparse.Namespace, options: BenchOptions) -> int:
    """One report per input in ``--output-dir``."""
    from wsistore.batch import BenchJob, expand_inputs, plan

    named = [str(p) for p in args.inputs]
    tasks = plan(expand_inputs(named), args.output_dir, "", named)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    return _options.run_batch(args, tasks, BenchJob(options), "bench", device=options.device)
