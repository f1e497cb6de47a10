"""Several responder nodes on one PostgreSQL: two real gunicorn servers.

The stated bound (docs/several-nodes.md, "Consistency bound") is zero: nodes keep
no cache, so a write acknowledged by one node is what the very next request
to any node sees.  These tests check exactly that, with no waiting.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.support.admin import LiveAdmin
from tests.support.config import BASE_CONFIG
from tests.support.gunicorn import GunicornServer, http
from tests.support.postgres import PostgresCluster

# Generous: recovery needs each worker's pool to reconnect (well under a second here), not a restart.
RECOVERY_BOUND = 15.0


class Nodes:
    def __init__(self, a: GunicornServer, b: GunicornServer) -> None:
        self.a, self.b = a, b

    def __iter__(self) -> Iterator[GunicornServer]:
        return iter((self.a, self.b))


def start_nodes(workdir: Path, dsn: str, timeout: int = 2) -> tuple[GunicornServer, GunicornServer]:
    """Two nodes with one config file; the database comes from the environment, as in production."""
    config = copy.deepcopy(BASE_CONFIG)
    config["store"] = {"url": "sqlite:///not-used-the-environment-wins", "timeout": timeout}
    config["limits"] = {"client_rate": 0, "admin_rate": 0}  # every test client shares 127.0.0.1
    path = workdir / "autoconfig.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    env = {"AUTOCONFIG_DATABASE_URL": dsn}
    a = GunicornServer(path, workdir / "node-a.log", env=env).start()
    try:
        b = GunicornServer(path, workdir / "node-b.log", env=env).start()
    except BaseException:
        a.stop()
        raise
    return a, b


def switches_of(account: dict[str, Any]) -> tuple[bool, bool]:
    return account["imap"], account["pop"]


@pytest.fixture(scope="module")
def nodes(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    a, b = start_nodes(tmp_path_factory.mktemp("nodes"), postgres.create_database("nodes"))
    try:
        yield Nodes(a, b)
    finally:
        a.stop()
        b.stop()


def offered(node: GunicornServer, address: str) -> tuple[bool, bool]:
    """What a client of ``node`` is shown: (IMAP offered, POP offered)."""
    status, _, body = http("GET", f"{node.url}/mail/config-v1.1.xml?emailaddress={address}")
    if status == 404:
        return False, False
    assert status == 200, body
    return b'type="imap"' in body, b'type="pop3"' in body


def test_a_switch_flipped_on_one_node_is_what_the_next_request_to_the_other_sees(nodes: Nodes) -> None:
    address = "flip@example.net"
    for writer, reader, imap, pop in [
        (nodes.a, nodes.b, True, False),
        (nodes.b, nodes.a, True, True),
        (nodes.a, nodes.b, False, True),
        (nodes.b, nodes.a, False, False),
    ]:
        LiveAdmin(writer).set(address, imap=imap, pop=pop)
        # No sleep and no retry: the bound is zero.
        assert offered(reader, address) == (imap, pop)
        assert offered(writer, address) == (imap, pop)


def test_concurrent_writers_through_both_nodes_end_with_each_last_acknowledged_write(nodes: Nodes) -> None:
    """Each account has one writer at a time (so "last" is well defined); writes go through either node."""
    threads, accounts_per_thread, seconds = 8, 5, 2.0
    last: dict[str, tuple[bool, bool]] = {}
    lock = threading.Lock()
    failures: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def writer(number: int) -> None:
        rng = random.Random(number)
        mine = [f"writer{number}-{i}@example.net" for i in range(accounts_per_thread)]
        try:
            while time.monotonic() < deadline:
                address = rng.choice(mine)
                imap, pop = rng.random() < 0.5, rng.random() < 0.5
                LiveAdmin(rng.choice((nodes.a, nodes.b))).set(address, imap=imap, pop=pop)
                with lock:
                    last[address] = (imap, pop)  # acknowledged: the node answered 200
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures, failures
    assert len(last) == threads * accounts_per_thread
    for address, expected in last.items():
        for node in nodes:
            assert switches_of(LiveAdmin(node).get(address)) == expected, address
            assert offered(node, address) == expected, address


def test_concurrent_writers_on_the_same_account_lose_no_update(nodes: Nodes) -> None:
    """Four writers flip one account at once, two per switch, each through its own node.

    A PATCH changes only the switches it names, so each switch must end as
    the last acknowledged write of one of its own writers (whichever
    committed last), and a writer of the other switch never undoes it: a
    read-modify-write of the whole row would.
    """
    address = "shared@example.net"
    seconds = 2.0
    last: dict[tuple[str, int], bool] = {}
    failures: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def writer(switch: str, number: int) -> None:
        rng = random.Random(f"{switch}{number}")
        node = (nodes.a, nodes.b)[number]
        try:
            while time.monotonic() < deadline:
                value = rng.random() < 0.5
                LiveAdmin(node).set(address, **{switch: value})
                last[switch, number] = value  # acknowledged: the node answered 200
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=writer, args=(s, n)) for s in ("imap", "pop") for n in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures, failures
    assert len(last) == 4
    imap, pop = switches_of(LiveAdmin(nodes.a).get(address))
    assert imap in {last["imap", 0], last["imap", 1]}
    assert pop in {last["pop", 0], last["pop", 1]}
    for node in nodes:
        assert switches_of(LiveAdmin(node).get(address)) == (imap, pop)
        assert offered(node, address) == (imap, pop)


@pytest.fixture
def outage_cluster(tmp_path: Path) -> Iterator[PostgresCluster]:
    """A cluster of this test's own, so stopping it disturbs no other test."""
    with PostgresCluster(tmp_path / "pg") as cluster:
        yield cluster


def test_a_database_outage_is_503_and_down_then_service_resumes_without_a_restart(
    outage_cluster: PostgresCluster, tmp_path: Path
) -> None:
    # The shortest store timeout: each worker's first request of the outage waits that long.
    a, b = start_nodes(tmp_path, outage_cluster.create_database("outage"), timeout=1)
    try:
        LiveAdmin(a).set("alice@example.net", imap=True)
        pids = (a.pid, b.pid)

        outage_cluster.stop_server()
        try:
            for node in (a, b):
                status, headers, body = http("GET", f"{node.url}/mail/config-v1.1.xml?emailaddress=alice@example.net")
                assert status == 503, body
                assert headers["Retry-After"].isdigit()
                assert b"imap" not in body  # never a guess from what the node saw before
                status, headers, body = http("GET", f"{node.url}/healthz")
                assert status == 503
                assert json.loads(body)["checks"] == {"store": "down"}
                status, headers, body = LiveAdmin(node).call("PATCH", "alice@example.net", {"pop": True})
                assert status == 503 and headers["Retry-After"].isdigit()
        finally:
            outage_cluster.start_server()

        for node in (a, b):
            # Every worker of the node must be back: five good answers in a row.
            deadline, in_a_row = time.monotonic() + RECOVERY_BOUND, 0
            while in_a_row < 5:
                assert time.monotonic() < deadline, f"{node.url} did not recover:\n{node.log_text()[-3000:]}"
                healthy = http("GET", f"{node.url}/healthz")[0] == 200
                status, _, body = http("GET", f"{node.url}/mail/config-v1.1.xml?emailaddress=alice@example.net")
                assert status in (200, 503), body
                in_a_row = in_a_row + 1 if healthy and status == 200 else 0
                if status == 200:
                    assert b'type="imap"' in body and b'type="pop3"' not in body
                else:
                    time.sleep(0.1)
        assert (a.pid, b.pid) == pids  # the same processes: nobody restarted them
    finally:
        a.stop()
        b.stop()
