"""``wsistore verify ARCHIVE [--against SLIDE]``: check every chunk, optionally against the source;
``wsistore verify INPUT...``: a batch of archives, a row each."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsistore.cli import _options
from wsistore.errors import InputError

if TYPE_CHECKING:
    from wsistore.archive.verify import VerifyReport

#: Exit code of a verify that found problems (the code of a damaged archive).
FAILED = 3


def add_parser(sub: Any) -> None:
    """Register ``verify``."""
    p = sub.add_parser("verify", help="check every chunk (and optionally against the source)", description=run.__doc__)
    p.add_argument(
        "archives",
        nargs="+",
        metavar="ARCHIVE",
        help="an archive; several, folders of archives, globs or lists (@FILE or a .txt file) make a batch",
    )
    p.add_argument(
        "--against",
        metavar="SLIDE",
        help="also compare with the source slide (sha256 and pixels): a file or folder, or the DICOMweb URL it was "
        "ingested from",
    )
    _options.add_reader(p)
    _options.add_frame_order(p)
    _options.add_workers(p, "parallel shards")
    _options.add_storage_options(p)
    _options.add_json(p)
    _options.add_quiet(p)
    _options.add_batch(p, output_dir=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check every shard and chunk against the manifest; with --against, that the source
    file is the one archived and each LR chunk matches a fresh downsample of it."""
    from wsistore.archive.verify import verify

    if _is_batch(args.archives):
        return _batch(args)
    if args.summary or args.scheduler or args.cluster:
        raise InputError("--summary, --scheduler and --cluster apply to batches (several archives)")
    report = verify(
        args.archives[0],
        against=args.against,
        reader=args.reader,
        frame_order=args.frame_order,
        workers=args.workers,
        progress=not args.quiet,
        storage_options=args.storage_options,
    )
    _options.show(report.__dict__ | {"ok": report.ok}, args.json, lambda _: describe(report))
    return 0 if report.ok else FAILED


def _is_batch(paths: list[str]) -> bool:
    """Several archives, a glob, a list (``@FILE``, ``.txt``) or a folder holding archives."""
    from wsistore.readers import is_archive

    path = Path(paths[0])
    if len(paths) > 1 or glob.has_magic(paths[0]) or paths[0].startswith("@") or path.suffix.lower() == ".txt":
        return True
    return path.is_dir() and not is_archive(path) and any(is_archive(child) for child in path.iterdir())


def _batch(args: argparse.Namespace) -> int:
    """Verify every archive the inputs name, one row each."""
    from wsistore.batch import VerifyJob, expand_inputs, plan

    if args.against or args.json:
        raise InputError("--against and --json take one archive; a batch writes its rows with --summary FILE")
    tasks = plan(expand_inputs(args.archives, archives=True), None, "")
    return _options.run_batch(args, tasks, VerifyJob(args.workers), "verify")


def describe(report: VerifyReport) -> str:
    """Problems, notes and the OK / FAILED line."""
    lines = [f"PROBLEM: {problem}" for problem in report.problems] + [f"note: {note}" for note in report.notes]
    summary = f"{report.shards} shards, {report.chunks} chunks"
    if report.against:
        a = report.against
        summary += f"; source {'matches' if a.get('sha256_matches') else 'DIFFERS'} (sha256)"
        if "chunks_compared" in a:
            summary += f", {a['chunks_compared']} chunks compared with a fresh downsample"
        if "hr_chunks_compared" in a:
            summary += f" and {a['hr_chunks_compared']} full-resolution chunks with the source's pixels"
        if "independent_chunks" in a:
            summary += f"; {a['independent_chunks']} tissue chunks also read by a second decoder ({a['decoders'][1]})"
        elif a.get("decoders"):
            summary += f"; read by {a['decoders'][0]} alone"
    lines.append(("OK: " if report.ok else f"FAILED ({len(report.problems)} problems): ") + summary)
    return "\n".join(lines)
