"""Hostile clients against the buffering worker (autoconfig/worker.py) on the real gunicorn server.

What must hold whatever a client sends on one connection: every request
gets exactly one answer, in order, each whole by its own framing (a HEAD's
or a 304's head without a body, a file's bytes after its head), and the
next pipelined request starts exactly where gunicorn's parser says the last
one ended, never inside its body (request smuggling).  A request the worker
refuses closes the connection after its one answer.  And no client, however
it sends or reads, holds the one worker: ``/healthz`` from another client is
answered within the deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.config import base_config
from tests.support.gunicorn import GunicornServer, gunicorn_on
from tests.support.ports import wait_for
from tests.support.sockets import SLACK, connect, flood_unread, timed_healthz

ROOT = Path(__file__).resolve().parents[1]
READ_TIMEOUT = 1.5
POLICY_SECRET = "hostile-policy-secret-0123456789"
POX_CAP = 1024  # [outlook] max_body_bytes, its lowest: a chunked body past it is read only in part
CSS = (ROOT / "static" / "setup.css").read_bytes()
HEALTHZ_BODY = b'{"checks":{"store":"ok"},"status":"ok"}\n'
POLICY_BODY = json.dumps({"login": "nobody@example.net", "protocol": "imap", "real_remote": "192.0.2.7"}).encode()
POLICY_REJECT = b'"status":-1'  # nobody@example.net has nothing enabled
POX_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
    b"<Request><EMailAddress>nobody@example.net</EMailAddress>"
    b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
    b"</AcceptableResponseSchema></Request></Autodiscover>"
)
POX_DECLINED = b"<ErrorCode>501</ErrorCode>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """One worker (every connection meets the same event loop), the settings' limits, a short read deadline."""
    workdir = tmp_path_factory.mktemp("hostile")
    config = base_config(
        workdir,
        limits={"client_rate": 0},
        dovecot={"api_header": f"X-Policy-Key: {POLICY_SECRET}"},
        outlook={"max_body_bytes": POX_CAP},
        metrics={"enabled": True},
    )
    with gunicorn_on(workdir, config, env={"AUTOCONFIG_READ_TIMEOUT": str(READ_TIMEOUT)}, workers=1) as running:
        yield running


@pytest.fixture(autouse=True)
def no_worker_lost(server: GunicornServer) -> Iterator[None]:
    """However a test ends, the one worker it started with is still the one serving (none was killed)."""
    workers = server.worker_pids()
    yield
    assert "WORKER TIMEOUT" not in server.log_text()
    assert server.worker_pids() == workers


# -- requests, byte for byte ----------------------------------------------------------------------


def head(request_line: str, *fields: str) -> bytes:
    return ("\r\n".join([request_line, "Host: autoconfig.example.net", *fields]) + "\r\n\r\n").encode("latin-1")


def get(path: str, *fields: str, version: str = "1.1") -> bytes:
    return head(f"GET {path} HTTP/{version}", *fields)


HEALTHZ = get("/healthz")


def chunked(body: bytes, size: int = 7, extension: bytes = b"", trailers: bytes = b"") -> bytes:
    """``body`` in chunks of ``size`` bytes, each size line with ``extension``, then the last chunk and trailers."""
    pieces = [
        b"%x%s\r\n%s\r\n" % (len(body[at : at + size]), extension, body[at : at + size])
        for at in range(0, len(body), size)
    ]
    return b"".join(pieces) + b"0\r\n" + trailers + b"\r\n"


def policy(body: bytes = POLICY_BODY, *fields: str, secret: str = POLICY_SECRET, te: bool = False) -> bytes:
    """Dovecot's question (its body framed by Content-Length, or chunked: ``te`` and ``body`` already chunked)."""
    framing = "Transfer-Encoding: chunked" if te else f"Content-Length: {len(body)}"
    lines = [
        "POST /dovecot/auth-policy?command=allow HTTP/1.1",
        "Connection: Keep-Alive",
        "Content-Type: application/json",
        f"X-Policy-Key: {secret}",
        framing,
        *fields,
    ]
    return head(*lines) + body


