"""The ``wsistore`` command line: one module per command, each with ``add_parser(sub)`` and
``run(args)``, and the options they share in :mod:`wsistore.cli._options`. This package is
the only place that builds an argparse parser.

Every failure the user can cause prints one line, ``wsistore: error: ...``, and exits
non-zero (2 bad input, 3 damaged/incomplete archive, 4 output exists, 5 some slides of a
batch failed, 1 other, 130 interrupted). ``WSISTORE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from wsistore._version import __version__
from wsistore.cli import bench, demo, info, ingest, models, restore, serve, train, verify
from wsistore.errors import WsistoreError, first_line, storage_errors

#: Explicit registry of subcommands, in the order ``--help`` lists them: name -> parser builder.
COMMANDS: dict[str, Callable[[Any], None]] = {
    "ingest": ingest.add_parser,
    "info": info.add_parser,
    "verify": verify.add_parser,
    "restore": restore.add_parser,
    "serve": serve.add_parser,
    "demo": demo.add_parser,
    "bench": bench.add_parser,
    "models": models.add_parser,
    "train": train.add_parser,
}


#: Commands that write nothing a Ctrl-C could leave half-done (``info --loss-map`` lands whole).
READ_ONLY = ("info", "verify", "serve", "models")


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``wsistore`` parser with every subcommand."""
    parser = _OneLineErrors(
        prog="wsistore",
        description="Archive whole-slide images at 4x reduced resolution; rebuild them with super-resolution.",
    )
    parser.add_argument("--version", action="version", version=f"wsistore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_OneLineErrors)
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = build_parser().parse_args(argv)
    debug = os.environ.get("WSISTORE_DEBUG") == "1"
    if not debug:
        # a lost object-store connection is reported in one line below; the async client's
        # pending writes then fail too, and asyncio would log each ("Task exception was never
        # retrieved", with its traceback) when it is collected
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        kept = (
            ""
            if args.command in READ_ONLY
            else "; partial output is kept and marked incomplete (rerun with --resume where offered)"
        )
        print(f"wsistore: interrupted{kept}", file=sys.stderr)
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
    except storage_errors() as exc:  # object storage unreachable or refusing (botocore, aiohttp)
        if debug:
            raise
        print(f"wsistore: error: storage: {first_line(exc)}", file=sys.stderr)
        return 1
