"""Schema 2: keys written in the old form are moved to the canonical one, and rows of
one mailbox are merged with each switch off unless every row had it on (issue 17, class 2).

Each database here is what release 1 left behind: its tables, its version,
and keys in its form ``NFC(local).lower()``, written with literal SQL.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from click.testing import CliRunner
from lxml import etree

from autoconfig.address import parse_address
from autoconfig.cli import main
from autoconfig.store import Store, StoreSettings, Switches, open_store
from autoconfig.store.rekey import MIGRATION_ACTOR
from tests.support.config import ADMIN_TOKEN
from tests.support.fixture_types import MakeServer
from tests.support.gunicorn import GunicornServer
from tests.support.rawhttp import request

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 9, 18, 30, tzinfo=UTC)

# Old keys: (address, imap, imap_at, imap_by, pop, pop_at, pop_by).
V1_ROWS = [
    # "Ά\u0345" typed by the webmail, kept as its old key ά + U+0345: both on.
    ("\u03ac\u0345@example.net", True, T1, "api:webmail/a", True, T1, "api:webmail/a"),
    # The same mailbox typed "ᾴ": its user turned IMAP off later.
    ("\u1fb4@example.net", False, T2, "api:webmail/b", True, T0, "import:old.csv"),
    # "Ή\u0345" and "ῄ": one mailbox, IMAP on in both rows, POP never set.
    ("\u03ae\u0345@example.net", True, T0, "cli:root", False, None, None),
    ("\u1fc4@example.net", True, T2, "api:webmail", False, None, None),
    # "İ\u0327": its old key had the marks out of canonical order; alone, it only moves.
    ("i\u0307\u0327@example.net", True, T1, "cli:root", False, None, None),
    # Keys the new form leaves as they are.
    ("alice@example.net", True, T1, "api:webmail", False, None, None),
    ("j\u00f6rg@example.org", False, None, None, True, T0, "import:old.csv"),
]
# What each spelling must find after the migration: (typed, key, switches).
AFTER = [
    ("\u0386\u0345@example.net", "\u1fb4@example.net", Switches(imap=False, pop=True)),
    ("\u1fb4@example.net", "\u1fb4@example.net", Switches(imap=False, pop=True)),
    ("\u1fbc\u0301@EXAMPLE.net", "\u1fb4@example.net", Switches(imap=False, pop=True)),  # ᾼ + acute
    ("\u0389\u0345@example.net", "\u1fc4@example.net", Switches(imap=True, pop=False)),
    ("\u1fc4@example.net", "\u1fc4@example.net", Switches(imap=True, pop=False)),
    ("\u0130\u0327@example.net", "i\u0327\u0307@example.net", Switches(imap=True, pop=False)),
    ("Alice@example.net", "alice@example.net", Switches(imap=True, pop=False)),
    ("J\u00d6RG@example.org", "j\u00f6rg@example.org", Switches(imap=False, pop=True)),
]
KEYS_AFTER = sorted({"\u1fb4@example.net", "\u1fc4@example.net", "i\u0327\u0307@example.net"} | {
    "alice@example.net", "j\u00f6rg@example.org"
})  # fmt: skip

SQLITE_V1 = [
    """CREATE TABLE accounts (
        address TEXT PRIMARY KEY, domain TEXT NOT NULL,
        imap INTEGER NOT NULL DEFAULT 0 CHECK (imap IN (0, 1)), imap_at TEXT, imap_by TEXT,
        pop INTEGER NOT NULL DEFAULT 0 CHECK (pop IN (0, 1)), pop_at TEXT, pop_by TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX accounts_by_domain ON accounts (domain, address)",
    "PRAGMA user_version = 1",
]
POSTGRES_V1 = """
CREATE TABLE autoconfig_schema (
    version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO autoconfig_schema (version, description) VALUES (1, 'accounts with imap/pop switches and who changed each');
CREATE TABLE accounts (
    address text COLLATE "C" PRIMARY KEY, domain text COLLATE "C" NOT NULL,
    imap boolean NOT NULL DEFAULT false, imap_at timestamptz, imap_by text,
    pop boolean NOT NULL DEFAULT false, pop_at timestamptz, pop_by text);
CREATE INDEX accounts_by_domain ON accounts (domain, address);
"""


def sqlite_v1(tmp_path: Path) -> str:
    path = tmp_path / "accounts.sqlite3"
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in SQLITE_V1:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (a, a.rpartition("@")[2], int(i), ia and ia.isoformat(), ib, int(p), pa and pa.isoformat(), pb)
                for a, i, ia, ib, p, pa, pb in V1_ROWS
            ],
        )
    conn.close()
    return f"sqlite:///{path}"


def postgres_v1(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        conn.execute(POSTGRES_V1.encode())
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO accounts VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [(a, a.rpartition("@")[2], i, ia, ib, p, pa, pb) for a, i, ia, ib, p, pa, pb in V1_ROWS],
            )
    return dsn


@pytest.fixture(params=["sqlite", "postgresql"])
def v1_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_v1(tmp_path)
    return postgres_v1(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def migrated(v1_url: str, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Store, str]]:
    with caplog.at_level(logging.WARNING, logger="autoconfig"):
        store = open_store(StoreSettings(v1_url))
    try:
        yield store, caplog.text
    finally:
        store.close()


def test_every_spelling_finds_the_one_row_of_its_mailbox(migrated: tuple[Store, str]) -> None:
    store, _log = migrated
    assert [account.address for account in store.accounts()] == KEYS_AFTER
    for typed, key, switches in AFTER:
        assert parse_address(typed).key == key
        assert store.switches(key) == switches, typed


