"""A TCP proxy in front of the PACS that drops the connection in the middle of an instance:
the network fault that ``ingest`` from a DICOMweb server must survive or report.

It relays every request to Orthanc as it is; for a WADO-RS retrieve of one instance
(``GET .../instances/UID``, not its metadata or frames), from the instance ``cut_from`` on
(counted from 1, in the order asked), it relays only ``keep`` bytes of the answer and closes
the connection, ``times`` times in all (None: every time).
"""

from __future__ import annotations

import re
import socket
import threading
from types import TracebackType

_RETRIEVE = re.compile(rb"^GET \S*/instances/[0-9.]+ HTTP/1\.[01]\r\n")


class DroppingProxy:
    """Listens on ``127.0.0.1:port`` (in the namespace) and relays to ``127.0.0.1:upstream``."""

    def __init__(
        self, port: int, upstream: int, cut_from: int = 2, keep: int = 50_000, times: int | None = None
    ) -> None:
        self.upstream, self.cut_from, self.keep, self.times = upstream, cut_from, keep, times
        self.retrieves = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._server.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _cut(self, request: bytes) -> bool:
        if not _RETRIEVE.match(request):
            return False
        with self._lock:
            self.retrieves += 1
            cut = self.retrieves >= self.cut_from and (self.times is None or self.dropped < self.times)
            self.dropped += cut
            return cut

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        try:
            while True:  # one request at a time (requests' keep-alive): header, then the answer
                request = _read_request(client)
                if not request:
                    return
                cut = self._cut(request)
                upstream.sendall(request)
                if not _relay_answer(upstream, client, self.keep if cut else None):
                    return
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


def _read_request(client: socket.socket) -> bytes:
    """One GET request (no body), or b"" when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


def _relay_answer(upstream: socket.socket, client: socket.socket, keep: int | None) -> bool:
    """Relay one answer (Content-Length or chunked); with ``keep``, only that many bytes, then
    False (the connection is to be dropped)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = upstream.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    chunked = re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head) is not None
    sent = 0

    def send(piece: bytes) -> bool:
        nonlocal sent
        if keep is not None and sent + len(piece) >= keep:
            client.sendall(piece[: keep - sent])
            return False
        client.sendall(piece)
        sent += len(piece)
        return True

    if not send(head + b"\r\n\r\n" + body):
        return False
    total = len(body)
    while True:
        if length is not None and total >= int(length[1]):
            return True
        if chunked and body.endswith(b"0\r\n\r\n"):
            return True
        chunk = upstream.recv(65536)
        if not chunk:
            return False
        body = (body + chunk)[-16:]
        total += len(chunk)
        if not send(chunk):
            return False