def pox(body: bytes = POX_BODY, *fields: str, te: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if te else f"Content-Length: {len(body)}"
    return head("POST /autodiscover/autodiscover.xml HTTP/1.1", "Content-Type: text/xml", framing, *fields) + body


# -- answers, read by their framing ---------------------------------------------------------------


class Answer(NamedTuple):
    status: int
    fields: dict[str, list[str]]  # names in lower case
    body: bytes
    raw: bytes

    def field(self, name: str) -> str:
        values = self.fields.get(name, [])
        assert len(values) == 1, (name, self.raw[:400])
        return values[0]


class Wire:
    """One connection to the server; ``answer`` reads exactly one final answer (interim ones kept apart)."""

    def __init__(self, server: GunicornServer) -> None:
        self.sock = connect(server)
        self.sock.settimeout(READ_TIMEOUT + SLACK + 2)
        self.buffer = b""
        self.interim: list[bytes] = []

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; unparsed: {self.buffer[:300]!r}")
        self.buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        return self._take(end + 2)[:-2]

    def answer(self, method: str = "GET") -> Answer:
        while True:
            while (end := self.buffer.find(b"\r\n\r\n")) < 0:
                self._fill()
            raw_head = self._take(end + 4)
            lines = raw_head[:-4].decode("latin-1").split("\r\n")
            assert re.fullmatch(r"HTTP/1\.[01] \d{3} .*", lines[0]), raw_head[:300]
            status = int(lines[0].split(" ", 2)[1])
            if 100 <= status < 200:
                self.interim.append(raw_head)
                continue
            break
        fields: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), []).append(value.strip())
        raw = raw_head
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "transfer-encoding" in fields:
            body = b""
            while True:
                size_line = self._line()
                raw += size_line + b"\r\n"
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while trailer := self._line():
                        raw += trailer + b"\r\n"
                    raw += b"\r\n"
                    break
                data = self._take(size + 2)
                assert data.endswith(b"\r\n"), data[-10:]
                body += data[:-2]
                raw += data
        else:
            assert "content-length" in fields, raw_head
            body = self._take(int(fields["content-length"][0]))
            raw += body
        return Answer(status, fields, body, raw)

    def rest(self, wait: float = 0.3) -> tuple[bytes, bool]:
        """What else arrives within ``wait`` seconds (after the answers read), and whether the server closed."""
        self.sock.settimeout(wait)
        data, self.buffer = self.buffer, b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
            return data, True
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- pipelines: one answer per request, in order, nothing lost, the connection still good ---------


class Step(NamedTuple):
    request: bytes
    status: int
    body: bytes | None = None  # the exact body expected, or None
    part: bytes = b""  # a part of the body expected
    method: str = "GET"


OK = Step(HEALTHZ, 200, HEALTHZ_BODY)
SETUP = Step(get("/setup"), 200, part=b"<!doctype html>")  # not /healthz: a smuggled request would show
ETAG_PROBE = get("/setup/static/setup.css")

