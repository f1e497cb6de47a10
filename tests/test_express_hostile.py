"""Hostile clients against the express lane (autoconfig/web/express.py, the worker's ``_express``).

The lane must answer any bytes exactly as the full path does, or leave them
to it: odd heads and bodies, pipelines mixing both paths sent whole and in
pieces, a store file deleted, a worker at its request limit, each asked of a
server with the lane and one without.  And what the worker promises on every
path holds in the lane too: a client that never reads, one that resets, many
kept connections at once, a stop mid-stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from autoconfig.store.sqlite import FILE_CHECK_INTERVAL
from tests.support.config import base_config
from tests.support.express import (
    SECRET,
    ask,
    body,
    express_count,
    express_server,
    lane_pair,
    metric_lines,
    question,
    same_but_date,
)
from tests.support.gunicorn import GunicornServer, gunicorn_on, http
from tests.support.ports import wait_for
from tests.support.sockets import SLACK, Client, connect, flood_unread, status_of, timed_healthz

READ_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornServer, GunicornServer]]:
    """(lane on, lane off)."""
    with lane_pair(tmp_path_factory) as pair:
        yield pair


ALLOW = "POST /dovecot/auth-policy?command=allow HTTP/1.1"
REPORT = "POST /dovecot/auth-policy?command=report HTTP/1.1"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def with_field(name: bytes, line: bytes) -> bytes:
    """``question()`` with its ``name`` field line replaced by ``line`` (b"" drops it)."""
    request = question()
    start = request.index(b"\r\n" + name + b":") + 2
    end = request.index(b"\r\n", start)
    return request[:start] + line + request[end + 2 if not line else end :]


ODD = {
    "no Content-Length": question(length=False),
    "Content-Length with leading zeros": question().replace(b"Content-Length: ", b"Content-Length: 00"),
    "Content-Length with a plus": question().replace(b"Content-Length: ", b"Content-Length: +"),
    "a tab before a value": question().replace(b"Host: ", b"Host:\t"),
    "no blank after the colon": question().replace(b"Host: ", b"Host:"),
    "blanks after a value": question().replace(b"Connection: Keep-Alive", b"Connection: Keep-Alive \t"),
    "a blank before the colon": question().replace(b"Host:", b"Host :"),
    "an empty Host": question(host=""),
    "an empty User-Agent": with_field(b"User-Agent", b"User-Agent:"),
    "an empty secret": question(secret=" "),
    "Content-Type twice": question(fields=("Content-Type: application/json",)),
    "Date twice": question(fields=("Date: x",)),
    "Content-Length twice, alike": question(fields=(f"Content-Length: {len(body())}",)),
    "Connection: close, keep-alive": with_field(b"Connection", b"Connection: close, keep-alive"),
    "Connection in capitals": with_field(b"Connection", b"Connection: CLOSE"),
    "a User-Agent near the field size limit": with_field(b"User-Agent", b"User-Agent: " + b"u" * 8170),
    "a User-Agent at the field size limit": with_field(b"User-Agent", b"User-Agent: " + b"u" * 8176),
    "a fragment": question(request_line=ALLOW.replace("allow", "allow#")),
    "a %-escape in the command": question(request_line=ALLOW.replace("allow", "%61llow")),
    "a %-escape in the path": question(request_line=ALLOW.replace("auth-policy", "auth%2Dpolicy")),
    "absolute form": question(request_line=ALLOW.replace("/dovecot", "http://127.0.0.1:8080/dovecot")),
    "an empty query parameter after": question(request_line=ALLOW.replace("allow", "allow&")),
    "command in capitals": question(request_line=ALLOW.replace("allow", "ALLOW")),
    "two spaces in the request line": question(request_line=ALLOW.replace(" HTTP", "  HTTP")),
    "http in lower case": question(request_line=ALLOW.replace("HTTP", "http")),
    "a request line near its limit": question(request_line=ALLOW.replace("allow", "allow&x=" + "x" * 8130)),
    "a Host with a trailing dot": question(host="example.net."),
    "an IPv6 Host": question(host="[::1]:8080"),
    "a Host over 253 characters": question(host="a" * 300),
    "a port out of range": question(host="a:99999"),
    "a number of 5,000 digits": question(b'{"login": "a@example.net", "protocol": "imap", "n": 1' + b"0" * 5000 + b"}"),
    "a body at the worker's buffer size": question(body(pad="x" * (16 * 1024 - 200))),
    "a NUL in a string": question(body(login="alice\x00@example.net")),
    "an escaped surrogate": question(b'{"login": "\\ud800@example.net", "protocol": "imap"}'),
    "a BOM before the object": question(b"\xef\xbb\xbf" + body()),
    "UTF-16": question(body().decode().encode("utf-16")),
    "nested to the limit": question(
        b'{"login": "a@example.net", "protocol": "imap", "x":' + b"[" * 31 + b"]" * 31 + b"}"
    ),
    "brackets in strings only": question(body(pad="[" * 100)),
    "a pwhash": question(body(pwhash="{SHA512-CRYPT}$6$secret-hash")),
    "duplicate keys deep down": question(b'{"login": "a@example.net", "protocol": "imap", "x": {"a": 1, "a": 2}}'),
    "real_remote IPv6 in the webmail's network": question(body(real_remote="::ffff:192.0.2.3")),
    "real_remote a list": question(body(real_remote=["192.0.2.3"])),
    "real_remote null": question(body(real_remote=None)),
    "real_remote with a zone": question(body(real_remote="fe80::1%eth0")),
    "a report with success a number": question(body(success=1), request_line=REPORT),
}


@pytest.mark.parametrize("name", ODD)
def test_odd_bytes_get_the_full_paths_answer(servers: tuple[GunicornServer, GunicornServer], name: str) -> None:
    on, off = servers
    express_answer, express_closed, _ = ask(on, ODD[name])
    full_answer, full_closed, _ = ask(off, ODD[name])
    assert same_but_date(express_answer) == same_but_date(full_answer)
    assert express_closed == full_closed
    assert metric_lines(on) == metric_lines(off)


def converse(server: GunicornServer, requests: list[bytes], pieces: int = 1) -> tuple[list[bytes], bytes, bool]:
    data = b"".join(requests)
    answers: list[bytes] = []
    with Client(server) as client:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            client.sock.sendall(data[start : start + step])
            time.sleep(0.01 if pieces > 1 else 0)
        with contextlib.suppress(ConnectionError):
            while len(answers) < len(requests):
                answers.append(same_but_date(client.answer()))
        closed = client.closed_by_server(0.3)
        return answers, client.buffer, closed


PIPELINES = {
    "lane, full path with a body, lane": [question(), question(secret="wrong-secret-wrong-secret-000"), question()],
    "a body that looks like a question": [question(b"POST / HTTP/1.1\r\n\r\n"), question()],
    "a close in the middle": [question(), with_field(b"Connection", b"Connection: close"), question(), HEALTHZ],
    "a chunked question between": [
        question(),
        question(b"", length=False, fields=("Transfer-Encoding: chunked",)).replace(
            b"\r\n\r\n", b"\r\n\r\n%x\r\n" % len(body()) + body() + b"\r\n0\r\n\r\n", 1
        ),
        question(),
    ],
    "a refused head after": [question(), question(), b"POST /x HTTP/1.1\r\nHost : x\r\n\r\n", question()],
    "HTTP/1.0 after": [question(), question(request_line=ALLOW.replace("1.1", "1.0")), question()],
    "a question with no length before one with": [question(length=False), question()],
    "a 100-continue question between": [question(), question(fields=("Expect: 100-continue",)), question()],
}


@pytest.mark.parametrize("pieces", [1, 7], ids=["in one write", "in pieces"])
@pytest.mark.parametrize("name", PIPELINES)
def test_pipelines_mixing_both_paths_are_answered_alike(
    servers: tuple[GunicornServer, GunicornServer], name: str, pieces: int
) -> None:
    on, off = servers
    assert converse(on, PIPELINES[name], pieces) == converse(off, PIPELINES[name], pieces)
    assert metric_lines(on) == metric_lines(off)


def test_a_deleted_store_is_the_same_503_in_the_lane_and_healthz_answers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with lane_pair(tmp_path_factory, AUTOCONFIG_READ_TIMEOUT=str(READ_TIMEOUT)) as (on, off):
        for server in (on, off):
            (server.config_path.parent / "accounts.sqlite3").unlink()
        time.sleep(3 * FILE_CHECK_INTERVAL)
        before = express_count(on)
        for request in (question(), question(body(protocol="pop3")), question(body(real_remote="192.0.2.3"))):
            express_answer, express_closed, _ = ask(on, request)
            full_answer, full_closed, _ = ask(off, request)
            assert same_but_date(express_answer) == same_but_date(full_answer)
            assert express_closed == full_closed
        assert status_of(express_answer) == 200  # the webmail's logins need no store
        assert express_count(on) == before + 3
        assert metric_lines(on) == metric_lines(off)
        for server in (on, off):
            status, _, _ = http("GET", f"{server.url}/healthz")
            assert status == 503


def test_max_requests_reached_in_the_lane_says_close_and_a_new_worker_answers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with lane_pair(
        tmp_path_factory, AUTOCONFIG_READ_TIMEOUT=str(READ_TIMEOUT), GUNICORN_CMD_ARGS="--max-requests 4"
    ) as (on, off):
        results = []
        for server in (on, off):
            (worker,) = server.worker_pids()
            results.append(converse(server, [question()] * 6))
            wait_for(lambda s=server, w=worker: s.worker_pids() not in ([], [w]), 15, "a new worker")  # type: ignore[misc]
            wait_for(lambda s=server: _answers(s), 15, "the new worker to answer")  # type: ignore[misc]
        assert results[0] == results[1]
        answers, rest, closed = results[0]
        # Of the worker's 4 requests, the readiness check and lane_pair's switch took the first two.
        assert len(answers) == 2 and rest == b"" and closed
        assert b"\nConnection: close\r\n" in answers[-1]  # same_but_date eats the Date line's \r
        assert "Traceback" not in on.log_text()


def _answers(server: GunicornServer) -> bool:
    try:
        return timed_healthz(server) < 1.0
    except (OSError, AssertionError):
        return False


@pytest.fixture(scope="module")
def lane_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    with express_server(tmp_path_factory, "on", AUTOCONFIG_READ_TIMEOUT=str(READ_TIMEOUT)) as server:
        yield server


def test_a_client_that_stops_reading_lane_answers_holds_the_worker_no_longer_than_the_deadline(
    lane_server: GunicornServer,
) -> None:
    # A lane answer is about 1.4 times its question (/healthz's about 7), so the socket buffers may take every
    # answer and the worker's write never has to wait: what is promised is that the worker answers others in time.
    logged = len(lane_server.log_text())
    before = express_count(lane_server)
    with contextlib.closing(flood_unread(lane_server, question())):
        stalled = time.monotonic()
        assert timed_healthz(lane_server) < READ_TIMEOUT + SLACK
        assert time.monotonic() - stalled < READ_TIMEOUT + SLACK
    assert express_count(lane_server) > before + 10
    assert "Traceback" not in lane_server.log_text()[logged:]


def test_a_client_that_resets_mid_answer_costs_nothing(lane_server: GunicornServer) -> None:
    logged = len(lane_server.log_text())
    for _ in range(5):
        sock = connect(lane_server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(question() * 200)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    assert timed_healthz(lane_server) < 1.0
    assert "Traceback" not in lane_server.log_text()[logged:]
    assert "Socket error" not in lane_server.log_text()[logged:]


def test_many_kept_connections_asking_at_once_each_get_their_answers_in_order(lane_server: GunicornServer) -> None:
    logins = [f"user{n}@elsewhere.example" for n in range(20)]
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(Client(lane_server)) for _ in range(40)]
        for _round in range(5):
            for client in clients:
                client.sock.sendall(b"".join(question(body(login)) for login in logins))
            for client in clients:
                for _login in logins:
                    answer = client.answer()
                    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: keep-alive" in answer
        for client in clients:
            assert not client.closed_by_server(0)


def test_a_worker_stopped_mid_stream_answers_whole_and_says_close(tmp_path_factory: pytest.TempPathFactory) -> None:
    # NOTE: passed, but took ~10 s (graceful_timeout?); not looked into.
    with express_server(tmp_path_factory, "on", AUTOCONFIG_READ_TIMEOUT=str(READ_TIMEOUT)) as server:
        (worker,) = server.worker_pids()
        with Client(server) as client:
            client.ask(question())
            os.kill(worker, signal.SIGTERM)
            answers = []
            with contextlib.suppress(ConnectionError, BrokenPipeError, ConnectionResetError):
                for _ in range(200):
                    answers.append(client.ask(question()))
                    if b"Connection: close" in answers[-1]:
                        break
            assert answers and all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
            assert b"Connection: close" in answers[-1]
            assert client.closed_by_server(2.0)
        wait_for(lambda: worker not in server.worker_pids(), 10, "the worker to exit")
        assert "Traceback" not in server.log_text()


def test_without_dovecot_there_is_no_lane_and_the_endpoint_is_404(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("no-dovecot")
    config = base_config(workdir, limits={"client_rate": 0}, metrics={"enabled": True})
    with gunicorn_on(workdir, config, workers=1) as server:
        with Client(server) as client:
            answer = client.ask(question())
        assert status_of(answer) == 404
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "not_found"
        assert express_count(server) == 0


def test_neither_the_secret_nor_a_pwhash_reaches_the_log(servers: tuple[GunicornServer, GunicornServer]) -> None:
    on, _off = servers
    before = len(on.log_text())
    with Client(on) as client:
        for request in (
            question(body(pwhash="{SHA512-CRYPT}$6$a-hash-never-logged")),
            question(b'{"pwhash": "a-hash-never-logged"'),
            question(body(pwhash="a-hash-never-logged"), request_line=REPORT),
            question(body(login=SECRET, pwhash="a-hash-never-logged")),
        ):
            client.ask(request)
    time.sleep(0.3)
    logged = on.log_text()[before:]
    assert "a-hash-never-logged" not in logged
    assert SECRET not in logged.replace(f"login {SECRET}", "")
