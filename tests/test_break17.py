"""Requests the buffering worker once handed to a worker before they had arrived (issue 17's break pass).

The worker's event loop hands a request to gunicorn's parser early when it
cannot frame it, trusting the parser to refuse it at once.  Where the
parser accepted it instead, the worker itself waited for the rest, and
(workers + 1) clients that sent such a request and stalled stopped the
node answering until the deadline, as the stalled bodies of issue 17 did.
Each kind below must leave ``/healthz`` answering within a second and get
its answer from the loop, not hold a worker to the deadline.
"""

from __future__ import annotations

import contextlib
import copy
import os
import resource
import socket
import time
from collections.abc import Iterator

import pytest
import tomli_w

from autoconfig.worker import MAX_HEAD
from tests.support.config import BASE_CONFIG
from tests.support.gunicorn import GunicornServer
from tests.support.ports import wait_for
from tests.test_slow_clients import SLACK, connect, read_answer, status_of, timed_healthz

DEADLINE = 3.0
WORKERS = 2
POX = b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autoconfig.example.net\r\nContent-Type: text/xml\r\n"

# What each stalling client sends before it waits, and the status it must get.
STALLS = {
    # gunicorn takes a chunk size of any number of hex digits; the loop took at most 16.
    "chunk size with leading zeros": (POX + b"Transfer-Encoding: chunked\r\n\r\n000000000000000000400\r\n<?xml", 408),
    # gunicorn reads the codings of every Transfer-Encoding field; the loop read the first only.
    "chunked in a second Transfer-Encoding field": (
        POX + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n<?xml",
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
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    workdir = tmp_path_factory.mktemp("break17")
    data = copy.deepcopy(BASE_CONFIG)
    data["store"]["url"] = f"sqlite:///{workdir}/accounts.sqlite3"
    data["limits"] = {"client_rate": 0}
    config = workdir / "autoconfig.toml"
    config.write_bytes(tomli_w.dumps(data).encode())
    env = {"AUTOCONFIG_READ_TIMEOUT": str(DEADLINE)}
    with GunicornServer(config, workdir / "gunicorn.log", env=env, workers=WORKERS) as running:
        yield running


@pytest.mark.parametrize("kind", list(STALLS))
def test_a_request_the_loop_cannot_finish_holds_no_worker(server: GunicornServer, kind: str) -> None:
    sent, expected = STALLS[kind]
    stalled: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(WORKERS + 1):
            sock = connect(server)
            sock.sendall(sent)
            stalled.append(sock)
        time.sleep(0.3)  # long enough for a worker to have taken each one
        assert timed_healthz(server) < 1.0
        for sock in stalled:
            answer = read_answer(sock)
            assert status_of(answer) == expected, answer[:300]
        assert time.monotonic() - started < DEADLINE + SLACK
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
def test_the_same_framings_complete_are_served_at_once(server: GunicornServer, framing: bytes) -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        b"<Request><EMailAddress>nobody@example.net</EMailAddress>"
        b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        b"</AcceptableResponseSchema></Request></Autodiscover>"
    )
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(POX + framing % (b"%020x" % len(body), body))
        answer = read_answer(sock)
    assert status_of(answer) == 200, answer[:300]
    assert b"<ErrorCode>501</ErrorCode>" in answer  # the answer for an address with nothing enabled
    assert time.monotonic() - started < 1.0


# Descriptors each worker may open beyond those it holds; STALLED connections are more than all have.
SPARE_DESCRIPTORS = 30
STALLED = 90


def test_running_out_of_file_descriptors_pauses_accepting_and_kills_no_worker(server: GunicornServer) -> None:
    """Under systemd's default limit (1024) more stalled connections than descriptors made accept() fail
    with EMFILE, and the worker died with every connection it held: now it stops accepting for a moment.

    Each worker's limit is what it holds plus SPARE_DESCRIPTORS, so the workers together run out
    however the kernel spreads the connections between them (a fixed limit of 64 left both enough
    when the spread was even), and only once every worker has started: one still starting would
    have kept its own limit of 1024."""
    assert WORKERS * SPARE_DESCRIPTORS < STALLED
    wait_for(lambda: len(server.worker_pids()) == WORKERS, 30, f"{WORKERS} workers")
    workers = sorted(server.worker_pids())
    before = {pid: resource.prlimit(pid, resource.RLIMIT_NOFILE) for pid in workers}
    stalled: list[socket.socket] = []
    try:
        for pid in workers:
            held = len(os.listdir(f"/proc/{pid}/fd"))
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (held + SPARE_DESCRIPTORS, before[pid][1]))
        for _ in range(STALLED):
            sock = connect(server)
            sock.sendall(POX + b"Content-Length: 400\r\n\r\n<?xml")
            stalled.append(sock)
        for sock in stalled:
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]  # not cut off by a dying worker
        assert timed_healthz(server) < 1.0
    finally:
        for sock in stalled:
            sock.close()
        for pid, limit in before.items():
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
    assert sorted(server.worker_pids()) == workers
    assert "Exception in worker process" not in server.log_text()
    server.wait_for_log("Not accepting for 0.1 s: [Errno 24] Too many open files")
