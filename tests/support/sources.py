"""What the tests of the read-only sources (sql on MariaDB or PostgreSQL, ldap on slapd) share.

A source is judged by what a mail client is offered, so the helpers ask the
app as a client would: which incoming servers the autoconfig document lists.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from flask import Flask
from flask.testing import FlaskClient

from autoconfig import create_app
from autoconfig.config import load
from tests.support.ports import DataServer

if TYPE_CHECKING:
    from tests.support.mariadb import MariaDBServer
    from tests.support.postgres import PostgresCluster

DOC = "/mail/config-v1.1.xml?emailaddress="
_mail_databases = itertools.count(1)


def app_on_store(
    config_data: dict[str, Any], write_config: Callable[..., Path], store: dict[str, Any], env: dict[str, str]
) -> Iterator[Flask]:
    """The app on this ``[store]`` table (a generator, for ``yield from`` in a fixture or ``for app in``)."""
    config_data["store"] = store
    app = create_app(load(write_config(config_data), env=env))
    try:
        yield app
    finally:
        app.extensions["autoconfig"].store.close()


def incoming(client: FlaskClient, address: str) -> list[str] | None:
    """The incoming servers a client is offered (``imap``, ``pop3``), or None for the 404 of nothing to offer."""
    response = client.get(DOC + address)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.data
    body = response.data.decode()
    return [kind for kind in ("imap", "pop3") if f'<incomingServer type="{kind}">' in body]


def wait_until_recovered(client: FlaskClient, address: str, expected: list[str], limit: float = 10.0) -> None:
    """Ask until the 503s stop (no restart, no reload); then the answer must be ``expected``."""
    deadline = time.monotonic() + limit
    while client.get(DOC + address).status_code == 503:
        assert time.monotonic() < deadline, "the source did not recover"
        time.sleep(0.05)
    assert incoming(client, address) == expected


def assert_outages_answered_503(client: FlaskClient, server: DataServer) -> None:
    """A source's outages as a mail client must meet them, on one app (no restart, no reload).

    ``server`` holds imap@example.net (IMAP only) and both@example.net (IMAP and POP) and the
    source waits 1 s at most.  Stopped: every ask a 503 with Retry-After at once, offering no
    server.  Frozen (connections open, nothing answers): a 503 within the timeout and a second.
    After each, the right answer again.  The SQL and LDAP sources must all behave so.
    """
    assert incoming(client, "imap@example.net") == ["imap"]
    with stopped(server):
        for _ in range(3):
            started = time.monotonic()
            response = client.get(DOC + "imap@example.net")
            assert response.status_code == 503
            assert response.headers["Retry-After"]
            assert b"imap.example.net" not in response.data
            assert time.monotonic() - started < 1.5
    wait_until_recovered(client, "imap@example.net", ["imap"])

    with frozen(server):
        started = time.monotonic()
        response = client.get(DOC + "both@example.net")
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert elapsed < 1 + 1.0, f"a frozen {server.name} held the request {elapsed:.1f} s (timeout 1 s)"
    wait_until_recovered(client, "both@example.net", ["imap", "pop3"])


@contextmanager
def stopped(server: DataServer) -> Iterator[None]:
    """The server gone for the block (data and port kept), started again after it."""
    server.stop_server()
    try:
        yield
    finally:
        server.start_server()


@contextmanager
def frozen(server: DataServer) -> Iterator[None]:
    """The server frozen for the block: connections stay open and nothing answers."""
    server.pause()
    try:
        yield
    finally:
        server.resume()


def mysql_database(server: MariaDBServer, tables: list[str], rows: Iterator[tuple[str, list[Any]]]) -> str:
    """A fresh MariaDB database with these tables and rows, read by a SELECT-only user: its URL."""
    name = f"mail_{next(_mail_databases)}"
    url = server.create_database(name, "autoconfig_ro", "ro-secret")
    conn = server.root(name)
    try:
        cur = conn.cursor()
        for statement in tables:
            cur.execute(statement)
        for statement, values in rows:
            cur.execute(statement, values)
    finally:
        conn.close()
    return url


def pg_database(cluster: PostgresCluster, tables: list[str], rows: Iterator[tuple[str, list[Any]]]) -> str:
    """A fresh PostgreSQL database with these tables and rows: its DSN."""
    dsn = cluster.create_database(f"mail_{next(_mail_databases)}")
    with psycopg.connect(dsn) as conn:
        for statement in tables:
            conn.execute(statement)
        for statement, values in rows:
            conn.execute(statement, values)
    return dsn
