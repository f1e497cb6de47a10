"""Load and fault tests through the real gunicorn server (bounded, loopback).

These are about behaviour under load, not speed: no 5xx, no lost toggle,
no protocol shown that the account has not enabled, bounded memory, and
recovery from a killed worker.  Speed lives in bench/.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.conftest import ADMIN_TOKEN
from tests.support.gunicorn import GunicornServer
from tests.support.load import Request, run_load
from tests.support.ports import wait_for
from tests.test_server import http

STABLE = {f"stable{n}@example.net": (n % 2 == 0, n % 3 == 0) for n in range(30)}
TOGGLED = [f"toggled{n}@example.net" for n in range(20)]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def loaded_server(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], tmp_path: Path
) -> Iterator[GunicornServer]:
    config_data["limits"] = {"client_rate": 0, "admin_rate": 0}  # one test client is every client here
    with GunicornServer(write_config(config_data), tmp_path / "gunicorn.log") as server:
        for address, (imap, pop) in STABLE.items():
            status, _, body = http("PUT", f"{server.url}/admin/v1/accounts/{address}", {"imap": imap, "pop": pop}, AUTH)
            assert status == 200, body
        yield server


def thunderbird(address: str) -> Request:
    return ("GET", f"/mail/config-v1.1.xml?emailaddress={address}", None, {})


def shown_protocols(request: Request, status: int, body: bytes) -> set[str] | None:
    """The incoming protocols an answer advertises, or None for 'nothing enabled'."""
    if status == 404:
        return None
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    return {s.get("type", "") for s in root.iterfind("emailProvider/incomingServer")}


def expected(imap: bool, pop: bool) -> set[str] | None:
    shown = {"imap"} if imap else set()
    shown |= {"pop3"} if pop else set()
    return shown or None


def mixed_request(rng: random.Random) -> Request:
    address = rng.choice([*STABLE, *TOGGLED, f"unknown{rng.randrange(10**6)}@example.net"])
    return thunderbird(address)


def check_answer(request: Request, status: int, body: bytes) -> None:
    assert status < 500, f"server error {status}"
    address = request[1].split("emailaddress=")[1]
    if address in STABLE:
        assert shown_protocols(request, status, body) == expected(*STABLE[address])
    elif address.startswith("unknown"):
        assert status == 404


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
            status, _, _ = http(
                "PUT", f"{self.server.url}/admin/v1/accounts/{address}", {"imap": imap, "pop": pop}, AUTH
            )
            if status == 200:
                self.acknowledged[address] = (imap, pop)
            time.sleep(0.01)


def test_sixty_seconds_of_mixed_load(loaded_server: GunicornServer) -> None:
    stop = threading.Event()
    toggler = Toggler(loaded_server, stop)
    run_load(loaded_server.port, mixed_request, seconds=5, threads=2)  # warm-up: imports, caches, connections
    pss_before = loaded_server.worker_pss_kib()
    toggler.start()
    try:
        result = run_load(loaded_server.port, mixed_request, seconds=60, threads=4, check=check_answer)
    finally:
        stop.set()
        toggler.join()
    pss_after = loaded_server.worker_pss_kib()

    assert result.total > 1000, "the load actually ran"
    assert not result.failures, result.failures[:5]
    assert result.connection_errors == 0
    assert all(status < 500 for status in result.statuses), result.statuses
    # No lost toggle: every account ends as its last acknowledged write, in the store and in the document.
    assert len(toggler.acknowledged) == len(TOGGLED)
    for address, (imap, pop) in toggler.acknowledged.items():
        status, _, body = http("GET", f"{loaded_server.url}/admin/v1/accounts/{address}", headers=AUTH)
        assert (json.loads(body)["imap"], json.loads(body)["pop"]) == (imap, pop)
        request = thunderbird(address)
        status, _, body = http("GET", f"{loaded_server.url}{request[1]}")
        assert shown_protocols(request, status, body) == expected(imap, pop)
    # Memory per worker does not grow more than 10 % (same workers before and after).
    assert set(pss_before) == set(pss_after), "no worker was replaced"
    for pid, before in pss_before.items():
        assert pss_after[pid] <= before * 1.10, f"worker {pid}: PSS {before} KiB -> {pss_after[pid]} KiB"


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
        body = http("GET", f"{loaded_server.url}/admin/v1/accounts/{address}", headers=AUTH)[2]
        assert (json.loads(body)["imap"], json.loads(body)["pop"]) == (imap, pop)
    database = config_data["store"]["url"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
