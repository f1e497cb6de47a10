"""The express lane (autoconfig/web/express.py) answers Dovecot exactly as the full path does.

Two real gunicorn servers, alike in everything but ``AUTOCONFIG_EXPRESS_LANE``
(on for one, off for the other), are asked the same questions on the same
kind of connection.  For every question the answers are the same bytes but
the Date header, the connection is left open or closed alike, and the log
lines are the same but for times, process ids and gunicorn's access line,
which the lane leaves to the app's own line for the question.  The lane must also have
answered exactly the questions it is meant for (Dovecot's own,
``autoconfig_express_requests_total``) and left every other one to the
full path, which is where every refusal is made.  Then the real Dovecot
installed asks its questions directly, and every one of them takes the lane.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from tests.support.admin import LiveAdmin
from tests.support.config import POLICY_HEADER
from tests.support.dovecot import DovecotServer, dovecot_settings
from tests.support.express import (
    ACCESS_LINE,
    SECRET,
    ask,
    body,
    express_count,
    lane_pair,
    metric_lines,
    question,
    same_but_date,
)
from tests.support.gunicorn import GunicornServer
from tests.support.mail_clients import imap_login, pop3_login
from tests.support.sockets import Client

PASSWORD = "express-lane-password"


class Case(NamedTuple):
    request: bytes
    express: bool  # whether the lane answers it (else the full path does)


# Dovecot's own questions, in every shape the desk answers: the lane takes them all.
EXPRESS = {
    "allowed": Case(question(body("imap-on@example.net")), True),
    "refused": Case(question(body("alice@example.net")), True),
    "pop3 refused": Case(question(body("imap-on@example.net", "pop3")), True),
    "another protocol": Case(question(body(protocol="submission")), True),
    "not our domain": Case(question(body("someone@elsewhere.example")), True),
    "ours but no address": Case(question(body("john..smith@example.net")), True),
    "from the webmail": Case(question(body(real_remote="192.0.2.3")), True),
    "report": Case(
        question(body(success=True), request_line="POST /dovecot/auth-policy?command=report HTTP/1.1"), True
    ),
    "report of a refusal": Case(
        question(body(policy_reject=True), request_line="POST /dovecot/auth-policy?command=report HTTP/1.1"), True
    ),
    "charset named": Case(question(content_type="application/json; charset=utf-8"), True),
    "secret with blanks": Case(question(fields=(), secret=f"  {SECRET}\t"), True),
    "connection close": Case(question().replace(b"Connection: Keep-Alive", b"Connection: close"), True),
    "no connection field": Case(question().replace(b"Connection: Keep-Alive\r\n", b""), True),
    "real_remote a number": Case(question(body(real_remote=7)), True),
    "real_remote no address": Case(question(body(real_remote="not-an-ip")), True),
    "login missing": Case(question(json.dumps({"protocol": "imap"}).encode()), True),
    "success not a flag": Case(
        question(body(success="yes"), request_line="POST /dovecot/auth-policy?command=report HTTP/1.1"), True
    ),
    "not JSON": Case(question(b"{not json"), True),
    "a JSON array": Case(question(b"[1, 2]"), True),
    "a name twice": Case(question(b'{"login": "a@example.net", "login": "b@example.net", "protocol": "imap"}'), True),
    "nested too deep": Case(question(b'{"a":' * 40 + b"1" + b"}" * 40), True),
    "not UTF-8": Case(question(b'{"login": "\xff@example.net", "protocol": "imap"}'), True),
    "empty body": Case(question(b""), True),
}
# Everything else is the full path's, refusals first of all.
FULL = {
    "wrong secret": Case(question(secret="wrong-secret-wrong-secret-000"), False),
    "no secret": Case(question(secret=""), False),
    "secret twice": Case(question(fields=(f"{POLICY_HEADER}: {SECRET}",)), False),
    "text/plain": Case(question(content_type="text/plain"), False),
    "JSON in capitals": Case(question(content_type="Application/JSON"), False),
    "unknown command": Case(question(request_line="POST /dovecot/auth-policy?command=deny HTTP/1.1"), False),
    "no command": Case(question(request_line="POST /dovecot/auth-policy HTTP/1.1"), False),
    "command twice": Case(
        question(request_line="POST /dovecot/auth-policy?command=allow&command=allow HTTP/1.1"), False
    ),
    "GET": Case(question(request_line="GET /dovecot/auth-policy?command=allow HTTP/1.1"), False),
    "another path": Case(question(request_line="POST /dovecot/auth-policy/?command=allow HTTP/1.1"), False),
    "doubled slash": Case(question(request_line="POST //dovecot/auth-policy?command=allow HTTP/1.1"), False),
    "HTTP/1.0": Case(question(request_line="POST /dovecot/auth-policy?command=allow HTTP/1.0"), False),
    "a bad Host": Case(question(host="exa mple!"), False),
    "no Host": Case(question().replace(b"Host: 127.0.0.1:8080\r\n", b""), False),
    "Host twice": Case(question(fields=("Host: 127.0.0.1",)), False),
    "a proxy's field": Case(question(fields=("X-Forwarded-For: 203.0.113.5",)), False),
    "an unknown field": Case(question(fields=("X-Debug: 1",)), False),
    "underscore in a name": Case(question(fields=("X_Policy_Key: x",)), False),
    "obs-fold": Case(question(fields=("User-Agent: a", " folded")), False),
    "a value outside ASCII": Case(question(fields=("Accept-Language: d\xe9",)), False),
    "a control character": Case(question(fields=("Accept: a\x01b",)), False),
    "chunked": Case(
        question(b"", length=False, fields=("Transfer-Encoding: chunked",)).replace(
            b"\r\n\r\n", b"\r\n\r\n" + b"%x\r\n" % len(body()) + body() + b"\r\n0\r\n\r\n", 1
        ),
        False,
    ),
    "100-continue": Case(question(fields=("Expect: 100-continue",)), False),
    "connection upgrade": Case(
        question().replace(b"Connection: Keep-Alive", b"Connection: keep-alive, Upgrade"), False
    ),
    "leading empty line": Case(b"\r\n" + question(), False),
    "lower-case method": Case(question(request_line="post /dovecot/auth-policy?command=allow HTTP/1.1"), False),
}
CASES = {**EXPRESS, **FULL}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornServer, GunicornServer]]:
    """(lane on, lane off)."""
    with lane_pair(tmp_path_factory) as pair:
        yield pair


@pytest.mark.parametrize("name", CASES)
def test_the_lane_answers_as_the_full_path_does(servers: tuple[GunicornServer, GunicornServer], name: str) -> None:
    on, off = servers
    case = CASES[name]
    counted = express_count(on)
    express_answer, express_closed, express_log = ask(on, case.request)
    full_answer, full_closed, full_log = ask(off, case.request)
    assert same_but_date(express_answer) == same_but_date(full_answer)
    assert express_answer.startswith(b"HTTP/1.")
    assert express_closed == full_closed
    if case.express:
        # gunicorn's access log has no line for the lane's answers: the app's own line for the question
        # is their record (a decision at INFO, a report at DEBUG, a refusal as a warning).
        assert not [line for line in express_log if ACCESS_LINE.search(line)], express_log
        assert [line for line in full_log if not ACCESS_LINE.search(line)] == express_log
        assert any("autoconfig.web.dovecot: dovecot auth-policy" in line for line in express_log), express_log
    else:
        assert express_log == full_log
    assert express_count(on) == counted + (1 if case.express else 0)
    assert express_count(off) == 0
    # Both servers counted the question alike: their counts so far are the same, question by question.
    assert metric_lines(on) == metric_lines(off)


def test_pipelined_questions_are_answered_in_order_through_the_lane(
    servers: tuple[GunicornServer, GunicornServer],
) -> None:
    requests = [question(body("imap-on@example.net")), question(secret="wrong-secret-wrong-secret-000"), question()]
    answers = []
    for server in servers:
        with Client(server) as client:
            client.sock.sendall(b"".join(requests))
            answers.append([same_but_date(client.answer()) for _ in requests])
            assert not client.closed_by_server(0.3)
    assert answers[0] == answers[1]
    assert [json.loads(answer.split(b"\r\n\r\n", 1)[1]).get("status") for answer in answers[0]] == [0, None, -1]


def test_a_kept_connection_goes_on_through_the_lane_and_the_full_path(
    servers: tuple[GunicornServer, GunicornServer],
) -> None:
    on, _off = servers
    with Client(on) as client:
        for request in (question(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", question(), question()):
            assert client.ask(request).startswith(b"HTTP/1.1 200 OK\r\n")
        assert not client.closed_by_server(0.3)


def test_a_switch_flipped_is_seen_by_the_next_question_in_the_lane(
    servers: tuple[GunicornServer, GunicornServer],
) -> None:
    on, _off = servers
    admin = LiveAdmin(on)
    with Client(on) as client:
        ask_bob = question(body("bob@example.net", "pop3"))
        assert b'"status":-1' in client.ask(ask_bob)
        admin.set("bob@example.net", pop=True)
        assert b'{"status":0}' in client.ask(ask_bob)
        admin.set("bob@example.net", pop=False)
        assert b'"status":-1' in client.ask(ask_bob)


# -- the real Dovecot's questions take the lane --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dovecot(
    servers: tuple[GunicornServer, GunicornServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DovecotServer]:
    on, _off = servers
    settings = dovecot_settings(f"{on.url}/dovecot/auth-policy", f"{POLICY_HEADER}: {SECRET}", reject_on_fail=False)
    users = dict.fromkeys(("imap-on@example.net", "alice@example.net"), PASSWORD)
    with DovecotServer(tmp_path_factory.mktemp("dovecot"), users, extra_config=settings) as server:
        yield server


def test_every_question_the_installed_dovecot_asks_takes_the_lane(
    servers: tuple[GunicornServer, GunicornServer], dovecot: DovecotServer
) -> None:
    on, _off = servers
    before = express_count(on)
    results = [imap_login(dovecot.imap_port, "imap-on@example.net", PASSWORD) for _ in range(3)]
    results += [
        pop3_login(dovecot.pop3_port, "alice@example.net", PASSWORD),
        imap_login(dovecot.imap_port, "alice@example.net", PASSWORD),
    ]
    assert results[:3] == ["OK"] * 3
    assert results[3].startswith("-ERR [AUTH] POP is turned off") and results[4].startswith(
        "[ALERT] IMAP is turned off"
    )
    # One question per login (the shipped snippet asks after the password only), each in the lane.
    assert express_count(on) == before + 5
