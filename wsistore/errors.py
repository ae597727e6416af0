"""Errors that the command line reports as one line and a non-zero exit code."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator


class WsistoreError(Exception):
    """Base class: the message is complete and meant for the user."""

    exit_code = 1


class InputError(WsistoreError):
    """A missing, unreadable or unsupported input, or an invalid option."""

    exit_code = 2


class ArchiveError(WsistoreError):
    """An archive that is incomplete, damaged or not a wsistore archive."""

    exit_code = 3


class OutputExistsError(WsistoreError):
    """The destination exists and ``--overwrite`` was not given."""

    exit_code = 4


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def storage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean storage failed: ``OSError``, and botocore's and aiohttp's
    (object storage through s3fs, HTTP) once those are loaded; none can be raised before."""
    errors: list[type[BaseException]] = [OSError]
    if "botocore.exceptions" in sys.modules:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    if "aiohttp" in sys.modules:
        from aiohttp import ClientError as HttpClientError

        errors.append(HttpClientError)
    return tuple(errors)


@contextlib.contextmanager
def held_back(
    loggers: tuple[str, ...], errors: list[str] | None = None, clean: Callable[[str], str] = str.strip
) -> Iterator[None]:
    """Warnings, and the log lines of the libraries named by ``loggers``, held back while a
    library runs, so that an error stays one line; with ``errors``, their error messages are
    collected there (through ``clean``)."""
    handler = _Collect(errors if errors is not None else [], clean)
    saved = []
    for name in loggers:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


class _Collect(logging.Handler):
    def __init__(self, messages: list[str], clean: Callable[[str], str]) -> None:
        super().__init__(logging.ERROR)
        self.messages, self.clean = messages, clean

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.clean(record.getMessage()))
