"""Slow and stalling clients against the real gunicorn server, with the settings scripts/serve uses.

A client that sends part of a request and waits must not hold a worker:
``/healthz`` and every other client keep their answers, and the stalled
client gets ``408 Request Timeout`` once the read deadline has passed,
however it trickles.  Requests that arrive in pieces within the deadline
are served as usual.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoconfig.worker import DEFAULT_READ_TIMEOUT, MAX_BODY, MAX_HEAD
from tests.support.config import base_config
from tests.support.gunicorn import GunicornServer, gunicorn_on, http
from tests.support.ports import wait_for
from tests.support.sockets import SLACK, connect, read_answer, status_of, timed_healthz

POX_PATH = "/autodiscover/autodiscover.xml"
POX_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
    b"<Request><EMailAddress>nobody@example.net</EMailAddress>"
    b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
    b"</AcceptableResponseSchema></Request></Autodiscover>"
)
# The answer for an address with nothing enabled: Outlook's "no configuration" error.
POX_DECLINED = b"<ErrorCode>501</ErrorCode>"
POLICY_SECRET = "slow-clients-policy-secret-0123456789"


def pox_head(length: int | None, *extra: str) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [f"POST {POX_PATH} HTTP/1.1", "Host: autoconfig.example.net", "Content-Type: text/xml", framing, *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture(scope="module")
def serve_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """config/gunicorn.conf.py as scripts/serve runs it: default workers, default read deadline."""
    workdir = tmp_path_factory.mktemp("slow")
    with gunicorn_on(workdir, base_config(workdir, limits={"client_rate": 0}), workers=None) as server:
        # Every worker the settings start has booted, so "workers + 1" counts them all.
        expected = multiprocessing.cpu_count() * 2 + 1
        wait_for(
            lambda: len(server.worker_pids()) == server.log_text().count("serving example.net") == expected,
            timeout=30,
            what=f"{expected} workers",
        )
        yield server


# What a stalling client sends before it waits, by kind.
STALLS: dict[str, Callable[[], bytes]] = {
    "body": lambda: pox_head(16000) + POX_BODY[:10],  # headers and a few bytes of a 16,000-byte body
    "chunked-body": lambda: pox_head(None) + b"400\r\n" + POX_BODY[:10],
    "headers": lambda: f"POST {POX_PATH} HTTP/1.1\r\nHost: autoconfig.example.net\r\nContent-Le".encode(),
    "nothing": lambda: b"",
    "expect-100": lambda: pox_head(16000, "Expect: 100-continue"),
}


def test_stalled_clients_hold_no_worker_and_get_408_at_the_deadline(serve_settings: GunicornServer) -> None:
    server = serve_settings
    workers = server.worker_pids()
    assert len(workers) >= 2
    # (workers + 1) stalled bodies, as the issue measured, and every other way of stalling besides.
    kinds = ["body"] * (len(workers) + 1) + [kind for kind in STALLS if kind != "body"]
    stalled: list[tuple[str, socket.socket, float]] = []
    trickler_answer: list[bytes] = []
    try:
        for kind in kinds:
            sock = connect(server)
            sock.sendall(STALLS[kind]())
            stalled.append((kind, sock, time.monotonic()))

        def trickle() -> None:
            """One byte of a valid request every 0.3 s: never idle, never complete in time."""
            with connect(server) as sock:
                started = time.monotonic()
                data = pox_head(len(POX_BODY)) + POX_BODY
                try:
                    for byte in data:
                        sock.sendall(bytes([byte]))
                        time.sleep(0.3)
                except OSError:
                    pass  # the server answered and closed: what comes next shows it
                trickler_answer.append(read_answer(sock))
                trickler_answer.append(str(time.monotonic() - started).encode())

        trickler = threading.Thread(target=trickle)
        trickler.start()
        time.sleep(0.5)  # every stall is in place

        assert max(timed_healthz(server) for _ in range(5)) < 1.0
        # Real clients meanwhile get their real answers.
        status, _, body = http("GET", f"{server.url}/mail/config-v1.1.xml?emailaddress=nobody@example.net")
        assert status == 404 and b"enable IMAP" in body
        with connect(server) as sock:
            sock.sendall(pox_head(len(POX_BODY)) + POX_BODY)
            answer = read_answer(sock)
        assert status_of(answer) == 200 and POX_DECLINED in answer

        for kind, sock, started in stalled:
            answer = read_answer(sock)
            waited = time.monotonic() - started
            if kind == "expect-100":  # asked for the body, which never came
                assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), answer
                answer = answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
            assert status_of(answer) == 408, (kind, answer)
            assert b"Content-Type: text/plain; charset=utf-8" in answer
            assert DEFAULT_READ_TIMEOUT - 0.5 < waited < DEFAULT_READ_TIMEOUT + SLACK, (kind, waited)
        trickler.join(30)
        assert status_of(trickler_answer[0]) == 408
        assert float(trickler_answer[1]) < DEFAULT_READ_TIMEOUT + SLACK  # the deadline is for the whole request
    finally:
        for _kind, sock, _started in stalled:
            sock.close()
    assert sorted(server.worker_pids()) == sorted(workers)  # none was killed or replaced
    log = server.log_text()
    assert "WORKER TIMEOUT" not in log and " 500 " not in log
    assert "408: no complete request from 127.0.0.1 within 5 s" in log


def test_a_hundred_stalled_connections_leave_the_node_answering(serve_settings: GunicornServer) -> None:
    stalled = []
    try:
        for _ in range(100):
            sock = connect(serve_settings)
            sock.sendall(STALLS["body"]())
            stalled.append(sock)
        time.sleep(0.3)
        assert max(timed_healthz(serve_settings) for _ in range(5)) < 1.0
    finally:
        for sock in stalled:
            sock.close()


def send_in_pieces(server: GunicornServer, pieces: list[bytes], pause: float) -> bytes:
    with connect(server) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause)
        return read_answer(sock)


def test_a_request_arriving_in_pieces_within_the_deadline_is_served(serve_settings: GunicornServer) -> None:
    request = pox_head(len(POX_BODY)) + POX_BODY
    pieces = [request[:20], request[20:120], request[120:300], request[300:]]
    answer = send_in_pieces(serve_settings, pieces, pause=0.2)
    assert status_of(answer) == 200 and POX_DECLINED in answer


def chunked(body: bytes, size: int) -> list[bytes]:
    parts = [
        f"{len(body[i : i + size]):x};ext=1\r\n".encode() + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    ]
    return [*parts, b"0\r\nX-Trailer: yes\r\n\r\n"]


def test_a_chunked_body_arriving_in_pieces_is_served(serve_settings: GunicornServer) -> None:
    answer = send_in_pieces(serve_settings, [pox_head(None), *chunked(POX_BODY, 100)], pause=0.1)
    assert status_of(answer) == 200 and POX_DECLINED in answer


def test_expect_100_continue_gets_one_interim_answer_then_the_answer(serve_settings: GunicornServer) -> None:
    with connect(serve_settings) as sock:
        sock.sendall(pox_head(len(POX_BODY), "Expect: 100-continue"))
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(POX_BODY)
        answer = read_answer(sock)
    assert b"100 Continue" not in answer
    assert status_of(answer) == 200 and POX_DECLINED in answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # Declared too large: refused from the header, before any body is read.
        (pox_head(2_000_000), 413),
        # Chunked past what is buffered: refused once the cap is read, not after the deadline.
        (pox_head(None) + b"".join(chunked(b"x" * (MAX_BODY * 4), 8192)), 413),
        # Malformed heads are gunicorn's to refuse, at once.
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400),
        (pox_head(10).replace(b"Content-Length: 10", b"Content-Length: ten"), 400),
        (pox_head(10) + b"0123456789" + b"", 200),
    ],
    ids=["declared-too-large", "chunked-too-large", "bare-lf", "bad-length", "short-body"],
)
def test_odd_requests_are_answered_at_once(serve_settings: GunicornServer, request_bytes: bytes, status: int) -> None:
    started = time.monotonic()
    with connect(serve_settings) as sock:
        with contextlib.suppress(OSError):  # refused before it was all sent; the answer says why
            sock.sendall(request_bytes)
        answer = read_answer(sock)
    assert status_of(answer) == status, answer[:300]
    assert time.monotonic() - started < DEFAULT_READ_TIMEOUT - 1


@pytest.fixture(scope="module")
def short_deadline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    workdir = tmp_path_factory.mktemp("short")
    config = base_config(workdir, dovecot={"api_header": f"X-Policy-Key: {POLICY_SECRET}"})
    env = {"AUTOCONFIG_READ_TIMEOUT": "1.5"}
    with gunicorn_on(workdir, config, env=env, workers=1) as server:
        yield server


def test_a_head_too_large_to_buffer_gets_431_at_once(short_deadline: GunicornServer) -> None:
    """Past the buffer a head is refused by the event loop, not handed to a worker to wait on."""
    fields = "".join(f"X-Padding-{n}: {'p' * 2000}\r\n" for n in range((MAX_HEAD // 2000) + 2))
    head = f"GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}".encode()  # no blank line: the head never ends
    started = time.monotonic()
    with connect(short_deadline) as sock:
        sock.sendall(head)
        answer = read_answer(sock)
    assert status_of(answer) == 431, answer[:200]
    assert time.monotonic() - started < 1.0
    short_deadline.wait_for_log("431: the request head from 127.0.0.1 is over 65536 bytes")


def test_a_large_body_the_app_reads_itself_is_still_cut_at_the_deadline(short_deadline: GunicornServer) -> None:
    """Over 16 KiB the worker reads the body itself (an authenticated endpoint): 408 at the deadline, no 500."""
    head = (
        "POST /dovecot/auth-policy?command=allow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Policy-Key: {POLICY_SECRET}\r\nContent-Length: {MAX_BODY + 4000}\r\n\r\n"
    )
    started = time.monotonic()
    with connect(short_deadline) as sock:
        sock.sendall(head.encode() + b'{"login": "alice@example.net", "pad": "')
        answer = read_answer(sock)
    assert status_of(answer) == 408, answer[:300]
    assert answer.endswith(b"408 Request Timeout\n")
    assert time.monotonic() - started < 1.5 + SLACK
    assert " 500 " not in short_deadline.log_text()


def test_the_deadline_comes_from_the_environment(short_deadline: GunicornServer) -> None:
    with connect(short_deadline) as sock:
        started = time.monotonic()
        answer = read_answer(sock)
    assert status_of(answer) == 408
    assert 1.0 < time.monotonic() - started < 1.5 + SLACK


@pytest.mark.parametrize("value", ["0", "-1", "soon", "301"])
def test_a_bad_deadline_stops_the_start_with_its_name(tmp_path: Path, config_path: Path, value: str) -> None:
    server = GunicornServer(config_path, tmp_path / "bad.log", env={"AUTOCONFIG_READ_TIMEOUT": value})
    with pytest.raises(RuntimeError):
        server.start()
    server.stop()
    assert "AUTOCONFIG_READ_TIMEOUT must be seconds between 0.1 and 300" in server.log_text()


# -- requests the event loop cannot frame (issue 17's break pass) ---------------------------------
#
# The worker's event loop hands a request to gunicorn's parser early when it
# cannot frame it, trusting the parser to refuse it at once.  Where the
# parser accepted it instead, the worker itself waited for the rest, and
# (workers + 1) clients that sent such a request and stalled stopped the
# node answering until the deadline, as stalled bodies did.  Each kind below
# must leave ``/healthz`` answering within a second and get its answer from
# the loop, not hold a worker to the deadline.

FRAMING_DEADLINE = 3.0
FRAMING_WORKERS = 2
POX_START = (
    b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autoconfig.example.net\r\nContent-Type: text/xml\r\n"
)

# What each stalling client sends before it waits, and the status it must get.
UNFRAMED_STALLS = {
    # gunicorn takes a chunk size of any number of hex digits; the loop took at most 16.
    "chunk size with leading zeros": (
        POX_START + b"Transfer-Encoding: chunked\r\n\r\n000000000000000000400\r\n<?xml",
        408,
    ),
    # gunicorn reads the codings of every Transfer-Encoding field; the loop read the first only.
    "chunked in a second Transfer-Encoding field": (
        POX_START + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n<?xml",
        408,
    ),
    # Any client can send a head that long; the loop handed it over unfinished.
    "head over the buffer": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-Padding-%d: %s\r\n" % (n, b"p" * 8000) for n in range(MAX_HEAD // 8000 + 1)),
        431,
    ),
}


@pytest.fixture(scope="module")
def framing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    workdir = tmp_path_factory.mktemp("framing")
    env = {"AUTOCONFIG_READ_TIMEOUT": str(FRAMING_DEADLINE)}
    config = base_config(workdir, limits={"client_rate": 0})
    with gunicorn_on(workdir, config, env=env, workers=FRAMING_WORKERS) as server:
        yield server


@pytest.mark.parametrize("kind", list(UNFRAMED_STALLS))
def test_a_request_the_loop_cannot_finish_holds_no_worker(framing_server: GunicornServer, kind: str) -> None:
    sent, expected = UNFRAMED_STALLS[kind]
    stalled: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(FRAMING_WORKERS + 1):
            sock = connect(framing_server)
            sock.sendall(sent)
            stalled.append(sock)
        time.sleep(0.3)  # long enough for a worker to have taken each one
        assert timed_healthz(framing_server) < 1.0
        for sock in stalled:
            answer = read_answer(sock)
            assert status_of(answer) == expected, answer[:300]
        assert time.monotonic() - started < FRAMING_DEADLINE + SLACK
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Transfer-Encoding: chunked\r\n\r\n%s\r\n%s\r\n0\r\n\r\n", id="chunk size with leading zeros"),
        pytest.param(
            b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\n%s\r\n0\r\n\r\n",
            id="chunked in a second Transfer-Encoding field",
        ),
    ],
)
def test_the_same_framings_complete_are_served_at_once(framing_server: GunicornServer, framing: bytes) -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        b"<Request><EMailAddress>nobody@example.net</EMailAddress>"
        b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        b"</AcceptableResponseSchema></Request></Autodiscover>"
    )
    started = time.monotonic()
    with connect(framing_server) as sock:
        sock.sendall(POX_START + framing % (b"%020x" % len(body), body))
        answer = read_answer(sock)
    assert status_of(answer) == 200, answer[:300]
    assert b"<ErrorCode>501</ErrorCode>" in answer  # the answer for an address with nothing enabled
    assert time.monotonic() - started < 1.0


# Descriptors each worker may open beyond those it holds; UNFRAMED_STALLED connections are more than all have.
SPARE_DESCRIPTORS = 30
UNFRAMED_STALLED = 90


def test_running_out_of_file_descriptors_pauses_accepting_and_kills_no_worker(framing_server: GunicornServer) -> None:
    """Under systemd's default limit (1024) more stalled connections than descriptors made accept() fail
    with EMFILE, and the worker died with every connection it held: now it stops accepting for a moment.

    Each worker's limit is what it holds plus SPARE_DESCRIPTORS, so the workers together run out
    however the kernel spreads the connections between them (a fixed limit of 64 left both enough
    when the spread was even), and only once every worker has started: one still starting would
    have kept its own limit of 1024."""
    assert FRAMING_WORKERS * SPARE_DESCRIPTORS < UNFRAMED_STALLED
    wait_for(lambda: len(framing_server.worker_pids()) == FRAMING_WORKERS, 30, f"{FRAMING_WORKERS} workers")
    workers = sorted(framing_server.worker_pids())
    before = {pid: resource.prlimit(pid, resource.RLIMIT_NOFILE) for pid in workers}
    stalled: list[socket.socket] = []
    try:
        for pid in workers:
            held = len(os.listdir(f"/proc/{pid}/fd"))
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (held + SPARE_DESCRIPTORS, before[pid][1]))
        for _ in range(UNFRAMED_STALLED):
            sock = connect(framing_server)
            sock.sendall(POX_START + b"Content-Length: 400\r\n\r\n<?xml")
            stalled.append(sock)
        for sock in stalled:
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]  # not cut off by a dying worker
        assert timed_healthz(framing_server) < 1.0
    finally:
        for sock in stalled:
            sock.close()
        for pid, limit in before.items():
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
    assert sorted(framing_server.worker_pids()) == workers
    assert "Exception in worker process" not in framing_server.log_text()
    framing_server.wait_for_log("Not accepting for 0.1 s: [Errno 24] Too many open files")