def test_a_switch_is_on_after_a_merge_only_if_every_row_had_it_on(migrated: tuple[Store, str]) -> None:
    store, _log = migrated
    greek = store.get("\u1fb4@example.net")
    assert greek.switches == Switches(imap=False, pop=True)
    assert greek.imap_changed is not None and greek.imap_changed.by == MIGRATION_ACTOR  # turned off by the merge
    assert greek.pop_changed is not None and (greek.pop_changed.at, greek.pop_changed.by) == (T1, "api:webmail/a")
    both_on = store.get("\u1fc4@example.net")
    assert both_on.switches == Switches(imap=True, pop=False)
    assert both_on.imap_changed is not None
    assert (both_on.imap_changed.at, both_on.imap_changed.by) == (T2, "api:webmail")
    assert both_on.pop_changed is None
    moved = store.get("i\u0327\u0307@example.net")  # moved alone: everything kept
    assert moved.imap_changed is not None and (moved.imap_changed.at, moved.imap_changed.by) == (T1, "cli:root")


def test_every_merge_is_reported_and_logged(migrated: tuple[Store, str]) -> None:
    store, log = migrated
    lines = [merge.describe() for merge in store.migration_merges]
    assert lines == [
        "merged 2 rows of one mailbox ('\\u03ac\\u0345@example.net', '\\u1fb4@example.net') into "
        "'\\u1fb4@example.net': imap off, pop on; imap turned off (on for only some of the rows)",
        "merged 2 rows of one mailbox ('\\u03ae\\u0345@example.net', '\\u1fc4@example.net') into "
        "'\\u1fc4@example.net': imap on, pop off",
    ]
    for line in lines:
        assert line in log
    assert "keys moved: 1, mailboxes merged: 2" in log


def test_the_migration_runs_once(v1_url: str, caplog: pytest.LogCaptureFixture) -> None:
    open_store(StoreSettings(v1_url)).close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autoconfig"):
        again = open_store(StoreSettings(v1_url))
    try:
        assert again.migration_merges == ()
        assert "merged" not in caplog.text
        assert [account.address for account in again.accounts()] == KEYS_AFTER
    finally:
        again.close()


def _row_count(url: str) -> int:
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            count: int = conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
        return count
    with psycopg.connect(url) as pg:
        row = pg.execute("SELECT count(*) FROM accounts").fetchone()
    assert row is not None
    return int(row[0])


def test_the_command_that_migrates_prints_every_merge(
    v1_url: str, config_path: Path, tmp_path: Path, config_data: dict[str, Any]
) -> None:
    result = CliRunner().invoke(
        main, ["--config", str(config_path), "accounts", "list"], env={"AUTOCONFIG_DATABASE_URL": v1_url}
    )
    assert result.exit_code == 0, result.output
    merges = [line for line in result.stderr.splitlines() if "merged 2 rows of one mailbox" in line]
    assert len(merges) == 2
    assert "imap turned off" in merges[0]
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == KEYS_AFTER
    assert _row_count(v1_url) == len(KEYS_AFTER)


def test_an_export_imported_elsewhere_keeps_every_key(cli: Callable[..., Any], tmp_path: Path) -> None:
    """The issue's other symptom: an export and an import changed keys.  Now a key is its own key."""
    source = open_store(StoreSettings(sqlite_v1(_mkdir(tmp_path / "old"))))
    exported = "address,imap,pop\n" + "".join(
        f"{a.address},{'on' if a.switches.imap else 'off'},{'on' if a.switches.pop else 'off'}\n"
        for a in source.accounts()
    )
    source.close()
    csv_file = tmp_path / "switches.csv"
    csv_file.write_text(exported, encoding="utf-8")
    assert cli("accounts", "import", str(csv_file)).exit_code == 0
    assert cli("accounts", "export").output == exported


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


# -- through the real server -------------------------------------------------------


def incoming(server: GunicornServer, typed: str) -> list[str]:
    answer = request(server.port, "GET", f"/mail/config-v1.1.xml?emailaddress={quote(typed)}")
    if answer.status == 404:
        return []
    assert answer.status == 200, answer.body
    root = etree.fromstring(answer.body, etree.XMLParser(resolve_entities=False, no_network=True))
    return [server_.get("type", "") for server_ in root.iterfind("emailProvider/incomingServer")]


def test_gunicorn_workers_migrate_once_and_answer_every_spelling_alike(
    config_data: dict[str, Any], tmp_path: Path, make_server: MakeServer
) -> None:
    config_data["store"]["url"] = sqlite_v1(_mkdir(tmp_path / "db"))
    config_data["limits"] = {"client_rate": 0, "admin_rate": 0}
    server = make_server(config_data)
    # Turned off under one spelling, so off under every spelling.
    for typed in ("\u0386\u0345@example.net", "\u1fb4@example.net", "\u1fbc\u0301@example.net"):
        assert incoming(server, typed) == ["pop3"], typed
    # A switch flipped through one spelling is what the others see at once.
    typed = quote("\u0386\u0345@example.net")
    answer = request(
        server.port,
        "PATCH",
        f"/admin/v1/accounts/{typed}",
        b'{"imap": true}',
        {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    assert answer.status == 200, answer.body
    assert incoming(server, "\u1fb4@example.net") == ["imap", "pop3"]
    log = server.log_text()
    assert log.count("merged 2 rows of one mailbox") == 2, log  # one migration, two merges, however many workers
    assert "imap turned off" in log
