"""The read-only ``sql`` source: the service reads the switches the mail
servers enforce, straight from the ISP's mail database (here a ``mailbox``
table shaped like iRedMail's, smallint flags included)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from autoconfig import create_app
from autoconfig.cli import main
from autoconfig.config import ConfigError, load
from autoconfig.store import StoreError, StoreUnavailable, Switches
from autoconfig.store.sql import MAX_ROWS, SQLSource, numbered
from tests.support.config import ADMIN_AUTH
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster, latin1_database
from tests.support.sources import DOC, incoming, mysql_database, pg_database

MAILBOX = """
CREATE TABLE mailbox (
    username    varchar(255) NOT NULL PRIMARY KEY,
    password    varchar(255) NOT NULL DEFAULT '',
    name        varchar(255) NOT NULL DEFAULT '',
    local_part  varchar(255) NOT NULL,
    domain      varchar(255) NOT NULL,
    active      int2 NOT NULL DEFAULT 1,
    enablesmtp  int2 NOT NULL DEFAULT 1,
    enableimap  int2 NOT NULL DEFAULT 1,
    enablepop3  int2 NOT NULL DEFAULT 1
)
"""
MAILBOXES = [
    # username, active, enableimap, enablepop3
    ("alice@example.net", 1, 1, 0),
    ("bob@example.net", 1, 0, 1),
    ("carol@example.net", 0, 1, 1),  # a disabled mailbox: nothing, whatever its flags say
    ("dave@example.org", 1, 0, 0),
]
# What docs/sources.md recommends for iRedMail / Postfixadmin-style tables.
QUERY = "SELECT enableimap = 1 AND active = 1, enablepop3 = 1 AND active = 1 FROM mailbox WHERE username = %(address)s"


@pytest.fixture
def mail_db(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(MAILBOX)
        for username, active, imap, pop in MAILBOXES:
            local, _, domain = username.partition("@")
            conn.execute(
                "INSERT INTO mailbox (username, local_part, domain, active, enableimap, enablepop3)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (username, local, domain, active, imap, pop),
            )
    return pg_dsn


@pytest.fixture
def sql_config(config_data: dict[str, Any], mail_db: str) -> dict[str, Any]:
    config_data["store"] = {"url": mail_db, "sql": {"query": QUERY}}
    return config_data


@pytest.fixture
def sql_app(sql_config: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]) -> Iterator[Flask]:
    app = create_app(load(write_config(sql_config), env={}))
    yield app
    app.extensions["autoconfig"].store.close()


@pytest.fixture
def sql_client(sql_app: Flask) -> FlaskClient:
    return sql_app.test_client()


@pytest.mark.parametrize(
    ("address", "offered"),
    [
        ("alice@example.net", ["imap"]),
        ("Alice@EXAMPLE.net", ["imap"]),
        ("bob@example.net", ["pop3"]),
        ("carol@example.net", None),
        ("dave@example.org", None),
        ("nobody@example.net", None),
    ],
)
def test_clients_get_what_the_mail_database_enables(sql_client: FlaskClient, address: str, offered: object) -> None:
    assert incoming(sql_client, address) == offered


def test_an_unknown_address_is_answered_like_a_mailbox_with_nothing_enabled(sql_client: FlaskClient) -> None:
    unknown = sql_client.get(DOC + "nobody@example.org")
    nothing = sql_client.get(DOC + "dave@example.org")
    assert (unknown.status_code, unknown.data) == (nothing.status_code, nothing.data)


def test_a_change_in_the_mail_database_shows_at_the_next_request(sql_client: FlaskClient, mail_db: str) -> None:
    assert incoming(sql_client, "alice@example.net") == ["imap"]
    with psycopg.connect(mail_db) as conn:
        conn.execute("UPDATE mailbox SET enableimap = 0, enablepop3 = 1 WHERE username = 'alice@example.net'")
    assert incoming(sql_client, "alice@example.net") == ["pop3"]


@pytest.mark.parametrize(
    ("method", "body"),
    [("PUT", {"imap": True, "pop": False}), ("PATCH", {"imap": False}), ("DELETE", None)],
)
def test_the_admin_api_says_the_source_is_read_only(
    sql_client: FlaskClient, method: str, body: dict[str, bool] | None
) -> None:
    response = sql_client.open("/admin/v1/accounts/alice@example.net", method=method, json=body, headers=ADMIN_AUTH)
    assert response.status_code == 409
    answer = json.loads(response.data)
    assert answer["error"] == "read_only"
    assert "read-only" in answer["message"] and "mail database" in answer["message"]
    assert incoming(sql_client, "alice@example.net") == ["imap"]


def test_the_admin_api_reads_the_switches(sql_client: FlaskClient) -> None:
    response = sql_client.get("/admin/v1/accounts/bob@example.net", headers=ADMIN_AUTH)
    assert response.status_code == 200
    assert json.loads(response.data) == {
        "address": "bob@example.net",
        "imap": False,
        "pop": True,
        "imap_changed": None,
        "pop_changed": None,
    }


@pytest.fixture
def sql_cli(sql_config: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]) -> Callable[..., Any]:
    path = write_config(sql_config)

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["--config", str(path), *args], env={})

    return run


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("accounts", "set", "alice@example.net", "--pop", "on"), "read-only"),
        (("accounts", "list"), "cannot list"),
        (("accounts", "export"), "cannot list"),
    ],
)
def test_the_cli_refuses_what_the_source_cannot_do(
    sql_cli: Callable[..., Any], args: tuple[str, ...], says: str
) -> None:
    result = sql_cli(*args)
    assert result.exit_code == 1
    assert says in result.output
    assert "address,imap,pop" not in result.output


def test_the_cli_shows_an_account(sql_cli: Callable[..., Any]) -> None:
    result = sql_cli("accounts", "show", "alice@example.net")
    assert result.exit_code == 0
    assert "imap: on" in result.output and "pop:  off" in result.output


def test_postfixadmin_style_local_part_and_domain_parameters(
    sql_config: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    sql_config["store"]["sql"]["query"] = (
        "SELECT enableimap, enablepop3 FROM mailbox "  # smallint 0/1 as they are
        "WHERE local_part = %(local_part)s AND domain = %(domain)s AND active = 1"
    )
    app = create_app(load(write_config(sql_config), env={}))
    try:
        assert incoming(app.test_client(), "bob@example.net") == ["pop3"]
    finally:
        app.extensions["autoconfig"].store.close()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("SELECT enableimap, enablepop3 FROM mailbox WHERE username = %(address)s; DROP TABLE mailbox", "single"),
        ("DELETE FROM mailbox WHERE username = %(address)s", "one SELECT"),
        ("SELECT enableimap, enablepop3 FROM mailbox WHERE username = %(user)s", "unknown parameter %(user)s"),
        ("SELECT enableimap, enablepop3 FROM mailbox WHERE username = 'x'", "must use the parameter"),
        ("SELECT 1, 1 FROM mailbox WHERE username LIKE '%' || %(domain)s", "literal %"),
    ],
)
def test_a_bad_query_stops_the_start_naming_the_key(
    sql_config: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], query: str, says: str
) -> None:
    sql_config["store"]["sql"]["query"] = query
    path = write_config(sql_config)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: store.sql.query: ")
    assert says in str(error.value)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("SELECT enableimap FROM mailbox WHERE username = %(address)s", "must return 2 columns"),
        ("SELECT enableimap, enablepop3 FROM mailboxes WHERE username = %(address)s", "rejects the query"),
        # Even a SELECT that writes cannot: the source's connections are read-only.
        (
            "WITH gone AS (DELETE FROM mailbox RETURNING 1) SELECT 1, 1 WHERE %(address)s <> ''",
            "read-only transaction",
        ),
    ],
)
def test_a_query_the_mail_database_rejects_stops_the_start(
    sql_config: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], mail_db: str, query: str, says: str
) -> None:
    sql_config["store"]["sql"]["query"] = query
    with pytest.raises(StoreError, match=says):
        create_app(load(write_config(sql_config), env={}))
    with psycopg.connect(mail_db) as conn:
        assert conn.execute("SELECT count(*) FROM mailbox").fetchone() == (len(MAILBOXES),)


def test_the_sql_source_needs_a_postgresql_url(
    sql_config: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], tmp_path: Path
) -> None:
    sql_config["store"]["url"] = f"sqlite:///{tmp_path}/mail.sqlite3"
    path = write_config(sql_config)
    with pytest.raises(ConfigError, match=r"store\.url: the sql source \(\[store\.sql\]\) needs a postgresql://"):
        load(path, env={})


@pytest.mark.parametrize(
    ("query", "numbered_query", "names"),
    [
        ("SELECT a, b FROM t WHERE u = %(address)s", "SELECT a, b FROM t WHERE u = $1", ("address",)),
        (
            "SELECT a, b FROM t WHERE l = %(local_part)s AND d = %(domain)s OR u = %(local_part)s || '@' || %(domain)s",
            "SELECT a, b FROM t WHERE l = $1 AND d = $2 OR u = $1 || '@' || $2",
            ("local_part", "domain"),
        ),
        (
            "SELECT a, b FROM t WHERE u LIKE '%%@' || %(domain)s",
            "SELECT a, b FROM t WHERE u LIKE '%@' || $1",
            ("domain",),
        ),
    ],
)
def test_the_query_is_sent_with_numbered_parameters(query: str, numbered_query: str, names: tuple[str, ...]) -> None:
    assert numbered(query) == (numbered_query, names)


@pytest.mark.parametrize(
    "query",
    [
        # A parameter used twice, and a literal % (doubled in the config), as PostgreSQL sees them.
        "SELECT enableimap = 1, enablepop3 = 1 FROM mailbox"
        " WHERE local_part = %(local_part)s AND domain = %(domain)s AND username = %(local_part)s || '@' || %(domain)s"
        " AND username LIKE '%%@%%'",
        # numeric and text columns: every value arrives as text and reads the same.
        "SELECT enableimap::numeric(3, 1), CASE WHEN enablepop3 = 1 THEN 'yes' ELSE 'no' END FROM mailbox"
        " WHERE username = %(address)s",
    ],
)
def test_parameters_used_twice_literal_percent_and_column_types(
    sql_config: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], query: str
) -> None:
    sql_config["store"]["sql"]["query"] = query
    app = create_app(load(write_config(sql_config), env={}))
    try:
        assert incoming(app.test_client(), "alice@example.net") == ["imap"]
        assert incoming(app.test_client(), "bob@example.net") == ["pop3"]
    finally:
        app.extensions["autoconfig"].store.close()


def test_a_mail_database_that_stops_answering_costs_a_503_within_the_timeout(
    own_postgres: PostgresCluster, config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    dsn = own_postgres.create_database("mail")
    with psycopg.connect(dsn) as conn:
        conn.execute(MAILBOX)
        conn.execute(
            "INSERT INTO mailbox (username, local_part, domain, enableimap, enablepop3)"
            " VALUES ('alice@example.net', 'alice', 'example.net', 1, 0)"
        )
    config_data["store"] = {"url": dsn, "timeout": 1, "sql": {"query": QUERY}}
    app = create_app(load(write_config(config_data), env={}))
    try:
        client = app.test_client()
        assert incoming(client, "alice@example.net") == ["imap"]
        own_postgres.pause()
        try:
            started = time.monotonic()
            response = client.get(DOC + "alice@example.net")
            assert response.status_code == 503
            assert response.headers["Retry-After"]
            assert b"imap.example.net" not in response.data
            assert time.monotonic() - started < 1 + 0.5
        finally:
            own_postgres.resume()
        deadline = time.monotonic() + 10
        while (response := client.get(DOC + "alice@example.net")).status_code == 503:
            assert time.monotonic() < deadline, "the source did not recover"
            time.sleep(0.05)
        assert incoming(client, "alice@example.net") == ["imap"]
    finally:
        app.extensions["autoconfig"].store.close()


def test_a_column_type_changed_in_the_mail_database_is_followed_at_once(pg_dsn: str) -> None:
    """PostgreSQL refuses to run a prepared statement whose result type changed ("cached
    plan must not change result type"), which was a 503 on every connection until the
    pool replaced it (an hour; found by the break pass): it is prepared afresh."""
    from autoconfig.store import Switches
    from autoconfig.store.sql import SQLSource

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE mailbox (username text PRIMARY KEY, imap int2, pop int2)")
        conn.execute("INSERT INTO mailbox VALUES ('alice@example.net', 1, 0)")
    source = SQLSource(pg_dsn, "SELECT imap, pop FROM mailbox WHERE username = %(address)s", pool_size=1)
    try:
        assert source.switches("alice@example.net") == Switches(imap=True)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE mailbox ALTER imap TYPE int4, ALTER pop TYPE int4")
        assert source.switches("alice@example.net") == Switches(imap=True)
    finally:
        source.close()


# -- the libpq lookup path (issue 19's break pass) ------------------------------------------------

JOERG = "jörg@example.net"
SIMPLE_QUERY = "SELECT imap, pop FROM mailbox WHERE username = %(address)s"


def test_the_sql_source_finds_a_unicode_mailbox_in_a_latin1_mail_database(postgres: PostgresCluster) -> None:
    # libpq's client_encoding follows the database's unless told otherwise: the UTF-8 bytes
    # sent through pglookup were compared as LATIN1 text and matched no row (psycopg's own
    # path encodes in the connection's encoding and finds it).
    dsn = latin1_database(postgres, "latin1_mail")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE mailbox (username text PRIMARY KEY, imap int2, pop int2)")
        conn.execute("INSERT INTO mailbox VALUES (%s, 1, 0)", (JOERG,))
    source = SQLSource(dsn, SIMPLE_QUERY, timeout=2)
    try:
        assert source.switches(JOERG) == Switches(imap=True, pop=False)
    finally:
        source.close()


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
    source = SQLSource(url, SIMPLE_QUERY, timeout=2)
    try:
        with pytest.raises(StoreUnavailable, match=f"more than {MAX_ROWS} rows"):
            source.switches(JOERG)
    finally:
        source.close()
