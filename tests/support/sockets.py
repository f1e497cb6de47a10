"""Raw sockets to a running server: a connection, one answer read by its framing, the node's health timed,
a kept-alive ``Client``, a client that never reads.

The slow-client, keep-alive and express-lane tests talk to the worker's
event loop byte by byte; these are the steps they share.
"""

from __future__ import annotations

import json
import socket
import time

from .gunicorn import GunicornServer, http

SLACK = 2.0  # seconds beyond the deadline a loaded 2-core machine may need to send the 408


def connect(server: GunicornServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection or has sent one final answer
    (interim 100s included) whole by its Content-Length: an answer to HTTP/1.1 without
    ``Connection: close`` leaves the connection open for the next request."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if answer_end(data) is not None:
            break
    return data


def answer_end(data: bytes, start: int = 0) -> int | None:
    """Where the first final answer from ``start`` on ends, once all of it is in ``data``."""
    while True:
        head_end = data.find(b"\r\n\r\n", start)
        if head_end < 0:
            return None
        head = data[start:head_end].lower()
        if head.startswith(b"http/1.1 1"):  # an interim answer: the final one follows
            start = head_end + 4
            continue
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        if b"content-length" not in fields:
            return None  # framed by the close
        end = head_end + 4 + int(fields[b"content-length"])
        return end if len(data) >= end else None


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def timed_healthz(server: GunicornServer) -> float:
    started = time.monotonic()
    status, _, body = http("GET", f"{server.url}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok", body
    return time.monotonic() - started


class Client:
    """One connection, answers read one by one by their framing (Content-Length); ``with`` closes it."""

    def __init__(self, server: GunicornServer) -> None:
        self.sock = connect(server)
        self.buffer = b""

    def answer(self) -> bytes:
        while (end := answer_end(self.buffer)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server after {self.buffer[:300]!r}")
            self.buffer += chunk
        answer, self.buffer = self.buffer[:end], self.buffer[end:]
        return answer

    def ask(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        return self.answer()

    def closed_by_server(self, timeout: float = 0.0) -> bool:
        """Whether the server closes the connection within ``timeout`` seconds (0: has closed it already).

        Peeks, so an answer that arrives instead is left to read, and says "not closed".
        """
        self.sock.settimeout(timeout)  # 0 is non-blocking: an open, silent connection raises BlockingIOError
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(30)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def flood_unread(server: GunicornServer, request: bytes) -> socket.socket:
    """A connection that pipelines ``request`` without reading a byte, until the server stops taking them
    (its answers fill the socket buffers both ways): the worker's write of an answer then has to wait."""
    sock = connect(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    batch = request * 64
    stalled_since = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sock.send(batch)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 0.3:
                return sock
            time.sleep(0.01)
    raise AssertionError("the server kept taking requests for 20 s")
