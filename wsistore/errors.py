"""Errors that the command line reports as one line and a non-zero exit code."""

from __future__ import annotations

import sys


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
