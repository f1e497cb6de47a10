"""Break pass 19 on the libpq lookup path (pglookup.py): what the text round trip and the
sql source's row limit got wrong, each against a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoconfig.store import StoreUnavailable, Switches
from autoconfig.store.postgres import PostgresStore
from autoconfig.store.sql import MAX_ROWS, SQLSource
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster
from tests.test_mysql_source import mysql_database, pg_database
from tests.test_postgres_store import FAIL_FAST, raised_within, wait_until_reads

QUERY = "SELECT imap, pop FROM mailbox WHERE username = %(address)s"
JOERG = "jörg@example.net"


def latin1_database(postgres: PostgresCluster, name: str) -> str:
    """A database in LATIN1, as older mail systems' databases still are."""
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    return postgres.dsn(name)


def test_the_sql_source_finds_a_unicode_mailbox_in_a_latin1_mail_database(postgres: PostgresCluster) -> None:
    # libpq's client_encoding follows the database's unless told otherwise: the UTF-8 bytes
    # sent through pglookup were compared as LATIN1 text and matched no row (psycopg's own
    # path encodes in the connection's encoding and finds it).
    dsn = latin1_database(postgres, "break19_latin1_mail")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE mailbox (username text PRIMARY KEY, imap int2, pop int2)")
        conn.execute("INSERT INTO mailbox VALUES (%s, 1, 0)", (JOERG,))
    source = SQLSource(dsn, QUERY, timeout=2)
    try:
        assert source.switches(JOERG) == Switches(imap=True, pop=False)
    finally:
        source.close()


def test_the_store_reads_back_in_the_admin_api_what_the_cli_wrote_in_a_latin1_database(
    postgres: PostgresCluster,
) -> None:
    store = PostgresStore(latin1_database(postgres, "break19_latin1_store"), timeout=2)
    try:
        store.import_switches([(JOERG, Switches(imap=True))], "Zoë")  # psycopg's path
        account = store.get(JOERG)  # libpq's path
        assert account.switches == Switches(imap=True)
        assert account.imap_changed is not None and account.imap_changed.by == "Zoë"
        store.update("bob@example.net", {"pop": True}, "Zoë")  # libpq's path
        exported = {a.address: a for a in store.accounts()}  # psycopg's path
        bob = exported["bob@example.net"].pop_changed
        assert bob is not None and bob.by == "Zoë"
    finally:
        store.close()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_more_rows_than_the_sql_source_reads_is_no_partial_answer(
    dialect: str, postgres: PostgresCluster, mariadb: MariaDBServer
) -> None:
    # "a protocol is offered only if every row enables it": a row past the limit that turns
    # IMAP off must not be ignored.  Like the ldap source's sizelimit, a 503 and a log line.
    insert = "INSERT INTO mailbox VALUES (%s, %s, %s)"
    rows: list[tuple[str, list[Any]]] = [(insert, [JOERG, 1, 1])] * MAX_ROWS + [(insert, [JOERG, 0, 0])]
    tables = ["CREATE TABLE mailbox (username varchar(255), imap int2, pop int2)"]
    make = pg_database if dialect == "postgresql" else mysql_database
    url = make(postgres if dialect == "postgresql" else mariadb, tables, iter(rows))  # type: ignore[arg-type]
    source = SQLSource(url, QUERY, timeout=2)
    try:
        with pytest.raises(StoreUnavailable, match=f"more than {MAX_ROWS} rows"):
            source.switches(JOERG)
    finally:
        source.close()


def test_a_lost_connection_while_the_server_is_frozen_costs_a_503_not_a_hung_request(
    own_postgres: PostgresCluster,
) -> None:
    # One pooled connection lost (its backend terminated: a restart, idle_session_timeout, a
    # failover) and the server then not answering: the lost connection made the request run
    # the pool's check() of every idle connection, a query with no deadline, on the request's
    # own thread, which waited for as long as the server stayed frozen.
    dsn = own_postgres.create_database("lost_then_frozen")
    store = PostgresStore(dsn, timeout=1, pool_size=4)
    try:
        everyone = threading.Barrier(4)

        def hold(conn: Any) -> None:
            everyone.wait()  # four at once: the pool opens all four connections
            time.sleep(0.2)

        threads = [threading.Thread(target=store._db.run, args=(hold,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() LIMIT 1"
            )
        time.sleep(0.2)
        own_postgres.pause()
        try:
            for _ in range(4):  # each pooled connection in turn, the lost one among them
                raised = raised_within(lambda: store.switches("alice@example.net"), FAIL_FAST)
                assert isinstance(raised, StoreUnavailable), raised
        finally:
            own_postgres.resume()
        wait_until_reads(store, Switches())
    finally:
        store.close()