PIPELINES: dict[str, list[Step]] = {
    "GET with a Content-Length body the app ignores": [
        Step(head("GET /healthz HTTP/1.1", f"Content-Length: {len(HEALTHZ)}") + HEALTHZ, 200, HEALTHZ_BODY),
        SETUP,
    ],
    "POST with a body to a GET-only route (405)": [
        Step(head("POST /healthz HTTP/1.1", f"Content-Length: {len(HEALTHZ)}") + HEALTHZ, 405, part=b"use GET"),
        SETUP,
    ],
    "an unread chunked body with extensions and trailers": [
        Step(
            head("GET /healthz HTTP/1.1", "Transfer-Encoding: chunked")
            + chunked(HEALTHZ, 5, b';ext=1;q="a b"', b"X-Trailer: 1\r\nX-More: 2\r\n"),
            200,
            HEALTHZ_BODY,
        ),
        SETUP,
    ],
    "many one-byte chunks": [
        Step(policy(chunked(POLICY_BODY, 1), te=True), 200, part=POLICY_REJECT),
        SETUP,
    ],
    "a long chunk extension": [
        Step(policy(chunked(POLICY_BODY, 64, b";x=" + b"y" * 4000), te=True), 200, part=POLICY_REJECT),
        SETUP,
    ],
    "a policy question chunked with trailers, read by the app": [
        Step(policy(chunked(POLICY_BODY, 9, trailers=b"X-T: y\r\n"), te=True), 200, part=POLICY_REJECT),
        SETUP,
    ],
    "an Outlook request chunked, read by the app": [
        Step(pox(chunked(POX_BODY, 50), te=True), 200, part=POX_DECLINED),
        SETUP,
    ],
    "a chunked body past the app's cap, read in part (413)": [
        Step(pox(chunked(b"x" * (POX_CAP + 500), 100), te=True), 413),
        SETUP,
    ],
    "a declared body past the app's cap, not read (413)": [
        Step(pox(b"x" * (POX_CAP + 500)), 413),
        SETUP,
    ],
    "Content-Length 0 (the _nothing_left shortcut)": [
        Step(policy(b""), 400, part=b"not valid JSON"),
        SETUP,
    ],
    "a body longer than the JSON in it, all read": [
        Step(policy(POLICY_BODY + b" " * 300), 200, part=POLICY_REJECT),
        SETUP,
    ],
    "a wrong secret: the body is never read (401)": [
        Step(policy(secret="wrong-secret-wrong-secret-0000"), 401),
        Step(policy(chunked(POLICY_BODY), secret="wrong-secret-wrong-secret-0000", te=True), 401),
        SETUP,
    ],
    "HEAD answers have no body": [
        Step(head("HEAD /healthz HTTP/1.1"), 200, b"", method="HEAD"),
        Step(head("HEAD /setup/static/setup.css HTTP/1.1"), 200, b"", method="HEAD"),
        Step(head("HEAD /nowhere HTTP/1.1"), 404, b"", method="HEAD"),
        Step(head("HEAD /setup HTTP/1.1"), 200, b"", method="HEAD"),
        SETUP,
    ],
    "a HEAD with a body": [
        Step(head("HEAD /healthz HTTP/1.1", "Content-Length: 5") + b"GET /", 200, b"", method="HEAD"),
        SETUP,
    ],
    "a static file by sendfile, between others": [
        Step(get("/setup/static/setup.css"), 200, CSS),
        OK,
        Step(get("/setup/static/setup.css"), 200, CSS),
        Step(get("/setup/static/setup.css"), 200, CSS),
        SETUP,
    ],
    "a range of a static file (206), and one not satisfiable (416)": [
        Step(get("/setup/static/setup.css", "Range: bytes=10-19"), 206, CSS[10:20]),
        Step(get("/setup/static/setup.css", "Range: bytes=10-19,30-39"), 416),
        Step(get("/setup/static/setup.css", "Range: bytes=-5"), 206, CSS[-5:]),
        SETUP,
    ],
    "error answers: 404, 405, 414 from the app, a traversal": [
        Step(get("/nowhere"), 404, b"404 Not Found\n"),
        Step(head("DELETE /healthz HTTP/1.1"), 405),
        Step(get("/setup?emailaddress=" + "a" * 8000), 414),
        Step(get("/setup/static/../../wsgi.py"), 404),
        Step(get("/metrics"), 200, part=b"# TYPE"),
        SETUP,
    ],
    "HTTP/1.0 asking for keep-alive": [
        Step(get("/healthz", "Connection: keep-alive", version="1.0"), 200, HEALTHZ_BODY),
        Step(pox(POX_BODY, "Connection: keep-alive").replace(b"HTTP/1.1", b"HTTP/1.0", 1), 200, part=POX_DECLINED),
        SETUP,
    ],
    "one empty line before a request": [Step(b"\r\n" + HEALTHZ, 200, HEALTHZ_BODY), SETUP],
    "an absolute target": [Step(get("http://autoconfig.example.net/healthz"), 200, HEALTHZ_BODY), SETUP],
    "the codings list: identity, then chunked": [
        Step(head("POST /healthz HTTP/1.1", "Transfer-Encoding: identity, Chunked") + b"0\r\n\r\n", 405),
        SETUP,
    ],
}


