"""Load and fault tests through the real gunicorn server (bounded, loopback).

These are about behaviour under load, not speed: no 5xx, no lost toggle,
no protocol shown that the account has not enabled, bounded memory, and
recovery from a killed worker.  Speed lives in bench/.
"""

from __future__ import annotations

import http.client as http_client
import os
import plistlib
import random
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.support.admin import LiveAdmin
from tests.support.fixture_types import MakeServer
from tests.support.gunicorn import GunicornServer
from tests.support.load import Request, run_load
from tests.support.ports import wait_for
from tests.support.postgres import PostgresCluster
from tests.support.promises import OUTLOOK_REQUEST_NS, OUTLOOK_RESPONSE_NS


def raw_http(
    base: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


STABLE = {f"stable{n}@example.net": (n % 2 == 0, n % 3 == 0) for n in range(30)}
TOGGLED = [f"toggled{n}@example.net" for n in range(20)]
UNKNOWN_POOL = 1000


@pytest.fixture
def loaded_server(config_data: dict[str, Any], make_server: MakeServer) -> GunicornServer:
    config_data["limits"] = {"client_rate": 0, "admin_rate": 0}  # one test client is every client here
    server = make_server(config_data)
    for address, (imap, pop) in STABLE.items():
        LiveAdmin(server).put(address, imap=imap, pop=pop)
    return server


def thunderbird(address: str) -> Request:
    return ("GET", f"/mail/config-v1.1.xml?emailaddress={address}", None, {})


def outlook(address: str) -> Request:
    body = (
        f'<Autodiscover xmlns="{OUTLOOK_REQUEST_NS}"><Request><EMailAddress>{address}</EMailAddress>'
        f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema></Request></Autodiscover>"
    )
    return ("POST", "/autodiscover/autodiscover.xml", body.encode(), {"Content-Type": "text/xml"})


def apple(address: str) -> Request:
    return ("GET", f"/apple/mail.mobileconfig?emailaddress={address}", None, {})


FORMATS = (thunderbird, outlook, apple)
APPLE_KINDS = {"EmailTypeIMAP": "imap", "EmailTypePOP": "pop3"}
XML = etree.XMLParser(resolve_entities=False, no_network=True)


def shown_protocols(request: Request, status: int, body: bytes) -> set[str] | None:
    """The incoming protocols an answer advertises (in any format), or None for 'nothing enabled'."""
    path = request[1]
    if path.startswith("/autodiscover/"):
        assert status == 200
        root = etree.fromstring(body, XML)
        types = {p.findtext(f"{{{OUTLOOK_RESPONSE_NS}}}Type") for p in root.iter(f"{{{OUTLOOK_RESPONSE_NS}}}Protocol")}
        incoming = {t.lower() for t in types if t != "SMTP"}
        if not incoming:
            # "Nothing enabled" is exactly Error 501; any other error is a failure, not a decline.
            codes = [e.text for e in root.iter() if isinstance(e.tag, str) and e.tag.endswith("}ErrorCode")]
            assert codes == ["501"], body
        return incoming or None
    if status == 404:
        return None
    assert status == 200, status
    if path.startswith("/apple/"):
        payloads = plistlib.loads(body)["PayloadContent"]
        return {APPLE_KINDS[p["EmailAccountType"]] for p in payloads if p["PayloadType"] == "com.apple.mail.managed"}
    return {s.get("type", "") for s in etree.fromstring(body, XML).iterfind("emailProvider/incomingServer")}


def expected(request: Request, imap: bool, pop: bool) -> set[str] | None:
    if request[1].startswith("/apple/"):  # one account per profile: IMAP if enabled, else POP
        return {"imap"} if imap else ({"pop3"} if pop else None)
    shown = {"imap"} if imap else set()
    shown |= {"pop3"} if pop else set()
    return shown or None


def address_of(request: Request) -> str:
    if request[2] is not None:
        return etree.fromstring(request[2], XML).findtext(f".//{{{OUTLOOK_REQUEST_NS}}}EMailAddress") or ""
    return request[1].split("emailaddress=")[1]


def mixed_request(rng: random.Random) -> Request:
    # Unknown addresses come from a fixed pool, as looping clients do; the warm-up
    # sees them all, so the bounded caches are full before memory is measured.
    address = rng.choice([*STABLE, *TOGGLED, f"unknown{rng.randrange(UNKNOWN_POOL)}@example.net"])
    return rng.choice(FORMATS)(address)


def check_answer(request: Request, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, f"server error {status}"
    address = address_of(request)
    if address in STABLE:
        assert shown_protocols(request, status, body) == expected(request, *STABLE[address])
    elif address.startswith("unknown"):
        assert shown_protocols(request, status, body) is None


class Toggler(threading.Thread):
    """Flips the toggled accounts through the admin API and remembers every acknowledged write."""

    def __init__(self, server: GunicornServer, stop: threading.Event) -> None:
        super().__init__()
        self.server, self.stop_event = server, stop
        self.acknowledged: dict[str, tuple[bool, bool]] = {}
        self.rng = random.Random(7)

    def run(self) -> None:
        while not self.stop_event.is_set():
            address = self.rng.choice(TOGGLED)
            imap, pop = self.rng.random() < 0.5, self.rng.random() < 0.5
            # A PUT cut off by a killed worker may or may not have landed; it is
            # idempotent, so it is sent again until one answer acknowledges it.
            for _attempt in range(5):
                try:
                    status, _, _ = LiveAdmin(self.server).call("PUT", address, {"imap": imap, "pop": pop})
                except (OSError, http_client.HTTPException):
                    continue
                if status == 200:
                    self.acknowledged[address] = (imap, pop)
                    break
            time.sleep(0.01)


def test_sixty_seconds_of_mixed_load(loaded_server: GunicornServer) -> None:
    stop = threading.Event()
    toggler = Toggler(loaded_server, stop)
    # Warm-up on fresh connections, so every worker fills its imports and bounded caches.
    run_load(loaded_server.port, mixed_request, seconds=10, threads=4, keep_alive=False)
    memory_before = loaded_server.worker_anonymous_kib()
    toggler.start()
    try:
        result = run_load(loaded_server.port, mixed_request, seconds=60, threads=4, check=check_answer)
    finally:
        stop.set()
        toggler.join()
    memory_after = loaded_server.worker_anonymous_kib()
    print(f"requests: {result.total}, statuses: {dict(result.statuses)}, KiB {memory_before} -> {memory_after}")

    assert result.total > 1000, "the load actually ran"
    assert not result.failures, result.failures[:5]
    assert result.connection_errors == 0
    assert all(status < 500 for status in result.statuses), result.statuses
    # No lost toggle: every account ends as its last acknowledged write, in the store and in the document.
    assert len(toggler.acknowledged) == len(TOGGLED)
    for address, (imap, pop) in toggler.acknowledged.items():
        account = LiveAdmin(loaded_server).get(address)
        assert (account["imap"], account["pop"]) == (imap, pop)
        for make in FORMATS:
            request = make(address)
            method, path, data, headers = request
            status, _, body = raw_http(loaded_server.url, method, path, data, headers)
            assert shown_protocols(request, status, body) == expected(request, imap, pop), make.__name__
    # Memory per worker does not grow more than 10 % (same workers before and after): its own
    # anonymous memory, which a leak grows, not PSS, which other processes' exits move.
    assert set(memory_before) == set(memory_after), "no worker was replaced"
    for pid, before in memory_before.items():
        after = memory_after[pid]
        assert after <= before * 1.10, f"worker {pid}: anonymous memory {before} KiB -> {after} KiB"


def test_a_worker_killed_under_load_is_replaced_and_nothing_is_lost(
    loaded_server: GunicornServer, config_data: dict[str, Any]
) -> None:
    threads = 4
    stop = threading.Event()
    toggler = Toggler(loaded_server, stop)
    toggler.start()
    victim = loaded_server.worker_pids()[0]

    def kill_soon() -> None:
        time.sleep(2)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        result = run_load(loaded_server.port, mixed_request, seconds=6, threads=threads, check=check_answer)
    finally:
        stop.set()
        toggler.join()
        killer.join()

    assert not result.failures, result.failures[:5]
    assert all(status < 500 for status in result.statuses), result.statuses
    # At most the requests in flight on the killed worker fail: one per client thread at worst.
    assert result.connection_errors <= threads
    wait_for(
        lambda: len(loaded_server.worker_pids()) == 2 and victim not in loaded_server.worker_pids(), 15, "a new worker"
    )
    for address, (imap, pop) in toggler.acknowledged.items():
        account = LiveAdmin(loaded_server).get(address)
        assert (account["imap"], account["pop"]) == (imap, pop)
    database = config_data["store"]["url"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def check_answer_during_outage(request: Request, status: int, headers: dict[str, str], body: bytes) -> None:
    """While the store is away: a clean 503 with Retry-After, or (before/after) the right answer."""
    if status == 503:
        assert headers.get("Retry-After", "").isdigit(), headers
        return
    check_answer(request, status, headers, body)


def test_the_store_going_away_under_load(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], tmp_path: Path
) -> None:
    """PostgreSQL stops under load: 503 + Retry-After in bounded time, never a wrong protocol, then recovery."""
    store_timeout = 1
    with PostgresCluster(tmp_path / "pg") as cluster:
        config_data["store"] = {"url": cluster.create_database("load"), "timeout": store_timeout}
        config_data["limits"] = {"client_rate": 0, "admin_rate": 0}
        with GunicornServer(write_config(config_data), tmp_path / "gunicorn.log") as server:
            for address, (imap, pop) in STABLE.items():
                LiveAdmin(server).put(address, imap=imap, pop=pop)

            def outage() -> None:
                time.sleep(3)
                cluster.stop_server()
                time.sleep(4)
                cluster.start_server()

            breaker = threading.Thread(target=outage)
            breaker.start()
            try:
                result = run_load(server.port, mixed_request, seconds=12, threads=4, check=check_answer_during_outage)
            finally:
                breaker.join()

            assert not result.failures, result.failures[:5]
            assert result.statuses[503] > 0, "the outage was seen"
            assert set(result.statuses) <= {200, 404, 503}, result.statuses
            assert result.slowest < store_timeout + 2.5, f"a request took {result.slowest:.1f} s"
            # Recovered without a restart: every stable account answered correctly again.
            for address in STABLE:
                request = thunderbird(address)
                status, headers, body = raw_http(server.url, *request)
                check_answer(request, status, headers, body)
