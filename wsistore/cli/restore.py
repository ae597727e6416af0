"""``wsistore restore ARCHIVE OUT``: rebuild full resolution as a pyramidal TIFF, OME-Zarr or
a folder of DICOM WSI instances; ``wsistore restore INPUT... --output-dir DIR``: one output
per archive, ``DIR/<stem>.tif`` (``.ome.zarr`` with ``--format zarr``, ``.dicom`` with
``--format dicom``)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from wsistore.cli import _options

if TYPE_CHECKING:
    from wsistore.restoration.pipeline import RestoreOptions, RestoreResult


def add_parser(sub: Any) -> None:
    """Register ``restore``."""
    p = sub.add_parser(
        "restore", help="rebuild full resolution (pyramidal TIFF, OME-Zarr or DICOM)", description=run.__doc__
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="ARCHIVE OUT: the archive to restore (directory or fsspec URL) and the output, a .tif file or a "
        "directory with --format zarr or dicom, or with --format dicom a DICOMweb server's root "
        "(dicomweb+http://HOST:PORT/ROOT: the series is sent by STOW-RS; credentials from the environment); "
        "with --output-dir: archives, folders of archives, globs or lists (@FILE or a .txt file)",
    )
    _options.add_model(p)
    p.add_argument(
        "--batch", type=int, default=None, help="GPU batch of compute tiles (default 8, halved on out-of-memory)"
    )
    p.add_argument("--tile", type=int, default=512, help="output tile side in pixels, a power of two (default 512)")
    _options.add_workers(p, "threads that decode and encode")
    _options.add_region(p, "restore only this level-0 region")
    p.add_argument(
        "--format",
        choices=("tiff", "zarr", "dicom"),
        default="tiff",
        help="pyramidal BigTIFF (default), OME-Zarr, or DICOM WSI (a folder of instances)",
    )
    quality = p.add_mutually_exclusive_group()
    quality.add_argument("--quality", type=int, default=None, help="JPEG quality of TIFF or DICOM tiles (default 90)")
    quality.add_argument("--lossless", action="store_true", help="lossless tiles: deflate (TIFF), JPEG 2000 (DICOM)")
    p.add_argument(
        "--codec",
        choices=("jpeg", "jpeg2000"),
        default=None,
        help="DICOM frames: JPEG baseline (default) or JPEG 2000 (lossy, 45 dB PSNR target; with --lossless, lossless)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the generator (CUDA; pays off on large slides)"
    )
    _options.add_precision(p)
    _options.add_storage_options(p)
    _options.add_overwrite_resume(p, "output")
    _options.add_quiet(p)
    _options.add_batch(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Rebuild full resolution from an archive with a super-resolution generator, as a
    generic pyramidal BigTIFF (OpenSlide, tiffslide, QuPath), OME-Zarr (napari) or DICOM WSI
    (PACS, OpenSlide 4, QuPath), written to a folder or sent to a PACS by STOW-RS."""
    from wsistore.archive.partial import nothing_to_resume
    from wsistore.dicomweb import StowError
    from wsistore.restoration.pipeline import RESTORE_OUTPUT, RestoreOptions, restore

    options = RestoreOptions(
        model=args.model,
        device=args.device,
        batch=args.batch,
        tile=args.tile,
        workers=args.workers,
        region=args.region,
        format=args.format,
        quality=args.quality,
        lossless=args.lossless,
        codec=args.codec,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.quiet,
        compile=args.compile,
        precision=args.precision,
    )
    if _options.wants_batch(args, args.paths):
        return _batch(args, options)
    source, out = args.paths
    if "://" not in out:  # URLs: object storage is refused, a DICOMweb server takes the series whole
        fresh = functools.partial(nothing_to_resume, out, RESTORE_OUTPUT, args.overwrite)
        options = dataclasses.replace(options, resume=_options.resume_or_afresh(args.resume, out, fresh))
    try:
        result = restore(source, out, options, storage_options=args.storage_options)
    except StowError as exc:  # the report first: what the server holds now
        print("\n".join(exc.report.lines()))
        raise
    print(summary(result))
    if result.stored is not None:
        print("\n".join(result.stored.lines()))
    return 0


def _batch(args: argparse.Namespace, options: RestoreOptions) -> int:
    """One output per archive in ``--output-dir``; on a GPU cluster, one restore per GPU worker."""
    from wsistore.batch import RestoreJob, expand_inputs, plan

    suffix = {"tiff": ".tif", "zarr": ".ome.zarr", "dicom": ".dicom"}[options.format]
    tasks = plan(expand_inputs(args.paths, archives=True), args.output_dir, suffix, args.paths)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    return _options.run_batch(args, tasks, RestoreJob(options, args.resume), "restore", device=options.device)


def summary(result: RestoreResult) -> str:
    """The one line that reports a finished restore."""
    gen = result.generator
    weights = f", weights sha256 {gen['weights_sha256'][:12]}..." if gen["weights_sha256"] else ""
    if gen.get("adaptation_sha256"):
        weights += f", the archive's adaptation {gen['adaptation_sha256'][:12]}..."
    precision = result.precision + (f" ({result.fallback})" if result.fallback else "")
    resumed = f", {result.rows_resumed} rows resumed" if result.rows_resumed else ""
    return (
        f"wrote {result.output}: {result.width} x {result.height} px, {len(result.levels)} levels, "
        f"generator {gen['name']}{weights}, {precision}; {result.tiles_total} compute tiles "
        f"({result.tiles_background} background) in {result.seconds:.1f} s "
        f"({result.megapixels_per_second:.2f} MP/s){resumed}"
    )
