"""Raw sockets to a running server: a connection, one answer read by its framing, the node's health timed.

The slow-client and keep-alive tests talk to the worker's event loop
byte by byte; these are the few steps they share.
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
