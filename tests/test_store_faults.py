"""Faults of the store itself, against the real gunicorn server.

A store that cannot be opened when a worker (re)starts, and a SQLite file
deleted or replaced under a running node: the node keeps running, answers
503 with Retry-After and never a guess, ``/healthz`` says what is wrong, no
write is acknowledged that would be lost, and service resumes by itself
once the store is back.  The file cases run gunicorn unprivileged
(tests/support/gunicorn.py: ``unprivileged_prefix``), because root ignores
file modes.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from autoconfig.store.sqlite import FILE_CHECK_INTERVAL
from tests.support.admin import LiveAdmin
from tests.support.config import BASE_CONFIG
from tests.support.gunicorn import GunicornServer, http
from tests.support.ports import wait_for
from tests.support.postgres import PostgresCluster

ALICE = "alice@example.net"
RECOVERY = 15.0  # seconds: generous for a loaded 2-core machine; recovery needs no restart


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def write_config(directory: Path, store: dict[str, Any]) -> Path:
    data = copy.deepcopy(BASE_CONFIG)
    data["store"] = store
    data["limits"] = {"client_rate": 0, "admin_rate": 0}
    path = directory / "autoconfig.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    path.chmod(0o644)
    return path


def thunderbird(server: GunicornServer, address: str = ALICE) -> tuple[int, dict[str, str], bytes]:
    return http("GET", f"{server.url}/mail/config-v1.1.xml?emailaddress={address}")


def healthz(server: GunicornServer) -> tuple[int, dict[str, Any]]:
    status, _, body = http("GET", f"{server.url}/healthz")
    return status, json.loads(body)


def assert_unavailable(server: GunicornServer, store_check: str) -> None:
    """Every answer is a clean 503 that says nothing about the account; /healthz names the fault."""
    for _ in range(8):  # enough to reach every worker
        status, headers, body = thunderbird(server)
        assert status == 503, body
        assert headers["Retry-After"].isdigit()
        assert b"imap" not in body and b"pop" not in body
    assert healthz(server) == (503, {"status": "down", "checks": {"store": store_check}})


def restart_a_worker(server: GunicornServer) -> int:
    """Kill one worker as a crash would; return the pid of its replacement once it answers."""
    before = set(server.worker_pids())
    os.kill(sorted(before)[0], signal.SIGKILL)
    wait_for(lambda: len(set(server.worker_pids()) - before) == 1, 15, "a replacement worker")
    (replacement,) = set(server.worker_pids()) - before
    # It has booted when it has logged its start line (and it must not have failed to).
    wait_for(lambda: f"[{replacement}] [INFO] autoconfig: serving" in server.log_text(), 15, "the new worker's boot")
    return replacement


def assert_node_kept_running(server: GunicornServer) -> None:
    assert server._proc is not None and server._proc.poll() is None, server.log_text()[-3000:]
    assert "Worker failed to boot" not in server.log_text()


def wait_until_serving(server: GunicornServer, expected: bytes) -> None:
    def serving() -> bool:
        status, _, body = thunderbird(server)
        return status == 200 and expected in body and healthz(server)[0] == 200

    wait_for(serving, RECOVERY, "the node to serve again", interval=0.2)


# -- 6: a store that cannot be opened when a worker starts ----------------------------


def test_an_unreadable_sqlite_file_at_worker_start_costs_503_not_the_node(workdir: Path) -> None:
    database = workdir / "accounts.sqlite3"
    config = write_config(workdir, {"url": f"sqlite:///{database}"})
    # One worker: after the restart below every request reaches the worker that could not open the file.
    with GunicornServer(config, workdir / "gunicorn.log", workers=1, unprivileged=True) as server:
        LiveAdmin(server).set(ALICE, imap=True)
        database.chmod(0)
        try:
            replacement = restart_a_worker(server)
            assert_node_kept_running(server)
            assert "SQLite store unavailable at start, will retry on use" in server.log_text()
            assert_unavailable(server, "down")
            status, headers, _ = LiveAdmin(server).call("PATCH", ALICE, {"pop": True})
            assert status == 503 and headers["Retry-After"].isdigit()
        finally:
            database.chmod(0o600)
        wait_until_serving(server, b'type="imap"')
        assert server.worker_pids() == [replacement]  # recovered by itself, no restart
        _, _, body = thunderbird(server)
        assert b'type="pop3"' not in body  # the refused write did not happen


def test_postgresql_down_at_worker_start_costs_503_not_the_node(tmp_path: Path) -> None:
    with PostgresCluster(tmp_path / "pg") as cluster:
        config = write_config(tmp_path, {"url": cluster.create_database("faults"), "timeout": 1})
        with GunicornServer(config, tmp_path / "gunicorn.log", workers=1) as server:
            LiveAdmin(server).set(ALICE, imap=True)
            cluster.stop_server()
            try:
                replacement = restart_a_worker(server)
                assert_node_kept_running(server)
                assert_unavailable(server, "down")
            finally:
                cluster.start_server()
            wait_until_serving(server, b'type="imap"')
            assert server.worker_pids() == [replacement]


# -- 7: the SQLite file deleted or replaced under a running node ----------------------


@pytest.fixture
def sqlite_node(workdir: Path) -> Iterator[tuple[GunicornServer, Path]]:
    database = workdir / "accounts.sqlite3"
    config = write_config(workdir, {"url": f"sqlite:///{database}"})
    with GunicornServer(config, workdir / "gunicorn.log", workers=2, unprivileged=True) as server:
        LiveAdmin(server).set(ALICE, imap=True)
        yield server, database


def replacement_file(database: Path) -> Path:
    """A copy of the database in which alice has POP instead of IMAP (a restored backup, say)."""
    copy_path = database.with_name("restored.sqlite3")
    with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(copy_path)) as target, target:
        source.backup(target)
        target.execute("UPDATE accounts SET imap = 0, pop = 1 WHERE address = ?", (ALICE,))
    return copy_path


def test_a_replaced_file_is_503_everywhere_until_the_original_is_back(sqlite_node: tuple[GunicornServer, Path]) -> None:
    server, database = sqlite_node
    restored = replacement_file(database)
    original = database.with_name("original.sqlite3")
    os.rename(database, original)
    os.rename(restored, database)
    time.sleep(2 * FILE_CHECK_INTERVAL)  # lookups check the file this often; writes and /healthz always

    assert_unavailable(server, "replaced")
    # The webmail turns IMAP off: refused, since neither file would keep it for every worker.
    status, headers, body = LiveAdmin(server).call("PATCH", ALICE, {"imap": False})
    assert status == 503 and headers["Retry-After"].isdigit(), body
    # A worker started now does not adopt the new file: the node still answers with one voice.
    restart_a_worker(server)
    assert_node_kept_running(server)
    assert_unavailable(server, "replaced")
    assert "the file was replaced under the running node" in server.log_text()

    os.replace(original, database)
    wait_until_serving(server, b'type="imap"')
    for _ in range(8):  # every worker: the original's answer, and the refused write never happened
        status, _, body = thunderbird(server)
        assert status == 200 and b'type="imap"' in body and b'type="pop3"' not in body


def test_a_deleted_file_is_503_and_no_worker_makes_an_empty_one(sqlite_node: tuple[GunicornServer, Path]) -> None:
    server, database = sqlite_node
    kept = database.with_name("kept.sqlite3")
    os.link(database, kept)  # the operator's way back; the path itself is gone
    database.unlink()
    time.sleep(2 * FILE_CHECK_INTERVAL)

    assert_unavailable(server, "replaced")
    status, _, _ = LiveAdmin(server).call("PATCH", ALICE, {"pop": True})
    assert status == 503
    restart_a_worker(server)
    assert_node_kept_running(server)
    assert_unavailable(server, "replaced")
    assert not database.exists(), "a worker created an empty database in place of the node's"
    assert "the file this node serves was deleted" in server.log_text()

    os.link(kept, database)
    wait_until_serving(server, b'type="imap"')
    _, _, body = thunderbird(server)
    assert b'type="pop3"' not in body


def test_a_restarted_node_adopts_the_file_now_at_the_path(workdir: Path) -> None:
    """Stopping and starting the node is how an operator resolves a replacement made on purpose."""
    database = workdir / "accounts.sqlite3"
    config = write_config(workdir, {"url": f"sqlite:///{database}"})
    with GunicornServer(config, workdir / "gunicorn.log", workers=2, unprivileged=True) as server:
        LiveAdmin(server).set(ALICE, imap=True)
    os.replace(replacement_file(database), database)
    with GunicornServer(config, workdir / "gunicorn.log", workers=2, unprivileged=True) as server:
        status, _, body = thunderbird(server)
        assert status == 200 and b'type="pop3"' in body and b'type="imap"' not in body
        assert healthz(server) == (200, {"status": "ok", "checks": {"store": "ok"}})
