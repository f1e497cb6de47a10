"""Kept-alive connections against the real gunicorn server (the buffering worker).

Dovecot's HTTP client keeps its connection to the policy server open and
sends the next login's question on it, so an answered connection goes back
into the worker's event loop instead of being closed.  What that must not
change: a connection waiting for its next request costs a buffer, never a
worker; its next request is read whole, under the read deadline, before a
worker sees it; idle connections are bounded and closed after the
keep-alive time; ``Connection: close`` (and HTTP/1.0) closes.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator

import pytest

from autoconfig.worker import MAX_IDLE, STOP_IDLE_LINGER
from tests.support.config import base_config
from tests.support.gunicorn import GunicornServer, gunicorn_on
from tests.support.ports import wait_for
from tests.support.sockets import SLACK, Client, status_of, timed_healthz

READ_TIMEOUT = 1.5
KEEPALIVE = 3  # seconds; the settings' own (15) would make the idle test slow
WORKER_TIMEOUT = 4  # gunicorn kills a worker whose heartbeat is older than this
POLICY_SECRET = "keepalive-policy-secret-0123456789"
POLICY_BODY = json.dumps({"login": "nobody@example.net", "protocol": "imap", "real_remote": "192.0.2.7"}).encode()


def get(path: str, *fields: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: autoconfig.example.net", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def policy(secret: str = POLICY_SECRET, *fields: str) -> bytes:
    """Dovecot's question as its HTTP client sends it (HTTP/1.1, Connection: Keep-Alive)."""
    lines = [
        "POST /dovecot/auth-policy?command=allow HTTP/1.1",
        "Host: 127.0.0.1",
        "User-Agent: dovecot/auth-policy-client",
        "Connection: Keep-Alive",
        "Content-Type: application/json",
        f"X-Policy-Key: {secret}",
        f"Content-Length: {len(POLICY_BODY)}",
        *fields,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + POLICY_BODY


def connection_field(answer: bytes) -> str:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    values = [
        line.split(":", 1)[1].strip().lower() for line in head.split("\r\n") if line.lower().startswith("connection:")
    ]
    assert len(values) == 1, head
    return values[0]


def start(tmp_path_factory: pytest.TempPathFactory, name: str, workers: int, env: dict[str, str]) -> GunicornServer:
    """A server of its own (started and always stopped by ``with``), no rate limit, the policy secret set."""
    workdir = tmp_path_factory.mktemp(name)
    config = base_config(workdir, limits={"client_rate": 0}, dovecot={"api_header": f"X-Policy-Key: {POLICY_SECRET}"})
    return gunicorn_on(workdir, config, env=env, workers=workers)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """One worker, so every connection of a test meets the same event loop; short deadlines."""
    env = {
        "AUTOCONFIG_READ_TIMEOUT": str(READ_TIMEOUT),
        # gunicorn reads these after its config file: the keep-alive time and the worker timeout, shortened.
        "GUNICORN_CMD_ARGS": f"--keep-alive {KEEPALIVE} --timeout {WORKER_TIMEOUT}",
    }
    with start(tmp_path_factory, "keepalive", 1, env) as running:
        yield running


def test_a_keep_alive_client_gets_several_answers_on_one_connection(server: GunicornServer) -> None:
    with Client(server) as client:
        for request, status, part in [
            (policy(), 200, b'"status":-1'),  # nobody@example.net has nothing enabled
            (get("/mail/config-v1.1.xml?emailaddress=nobody@example.net"), 404, b"enable IMAP"),
            (policy(), 200, b'"status":-1'),
            (get("/healthz"), 200, b'"ok"'),
            (policy(), 200, b'"status":-1'),
        ]:
            answer = client.ask(request)
            assert status_of(answer) == status and part in answer, answer[:400]
            assert connection_field(answer) == "keep-alive"
        assert not client.closed_by_server(0.3)


def test_a_pipelined_pair_is_answered_in_order(server: GunicornServer) -> None:
    with Client(server) as client:
        # Sent in one piece: the second request is read along with the first.
        client.sock.sendall(get("/healthz") + policy() + get("/mail/config-v1.1.xml?emailaddress=x@example.net"))
        first, second, third = client.answer(), client.answer(), client.answer()
        assert status_of(first) == 200 and b'"ok"' in first
        assert status_of(second) == 200 and b'"status":-1' in second
        assert status_of(third) == 404 and b"enable IMAP" in third
        # And the connection is still good for more.
        assert status_of(client.ask(get("/healthz"))) == 200


def test_a_body_the_application_did_not_read_is_skipped_before_the_next_request(server: GunicornServer) -> None:
    with Client(server) as client:
        client.sock.sendall(policy(secret="wrong-secret-wrong-secret-00") + policy())
        refused, answered = client.answer(), client.answer()
        assert status_of(refused) == 401, refused[:300]
        assert status_of(answered) == 200 and b'"status":-1' in answered, answered[:300]


def test_connection_close_is_honoured(server: GunicornServer) -> None:
    for request in [
        get("/healthz", "Connection: close"),
        policy(POLICY_SECRET, "Connection: close").replace(b"Connection: Keep-Alive\r\n", b""),
        get("/healthz", version="1.0"),  # HTTP/1.0 closes unless it asks for keep-alive
    ]:
        with Client(server) as client:
            answer = client.ask(request)
            assert status_of(answer) == 200, answer[:300]
            assert connection_field(answer) == "close"
            assert client.closed_by_server(2.0)
    with Client(server) as client:
        answer = client.ask(get("/healthz", "Connection: keep-alive", version="1.0"))
        assert connection_field(answer) == "keep-alive"
        assert status_of(client.ask(get("/healthz", "Connection: close", version="1.0"))) == 200
        assert client.closed_by_server(2.0)


def test_a_pipelined_request_after_connection_close_is_not_served(server: GunicornServer) -> None:
    with Client(server) as client:
        client.sock.sendall(get("/healthz", "Connection: close") + get("/healthz"))
        assert connection_field(client.answer()) == "close"
        assert client.closed_by_server(2.0)
        assert client.buffer == b""


def test_an_idle_connection_that_trickles_half_a_request_gets_408_and_holds_no_worker(
    server: GunicornServer,
) -> None:
    with Client(server) as client:
        assert status_of(client.ask(policy())) == 200
        time.sleep(0.5)  # idle a while, then half of the next question
        half = policy()[:80]
        started = time.monotonic()
        for byte in half[:40]:
            client.sock.sendall(bytes([byte]))
            time.sleep(0.01)
        client.sock.sendall(half[40:])
        # The one worker answers others meanwhile: the half request waits in the loop, not in the worker.
        assert max(timed_healthz(server) for _ in range(3)) < 1.0
        answer = client.answer()
        waited = time.monotonic() - started
        assert status_of(answer) == 408, answer[:300]
        assert READ_TIMEOUT - 0.5 < waited < READ_TIMEOUT + SLACK, waited
        assert client.closed_by_server(2.0)
    assert "WORKER TIMEOUT" not in server.log_text()


def test_an_idle_connection_is_closed_after_the_keep_alive_time_without_a_word(server: GunicornServer) -> None:
    with Client(server) as client:
        assert status_of(client.ask(get("/healthz"))) == 200
        started = time.monotonic()
        assert client.closed_by_server(KEEPALIVE + SLACK)
        assert time.monotonic() - started > KEEPALIVE - 0.5
        assert client.buffer == b""  # no 408 for a connection that was only waiting


def test_idle_connections_kept_longer_than_the_worker_timeout_leave_the_heartbeat_going(
    server: GunicornServer,
) -> None:
    """The loop notifies the arbiter while it waits: idle connections never make it look stuck."""
    workers = server.worker_pids()
    with contextlib.ExitStack() as held:
        clients = [held.enter_context(Client(server)) for _ in range(5)]
        for client in clients:
            assert status_of(client.ask(get("/healthz"))) == 200
        time.sleep(WORKER_TIMEOUT + 1)  # kept (KEEPALIVE < this, so some closed meanwhile: none killed the worker)
        assert server.worker_pids() == workers
        assert timed_healthz(server) < 1.0
    assert "WORKER TIMEOUT" not in server.log_text()


def test_many_idle_connections_leave_healthz_answering_and_the_oldest_beyond_the_cap_are_closed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """One worker with the settings' keep-alive time: it keeps MAX_IDLE connections, closing the oldest first."""
    count = MAX_IDLE + 40
    clients: list[Client] = []
    with start(tmp_path_factory, "many-idle", 1, {}) as server, contextlib.ExitStack() as held:
        for _ in range(count):
            client = held.enter_context(Client(server))
            assert status_of(client.ask(get("/healthz"))) == 200
            clients.append(client)
        assert max(timed_healthz(server) for _ in range(5)) < 1.0
        time.sleep(0.2)
        closed = [client.closed_by_server() for client in clients]
        assert sum(closed) == count - MAX_IDLE, closed
        assert all(closed[: count - MAX_IDLE]) and not any(closed[count - MAX_IDLE :]), closed
        assert status_of(clients[-1].ask(get("/healthz"))) == 200  # the kept ones still serve


def test_a_stopping_worker_closes_its_idle_connections_at_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Graceful stop: idle connections are closed within STOP_IDLE_LINGER, not kept for graceful_timeout (10 s)."""
    clients: list[Client] = []
    with start(tmp_path_factory, "stopping", 2, {}) as server, contextlib.ExitStack() as held:
        for _ in range(10):
            client = held.enter_context(Client(server))
            assert connection_field(client.ask(get("/healthz"))) == "keep-alive"
            clients.append(client)
        started = time.monotonic()
        server._proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        wait_for(lambda: server._proc.poll() is not None, 10, "gunicorn to stop")  # type: ignore[union-attr]
        assert time.monotonic() - started < STOP_IDLE_LINGER + 3
        assert all(client.closed_by_server(1.0) for client in clients)
    assert "Exception" not in server.log_text()


def test_a_request_arriving_on_an_idle_connection_of_a_stopping_worker_is_answered_with_close(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with start(tmp_path_factory, "stopping-request", 1, {}) as server, Client(server) as client:
        assert connection_field(client.ask(get("/healthz"))) == "keep-alive"
        server._proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        time.sleep(STOP_IDLE_LINGER / 4)  # the worker has heard of it, its idle connection is still open
        answer = client.ask(policy())
        assert status_of(answer) == 200 and connection_field(answer) == "close"
        assert client.closed_by_server(2.0)
