"""A real S3 server for the object-storage tests (the ``s3`` fixture, registered in
``tests/conftest.py``): moto's server mode on 127.0.0.1 (moto's
in-process ``mock_aws`` does not reach aiobotocore, which s3fs uses), found by s3fs through
the standard AWS environment variables, which child processes inherit. Nothing else is
contacted: fixed test credentials, no shared AWS config files, no instance metadata."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: The bucket every object-storage test writes into (each under its own key).
BUCKET = "wsistore-test"


@dataclass(frozen=True)
class S3:
    """The running server: its endpoint and an s3fs client of it."""

    endpoint: str
    fs: Any

    def url(self, name: str) -> str:
        return f"s3://{BUCKET}/{name}"

    def keys(self, name: str) -> list[str]:
        """Object keys under ``name``, relative to it, as the server lists them now."""
        self.fs.invalidate_cache()
        base = f"{BUCKET}/{name}"
        return sorted(p[len(base) + 1 :] for p in self.fs.find(base))


def aws_environment(endpoint: str, home: Path) -> dict[str, str]:
    """The AWS variables that point s3fs (botocore) at ``endpoint`` and nowhere else."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """moto's S3 server on a free loopback port, with one bucket, for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ENDPOINT_URL"):
            env.delenv(name, raising=False)
        for name, value in aws_environment(endpoint, tmp_path_factory.mktemp("aws")).items():
            env.setenv(name, value)
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield S3(endpoint, fs)
    server.stop()
