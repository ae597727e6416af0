"""Run the application with uvicorn: in the foreground (:func:`serve`) or in a thread
(:class:`ServerThread`, for tests and notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

LOOPBACK = "127.0.0.1"


def _config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    # uvicorn's own access log is off: the application logs one line per request.
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning", log_config=None)


def bind(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until interrupted (Ctrl-C)."""
    host, port = sock.getsockname()[:2]
    uvicorn.Server(_config(app, host, port)).run(sockets=[sock])


class ServerThread:
    """``app`` served on ``host`` (loopback) and a free port in a background thread::

    with ServerThread(app) as server:
        urllib.request.urlopen(server.url + "/")
    """

    def __init__(self, app: Starlette, host: str = LOOPBACK, port: int = 0) -> None:
        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(_config(app, self.host, self.port))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
