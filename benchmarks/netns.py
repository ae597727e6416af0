"""A network namespace with loopback alone: what the DICOMweb tests and benchmarks run Orthanc in.

Orthanc 1.10 cannot bind to one address, so it listens on every address of a namespace whose
only interface is ``lo``: nothing outside the machine, nor outside the namespace, reaches it.
The test process's own thread enters the namespace (``setns``) while a test talks to it: the
threads and processes it starts from there (``wsistore serve``, the CLI, chromedriver and
Chromium) are in the namespace too. Needs root and iproute2 (``ip netns``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
PREFIX = "wsistore-test-"
_RUN = Path("/run/netns")


def missing() -> str | None:
    """Why no namespace can be made here (None: it can)."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


class LoopbackNamespace:
    """``ip netns add NAME`` with ``lo`` up; deleted (with what still runs in it) on exit."""

    def __init__(self) -> None:
        self.name = f"{PREFIX}{os.getpid()}"
        self.processes: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> LoopbackNamespace:
        _remove_stale()
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        except BaseException:
            self.close()
            raise
        return self

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """``command`` started in the namespace (stopped when the namespace is closed)."""
        process = subprocess.Popen(["ip", "netns", "exec", self.name, *command], **kwargs)
        self.processes.append(process)
        return process

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in the namespace for the block (and what it starts meanwhile)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(_RUN / self.name, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)
            os.close(target)

    def close(self) -> None:
        for process in self.processes:
            stop(process)
        subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Terminate ``process``, then kill it if it does not end in ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def _remove_stale() -> None:
    """Delete the namespaces of earlier test runs whose process is gone (a run killed hard)."""
    if not _RUN.is_dir():
        return
    for path in _RUN.glob(f"{PREFIX}*"):
        pid = path.name.removeprefix(PREFIX)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            # what that run started there (its Orthanc) ends with it, by process id
            found = subprocess.run(["ip", "netns", "pids", path.name], capture_output=True, text=True, check=False)
            for left in found.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(left), signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", path.name], check=False, capture_output=True)
