"""``wsistore train prepare`` and ``wsistore train run``: patches exactly as archived, and recipes.

``train run`` needs only torch, numpy and safetensors (never zarr or imagecodecs), so it
runs on a GPU machine that has only those.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from wsistore.cli import _options
from wsistore.errors import InputError


def add_parser(sub: Any) -> None:
    """Register ``train`` and its actions ``prepare`` and ``run``."""
    p = sub.add_parser(
        "train",
        help="prepare training patches and run training recipes",
        description="Prepare (LR, HR) patches; run a recipe.",
    )
    actions = p.add_subparsers(dest="train_command", required=True, metavar="ACTION")
    _add_prepare(actions)
    _add_run(actions)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    return prepare(args) if args.train_command == "prepare" else run_recipe(args)


def _add_prepare(sub: Any) -> None:
    p = sub.add_parser("prepare", help="slides and tile folders -> (LR, HR) patch shards", description=prepare.__doc__)
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="slides, image tiles, folders of them, or archives (their source slide must lie beside them)",
    )
    p.add_argument("out", metavar="OUT", help="folder to write the shards to")
    p.add_argument(
        "--like", metavar="ARCHIVE", help="degrade exactly like this archive (its scale, codec, chunk and fill)"
    )
    _options.add_codec_options(p)
    p.add_argument("--scale", type=int, default=None, help="downsample factor (default 4)")
    p.add_argument("--chunk", type=int, default=None, help="archive LR chunk side the codec works on (default 256)")
    p.add_argument("--patch", type=int, default=64, help="LR patch side (HR is scale x this; default 64)")
    p.add_argument("--patches-per-file", type=int, default=64, help="at most this many patches per file (default 64)")
    p.add_argument(
        "--positions",
        choices=("grid", "random"),
        default="grid",
        help="patch origins: one non-overlapping grid (default) or seeded random, overlapping ones",
    )
    p.add_argument(
        "--dihedral",
        action="store_true",
        help="also the 8 flips/rotations of each training image, applied before downsampling and coding",
    )
    p.add_argument(
        "--phases",
        type=int,
        default=1,
        help="chunk-grid phases per training image: seeded LR crops before degradation (default 1)",
    )
    p.add_argument(
        "--stain-jitter",
        type=float,
        default=0.0,
        metavar="S",
        help="re-stain each training image in HED space by seeded factors in [1-S, 1+S] and shifts in [-S, S] "
        "before degradation (default 0: as scanned)",
    )
    p.add_argument("--min-tissue", type=float, default=0.5, help="least tissue fraction of a patch (default 0.5)")
    p.add_argument(
        "--val-fraction", type=float, default=0.15, help="fraction of files held out for validation (default 0.15)"
    )
    p.add_argument(
        "--val-file",
        action="append",
        default=[],
        metavar="NAME",
        help="hold out this file (repeatable; replaces --val-fraction)",
    )
    p.add_argument(
        "--licence",
        action="append",
        default=[],
        metavar="PATTERN=TEXT",
        help="data licence of files matching a name pattern (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=512, help="patches per shard file (default 512)")
    _options.add_reader(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT")
    _options.add_quiet(p)
    p.set_defaults(run=run)


def prepare(args: argparse.Namespace) -> int:
    """Cut tissue patches from slides and tiles; make each LR patch exactly as the archive
    would store it (same downsample, codec and chunk grid); hold out whole files for
    validation; write numpy shards and a manifest."""
    from pathlib import Path

    from wsistore.readers import is_archive
    from wsistore.training.prepare import PrepareOptions, options_like
    from wsistore.training.prepare import prepare as prepare_shards

    common: dict[str, Any] = {
        "patch": args.patch,
        "patches_per_file": args.patches_per_file,
        "positions": args.positions,
        "dihedral": args.dihedral,
        "phases": args.phases,
        "stain_jitter": args.stain_jitter,
        "min_tissue": args.min_tissue,
        "val_fraction": args.val_fraction,
        "val_files": tuple(args.val_file),
        "seed": args.seed,
        "shard_size": args.shard_size,
        "licences": tuple(_licence(item) for item in args.licence),
        "reader": args.reader,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
    }
    archives = [s for s in args.sources if is_archive(Path(s))]
    like = args.like or (archives[0] if archives else None)
    if like:
        flags = (("--codec", args.codec), ("--quality", args.quality), ("--scale", args.scale), ("--chunk", args.chunk))
        given = [flag for flag, value in flags if value is not None] + (["--lossless"] if args.lossless else [])
        if given:
            raise InputError(f"the codec, scale and chunk come from the archive {like}; drop {given[0]}")
        options = options_like(like, **common)
    else:
        codec = _options.codec_from_args(args)
        options = PrepareOptions(
            scale=args.scale or 4, codec=None if codec.lossless else codec, chunk=args.chunk or 256, **common
        )
    manifest = prepare_shards(args.sources, args.out, options)
    counts = manifest["counts"]
    print(
        f"wrote {args.out}: {counts['train']} train + {counts['val']} validation patches "
        f"from {len(manifest['files'])} files "
        f"({manifest['codec_label']}, chunk {manifest['chunk']}, scale {manifest['scale']}); "
        f"validation files: {', '.join(manifest['split']['val_files']) or 'none'}"
    )
    return 0


def _licence(item: str) -> tuple[str, str]:
    pattern, sep, text = item.partition("=")
    if not sep or not pattern or not text:
        raise InputError(f"--licence {item!r} is not PATTERN=TEXT")
    return pattern, text


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run a training recipe (pipelines/*.toml)", description=run_recipe.__doc__)
    p.add_argument("config", metavar="CONFIG", help="recipe file, e.g. pipelines/techcyte.toml")
    p.add_argument("--data", metavar="DIR", help="prepared patches (sets data.shards)")
    p.add_argument("--out", metavar="DIR", help="run folder (sets run.out; default runs/NAME)")
    _options.add_device(p, default=None, sets=" (sets run.device)")
    p.add_argument(
        "--vgg19-weights", metavar="FILE", help="local VGG-19 ImageNet weights: 'content' loss becomes VGG-19"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. stages.0.steps=100 (repeatable)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny models, 2 steps per stage (what CI runs for every recipe)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last saved state")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in the output folder")
    _options.add_quiet(p)
    p.set_defaults(run=run)


def run_recipe(args: argparse.Namespace) -> int:
    """Train a generator through the recipe's stages with validation, the K best
    checkpoints per stage (safetensors + model card), a JSONL metrics log, and exact
    resume. Needs only torch, numpy and safetensors."""
    from wsistore.training.config import load_config
    from wsistore.training.trainer import Trainer

    if args.resume and args.overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    overrides = list(args.set)
    flags = (
        ("data.shards", args.data),
        ("run.out", args.out),
        ("run.device", args.device),
        ("content.vgg19_weights", args.vgg19_weights),
    )
    for key, value in flags:
        if value is not None:
            overrides.insert(0, f"{key}={json.dumps(value)}")
    config = load_config(args.config, overrides, smoke=args.smoke)
    trainer = Trainer(config, config_file=args.config, progress=not args.quiet)
    resume = _options.resume_or_afresh(args.resume, config.out, trainer.nothing_to_resume)
    result = trainer.run(resume=resume, overwrite=args.overwrite or resume != args.resume)
    final = result.validations[-1]["val"] if result.validations else {}
    base = result.baseline
    nan = float("nan")
    print(
        f"trained {config.run.name}: {result.step} steps in {result.seconds:.1f} s "
        f"({result.steps_per_second:.2f} steps/s) "
        f"-> {result.out}; validation PSNR {final.get('psnr', nan):.2f} dB, SSIM {final.get('ssim', nan):.4f} "
        f"(bicubic {base.get('psnr', nan):.2f} dB, {base.get('ssim', nan):.4f}); "
        f"content loss: {', '.join(config.content_losses) or 'none'}"
    )
    return 0
