"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from wsistore.errors import InputError

if TYPE_CHECKING:  # imagecodecs stays unimported for commands that need no codec (train run)
    from wsistore.codecs import ImageCodec


def add_codec_options(p: argparse.ArgumentParser) -> None:
    """``--codec``, ``--quality`` and ``--lossless``, shared by ingest and train prepare."""
    p.add_argument(
        "--codec",
        default=None,
        help="LR codec: avif, jpegxl, webp, jpeg, jpeg2k, png, optionally with settings, "
        "e.g. 'jpegxl:distance=1,effort=7' (default avif: quality 75, speed 6, 4:4:4)",
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
    """The codec those options name."""
    from wsistore.codecs import DEFAULT_CODEC, parse_codec

    codec = args.codec or DEFAULT_CODEC
    if args.lossless:
        if args.quality is not None:
            raise InputError("--lossless and --quality exclude each other")
        name = codec.partition(":")[0]
        return parse_codec("png" if name == "png" else "jpegxl:lossless=true")
    return parse_codec(codec, args.quality)