@pytest.mark.parametrize("steps", PIPELINES.values(), ids=PIPELINES.keys())
def test_pipelined_requests_get_one_answer_each_in_order(server: GunicornServer, steps: list[Step]) -> None:
    """All the requests in one write: each answer whole and in its place, then the connection open and idle
    (nothing more sent: no second answer to any of them)."""
    with Wire(server) as wire:
        wire.sock.sendall(b"".join(step.request for step in steps))
        for number, step in enumerate(steps):
            answer = wire.answer(step.method)
            assert answer.status == step.status, (number, answer.raw[:400])
            if step.body is not None:
                assert answer.body == step.body, (number, answer.raw[:400])
            assert step.part in answer.body, (number, answer.raw[:400])
            assert answer.field("connection") == "keep-alive", (number, answer.raw[:400])
        assert wire.rest() == (b"", False)
        wire.sock.sendall(HEALTHZ)  # still good for another
        assert wire.answer().body == HEALTHZ_BODY


@pytest.mark.parametrize("steps", PIPELINES.values(), ids=PIPELINES.keys())
def test_the_same_requests_one_byte_at_a_time(server: GunicornServer, steps: list[Step]) -> None:
    """The same stream trickled byte by byte (as fast as the loop takes it): the same answers."""
    stream = b"".join(step.request for step in steps)
    if len(stream) > 12000:
        pytest.skip("too long to trickle within the read deadline")
    with Wire(server) as wire:
        wire.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in stream:
            wire.sock.send(bytes([byte]))
        for number, step in enumerate(steps):
            answer = wire.answer(step.method)
            assert answer.status == step.status, (number, answer.raw[:400])
            if step.body is not None:
                assert answer.body == step.body, (number, answer.raw[:400])
        assert wire.rest() == (b"", False)


def test_a_304_answer_has_no_body_and_the_next_follows(server: GunicornServer) -> None:
    with Wire(server) as wire:
        wire.sock.sendall(ETAG_PROBE)
        etag = wire.answer().field("etag")
        wire.sock.sendall(get("/setup/static/setup.css", f"If-None-Match: {etag}") + HEALTHZ)
        not_modified = wire.answer()
        assert not_modified.status == 304 and not_modified.field("etag") == etag
        assert "content-length" not in not_modified.fields or not_modified.field("content-length") == "2470"
        assert wire.answer().body == HEALTHZ_BODY
        assert wire.rest() == (b"", False)


def test_expect_100_continue_in_a_pipeline(server: GunicornServer) -> None:
    """The head alone asks for 100 Continue: one interim answer from the loop (gunicorn's repeat of it is not sent),
    the final one, then the next requests' answers in order."""
    with Wire(server) as wire:
        question = policy(POLICY_BODY, "Expect: 100-continue")
        body_at = question.index(b"\r\n\r\n") + 4
        wire.sock.sendall(question[:body_at])
        assert wire.sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        wire.sock.sendall(question[body_at:] + question + HEALTHZ)  # the second with its body: no interim answer
        assert POLICY_REJECT in wire.answer("POST").body
        assert POLICY_REJECT in wire.answer("POST").body
        assert wire.answer().body == HEALTHZ_BODY
        # gunicorn says 100 Continue to the second too, though its body came with it (RFC 9110 allows it).
        assert wire.interim in ([], [b"HTTP/1.1 100 Continue\r\n\r\n"])
        assert wire.rest() == (b"", False)


# -- what is refused: one answer, then the close; nothing after it is served -------------------------

