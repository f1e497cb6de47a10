"""Two real servers alike but for the worker's express lane, and the questions and comparisons the lane's tests share.

tests/test_express.py and tests/test_express_hostile.py ask each question of
a server with the lane (``AUTOCONFIG_EXPRESS_LANE=on``) and one without, and
compare what the two answer, log and count.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .admin import LiveAdmin
from .config import POLICY_HEADER, base_config
from .gunicorn import GunicornServer, gunicorn_on, http
from .sockets import Client

SECRET = "express-lane-secret-0123456789"
WEBMAIL_NETWORK = "192.0.2.0/28"


def body(login: str = "alice@example.net", protocol: str = "imap", **fields: object) -> bytes:
    """What Dovecot 2.3's shipped snippet sends (2.4 sends the same names)."""
    attributes = {"login": login, "protocol": protocol, "remote": "198.51.100.9", "real_remote": "198.51.100.9"}
    return json.dumps({**attributes, "session_id": "Zq3z/Sph1JJ/AAAB", "tls": True, **fields}).encode()


def question(
    payload: bytes | None = None,
    *,
    request_line: str = "POST /dovecot/auth-policy?command=allow HTTP/1.1",
    fields: tuple[str, ...] = (),
    secret: str = SECRET,
    content_type: str = "application/json",
    host: str = "127.0.0.1:8080",
    length: bool = True,
) -> bytes:
    """A question as Dovecot's HTTP client writes it, with ``fields`` added or any part changed."""
    payload = body() if payload is None else payload
    lines = [request_line, f"Host: {host}", "Date: Mon, 07 Dec 2026 10:00:00 GMT"]
    lines += ["User-Agent: dovecot/2.3", "Connection: Keep-Alive", f"Content-Type: {content_type}"]
    lines += [f"{POLICY_HEADER}: {secret}"] if secret else []
    lines += [f"Content-Length: {len(payload)}"] if length else []
    return ("\r\n".join([*lines, *fields]) + "\r\n\r\n").encode("latin-1") + payload


def express_server(tmp_path_factory: pytest.TempPathFactory, lane: str, **env: str) -> GunicornServer:
    """A server (not started yet) with the lane ``on`` or ``off``, one worker, every log line written at once."""
    workdir = tmp_path_factory.mktemp(f"express-{lane}")
    config = base_config(
        workdir,
        limits={"client_rate": 0},
        dovecot={"api_header": f"{POLICY_HEADER}: {SECRET}", "webmail_networks": [WEBMAIL_NETWORK]},
        metrics={"enabled": True},
        service={"log_level": "DEBUG", "log_flush_seconds": 0},
    )
    return gunicorn_on(workdir, config, env={"AUTOCONFIG_EXPRESS_LANE": lane, **env}, workers=1)


@contextmanager
def lane_pair(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[tuple[GunicornServer, GunicornServer]]:
    """(lane on, lane off), started, each with imap-on@example.net's IMAP switched on."""
    with express_server(tmp_path_factory, "on", **env) as on, express_server(tmp_path_factory, "off", **env) as off:
        for server in (on, off):
            LiveAdmin(server).set("imap-on@example.net", imap=True)
        yield on, off


def express_count(server: GunicornServer) -> float:
    """autoconfig_express_requests_total for Dovecot's questions (one worker: the scrape flushes its tally)."""
    status, _, text = http("GET", f"{server.url}/metrics")
    assert status == 200
    found = re.search(rb'^autoconfig_express_requests_total\{format="dovecot"\} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def metric_lines(server: GunicornServer) -> list[bytes]:
    """The counters both servers must agree on: requests by family and outcome, Dovecot's decisions."""
    _, _, text = http("GET", f"{server.url}/metrics")
    wanted = (b"autoconfig_requests_total{", b"autoconfig_dovecot_policy_decisions_total{")
    return sorted(line for line in text.splitlines() if line.startswith(wanted) and b'format="metrics"' not in line)


_VARYING = [
    (re.compile(rb"^Date: .*$", re.MULTILINE), b"Date: -"),
]
_LOG_VARYING = [
    (re.compile(r"^\[[^]]*\] \[\d+\] "), "[time] [pid] "),  # gunicorn's own lines
    (re.compile(r"^\d{4}-\d\d-\d\d \S+ \[\d+\] "), "[time] [pid] "),  # the app's
    (re.compile(r" \d+ms "), " -ms "),  # the access log's time taken
]


ACCESS_LINE = re.compile(r'^\S+ "POST /dovecot/auth-policy\?command=')


def same_but_date(answer: bytes) -> bytes:
    for pattern, replacement in _VARYING:
        answer = pattern.sub(replacement, answer)
    return answer


def settled_log(server: GunicornServer, since: int) -> str:
    """The server's log once no line has come for a moment (lines are written around an answer)."""
    deadline = time.monotonic() + 5
    text, seen = server.log_text(), -1
    while len(text) != seen or len(text) == since:
        assert time.monotonic() < deadline, text[since:]
        seen = len(text)
        time.sleep(0.05)
        text = server.log_text()
    return text


def ask(server: GunicornServer, request: bytes) -> tuple[bytes, bool, list[str]]:
    """The answer, whether the server then closed the connection, and the log lines the question left."""
    before = len(settled_log(server, -1))  # the metrics scrapes' lines written first
    with Client(server) as client:
        client.sock.sendall(request)
        try:
            answer = client.answer()
        except ConnectionError:
            answer = client.buffer
        closed = client.closed_by_server(0.2)
    lines = settled_log(server, before)[before:].splitlines()
    for pattern, replacement in _LOG_VARYING:
        lines = [pattern.sub(replacement, line) for line in lines]
    return answer, closed, lines
