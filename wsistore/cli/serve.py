"""``wsistore serve ARCHIVE_OR_FOLDER...``: DeepZoom tiles over HTTP, restored on demand."""

from __future__ import annotations

import argparse
from typing import Any

from wsistore.cli import _options


def add_parser(sub: Any) -> None:
    """Register ``serve``."""
    p = sub.add_parser(
        "serve", help="serve archives as DeepZoom slides over HTTP, restored on demand", description=run.__doc__
    )
    p.add_argument(
        "archives", nargs="+", metavar="ARCHIVE_OR_FOLDER", help="archives (paths or URLs), or folders of archives"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: a free one)")
    _options.add_model(p)
    _options.add_storage_options(p)
    _options.add_precision(p)
    p.add_argument(
        "--max-tiles", type=int, default=None, help="tiles made at once, the rest wait (default: cores, at most 8)"
    )
    p.add_argument(
        "--cache-mb",
        type=int,
        default=512,
        help="megabytes of restored tiles kept per slide, so panning back costs nothing (default 512; 0: none)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve archives to a browser: an index page, DeepZoom descriptors and tiles (levels finer
    than the stored pyramid super-resolved on demand, coarser ones from the stored pyramid),
    bicubic tiles for comparison (?method=bicubic) and the associated images."""
    import logging
    import sys

    from wsistore.errors import InputError

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0..65535, got {args.port}")
    if args.max_tiles is not None and args.max_tiles < 1:
        raise InputError(f"--max-tiles must be at least 1, got {args.max_tiles}")
    if args.cache_mb < 0:
        raise InputError(f"--cache-mb must be 0 or more, got {args.cache_mb}")
    from wsistore.serve.app import build_app, open_slides
    from wsistore.serve.server import bind, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    slides = open_slides(
        args.archives,
        args.model,
        args.device,
        cache_bytes=args.cache_mb << 20,
        storage_options=args.storage_options,
        precision=args.precision,
    )
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        for served in slides:
            served.close()
        raise InputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    names = ", ".join(s.name for s in slides)
    print(f"wsistore: serving {len(slides)} archive(s) ({names}) at http://{shown}:{port}/", file=sys.stderr)
    serve(build_app(slides, args.max_tiles), sock)
    return 0