SMUGGLED = get("/setup")  # were it served, its HTML answer would show
REFUSED: dict[str, tuple[bytes, int]] = {
    "CL.TE": (
        head("POST /healthz HTTP/1.1", f"Content-Length: {5 + len(SMUGGLED)}", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    "TE.CL": (
        head("POST /healthz HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 4")
        + b"%x\r\n" % len(SMUGGLED)
        + SMUGGLED
        + b"\r\n0\r\n\r\n",
        400,
    ),
    "two Content-Lengths": (
        head("POST /healthz HTTP/1.1", "Content-Length: 0", f"Content-Length: {len(SMUGGLED)}") + SMUGGLED,
        400,
    ),
    "the same Content-Length twice": (
        head("POST /healthz HTTP/1.1", f"Content-Length: {len(SMUGGLED)}", f"Content-Length: {len(SMUGGLED)}")
        + SMUGGLED,
        400,
    ),
    "a Content-Length list": (head("POST /healthz HTTP/1.1", f"Content-Length: 0, {len(SMUGGLED)}") + SMUGGLED, 400),
    "a Content-Length folded (obs-fold)": (
        head("POST /healthz HTTP/1.1", "Content-Length: 0", f" {len(SMUGGLED)}") + SMUGGLED,
        400,
    ),
    "Transfer-Encoding folded (obs-fold)": (
        head("POST /healthz HTTP/1.1", "Transfer-Encoding:", " chunked") + b"0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "a blank before the colon": (
        head("POST /healthz HTTP/1.1", "Transfer-Encoding : chunked", "Content-Length: 0")
        + b"%x\r\n" % len(SMUGGLED)
        + SMUGGLED
        + b"\r\n0\r\n\r\n",
        400,
    ),
    "a signed Content-Length": (head("POST /healthz HTTP/1.1", f"Content-Length: +{len(SMUGGLED)}") + SMUGGLED, 400),
    "chunked, then gzip": (
        head("POST /healthz HTTP/1.1", "Transfer-Encoding: chunked, gzip") + b"0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "a vertical tab before chunked": (
        head("POST /healthz HTTP/1.1", "Transfer-Encoding: \x0bchunked") + b"0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "chunked in HTTP/1.0": (
        head("POST /healthz HTTP/1.0", "Connection: keep-alive", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    "a NUL in a field": (head("GET /healthz HTTP/1.1", "X-Nul: a\x00b") + SMUGGLED, 400),
    "a bare CR in a field": (head("GET /healthz HTTP/1.1", "X-A: b\rContent-Length: 0") + SMUGGLED, 400),
    "a bare LF ending a field": (b"GET /healthz HTTP/1.1\r\nHost: x\nX: y\r\n\r\n" + SMUGGLED, 400),
    "an HTTP/0.9 request": (b"GET /\r\n\r\n" + SMUGGLED, 400),
    "two empty lines before the request": (b"\r\n\r\n" + SMUGGLED, 400),
    "Host twice": (head("GET /healthz HTTP/1.1", "Host: other.example") + SMUGGLED, 400),
    "an unknown coding": (head("POST /healthz HTTP/1.1", "Transfer-Encoding: xchunked") + b"0\r\n\r\n" + SMUGGLED, 501),
}


@pytest.mark.parametrize(("data", "status"), REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_framing_gets_one_answer_and_the_close(server: GunicornServer, data: bytes, status: int) -> None:
    """The request that follows in the same write (a smuggled one, were the framing misread) is never served."""
    started = time.monotonic()
    with Wire(server) as wire:
        wire.sock.sendall(data)
        answer = wire.answer()
        assert answer.status == status, answer.raw[:400]
        assert answer.field("connection") == "close"
        rest, closed = wire.rest(READ_TIMEOUT + SLACK)
        assert (rest, closed) == (b"", True)
    assert time.monotonic() - started < 1.5


BAD_BODIES: dict[str, bytes] = {
    "a NUL in a chunk extension": b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
    "a bare LF after a chunk's data": b"5\r\nhello\n0\r\n\r\n",
    "a chunk longer than its size": b"3\r\nhello\r\n0\r\n\r\n",
    "no last chunk: the next request as a size": b"5\r\nhello\r\n",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
@pytest.mark.parametrize("reader", ["unread", "read by the app"])
def test_a_malformed_chunked_body_gets_one_answer_and_the_close(
    server: GunicornServer, body: bytes, reader: str
) -> None:
    """Refused by the framing at once: the route that ignores it answers (405), the one that reads it gets 400
    (gunicorn's parser refuses the body as it is read: a client's error, never a 500 and a traceback); either
    way one answer and the close, the next request unserved."""
    request = head("POST /healthz HTTP/1.1", "Transfer-Encoding: chunked") if reader == "unread" else pox(te=True)
    logged = len(server.log_text())
    with Wire(server) as wire:
        wire.sock.sendall(request + body + SMUGGLED)
        answer = wire.answer()
        assert answer.status == (405 if reader == "unread" else 400), answer.raw[:400]
        assert wire.rest(READ_TIMEOUT + SLACK) == (b"", True)
    assert "Traceback" not in server.log_text()[logged:]


def test_a_chunk_size_past_any_body_waits_for_the_deadline_not_a_worker(server: GunicornServer) -> None:
    """A chunk 16**20 bytes long is valid framing: its data never comes, so 408 at the deadline, the worker free."""
    with Wire(server) as wire:
        started = time.monotonic()
        wire.sock.sendall(head("POST /healthz HTTP/1.1", "Transfer-Encoding: chunked") + b"1" + b"0" * 20 + b"\r\nabc")
        assert timed_healthz(server) < 1.0
        answer = wire.answer()
        assert answer.status == 408
        assert READ_TIMEOUT - 0.5 < time.monotonic() - started < READ_TIMEOUT + SLACK


# -- gunicorn's limits and the worker's own, at the edge ---------------------------------------------


def fields_to(total: int) -> bytes:
    """A GET /healthz head exactly ``total`` bytes long (its final CRLF included), in fields of 8,000 bytes."""
    start = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    lines, left, number = [], total - len(start) - 2, 0
    while left:
        size = min(8000, left)
        if left - size and left - size < 20:
            size -= 20
        name = b"X-Pad-%02d: " % number
        lines.append(name + b"p" * (size - len(name) - 2) + b"\r\n")
        left -= size
        number += 1
    data = start + b"".join(lines) + b"\r\n"
    assert len(data) == total
    return data


LIMITS: dict[str, tuple[bytes, int]] = {
    "50 fields (gunicorn's limit)": (get("/healthz", *(f"X-F{n}: y" for n in range(49))), 200),
    "51 fields": (get("/healthz", *(f"X-F{n}: y" for n in range(50))), 431),
    "a field line of 8,188 bytes (8,190 with its CRLF)": (get("/healthz", "X-Long: " + "v" * 8180), 200),
    "a field line of 8,189 bytes": (get("/healthz", "X-Long: " + "v" * 8181), 431),
    "a request line of 8,190 bytes": (head("GET /" + "a" * (8190 - len("GET / HTTP/1.1")) + " HTTP/1.1"), 404),
    "a request line of 8,191 bytes": (head("GET /" + "a" * (8191 - len("GET / HTTP/1.1")) + " HTTP/1.1"), 414),
    "a head of 64 KiB": (fields_to(64 * 1024), 200),
}


@pytest.mark.parametrize(("data", "status"), LIMITS.values(), ids=LIMITS.keys())
def test_heads_at_the_limits(server: GunicornServer, data: bytes, status: int) -> None:
    """Under a limit the request is served and the connection kept for the next; over it, one answer and the close."""
    with Wire(server) as wire:
        wire.sock.sendall(data + HEALTHZ)
        answer = wire.answer()
        assert answer.status == status, answer.raw[:300]
        if status < 414:
            assert wire.answer().body == HEALTHZ_BODY
            assert wire.rest() == (b"", False)
        else:
            assert wire.rest(READ_TIMEOUT + SLACK) == (b"", True)


def test_a_head_over_64_kib_gets_431_however_it_arrives(server: GunicornServer) -> None:
    """In one write the head's end arrives in the same read as its 65,537th byte: still 431, as when it trickles."""
    with Wire(server) as wire:
        with contextlib.suppress(OSError):
            wire.sock.sendall(fields_to(64 * 1024 + 1) + HEALTHZ)
        answer = wire.answer()
        assert answer.status == 431, answer.raw[:300]
        assert wire.rest(READ_TIMEOUT + SLACK) == (b"", True)


# -- clients that do not read their answers -------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [HEALTHZ, get("/setup/static/setup.css")],
    ids=["answers written whole (sendall)", "a file after its head (sendfile)"],
)
def test_a_client_that_stops_reading_holds_the_worker_no_longer_than_the_deadline(
    server: GunicornServer, request_bytes: bytes
) -> None:
    """Its answers wait in the socket buffers until the worker's write would block: that write is given up at the
    read deadline and the connection closed, so the one worker answers /healthz again within it (before, it was
    held until gunicorn killed it, 30 s, with every connection it had).  Nor does the worker read on from a
    connection that has a whole request waiting: before, it read 64 KiB of requests for every one it answered,
    holding all a client sent (tens of megabytes) and copying all of it for each answer."""
    memory = server.worker_anonymous_kib()
    logged = len(server.log_text())
    with contextlib.closing(flood_unread(server, request_bytes)) as flooding:
        grown = max(server.worker_anonymous_kib().values()) - max(memory.values())
        assert grown < 1536, f"the worker grew by {grown} KiB"
        stalled = time.monotonic()
        assert timed_healthz(server) < READ_TIMEOUT + SLACK
        assert time.monotonic() - stalled < READ_TIMEOUT + SLACK
        # The stalled connection is closed: what it gets is whole answers, then the end.
        flooding.setblocking(True)
        flooding.settimeout(5)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := flooding.recv(1 << 20):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    wait_for(lambda: "did not take its answer" in server.log_text()[logged:], 10, "the write timeout logged")
    assert "Traceback" not in server.log_text()[logged:]


def test_a_client_that_resets_mid_answer_costs_nothing(server: GunicornServer) -> None:
    """Pipelined requests, then a reset (SO_LINGER 0) while their answers are being written: the worker logs no
    error and answers the next client at once."""
    logged = len(server.log_text())
    for _ in range(5):
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(get("/setup/static/setup.css") * 200)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    assert timed_healthz(server) < 1.0
    assert "Traceback" not in server.log_text()[logged:]
    assert "Socket error" not in server.log_text()[logged:]


def test_a_killed_worker_with_kept_connections_is_replaced_and_they_are_closed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SIGKILL of the worker holding idle kept-alive connections: each sees the end of its connection (no half
    answer), and the master's new worker serves."""
    workdir = tmp_path_factory.mktemp("killed")
    with gunicorn_on(workdir, base_config(workdir, limits={"client_rate": 0}), workers=1) as killed:
        (worker,) = killed.worker_pids()
        with contextlib.ExitStack() as held:
            wires = [held.enter_context(Wire(killed)) for _ in range(5)]
            for wire in wires:
                wire.sock.sendall(HEALTHZ)
                assert wire.answer().field("connection") == "keep-alive"
            os.kill(worker, signal.SIGKILL)
            for wire in wires:
                assert wire.rest(5.0) == (b"", True)
        wait_for(lambda: len(killed.worker_pids()) == 1 and killed.worker_pids() != [worker], 15, "a new worker")
        wait_for(lambda: _answers(killed), 15, "the new worker to answer")


def _answers(server: GunicornServer) -> bool:
    try:
        return timed_healthz(server) < 1.0
    except OSError:
        return False


def test_a_graceful_stop_during_a_write_that_waits_ends_within_the_write_deadline(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SIGTERM while a client that stopped reading has answers waiting: the stop is not held for
    graceful_timeout (10 s) or until a kill.  The worker answers the request it is on with Connection: close
    (or gives up its write at the deadline, if that write waits) and exits."""
    workdir = tmp_path_factory.mktemp("stopping")
    config = base_config(workdir, limits={"client_rate": 0})
    env = {"AUTOCONFIG_READ_TIMEOUT": str(READ_TIMEOUT)}
    with gunicorn_on(workdir, config, env=env, workers=1) as stopping:
        with contextlib.closing(flood_unread(stopping, HEALTHZ)):
            started = time.monotonic()
            os.kill(stopping.pid, signal.SIGTERM)
            wait_for(lambda: not stopping.worker_pids(), 10, "the worker to exit")
            assert time.monotonic() - started < READ_TIMEOUT + SLACK
        log = stopping.log_text()
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log
