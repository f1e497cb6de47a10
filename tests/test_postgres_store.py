"""What only the PostgreSQL store has to prove: versioned migrations, a fast
503 when the server is gone, recovery without a restart, one pool per process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoconfig.store import Store, StoreError, StoreSettings, StoreUnavailable, Switches, open_store
from autoconfig.store.postgres import SCHEMA_VERSION, PostgresStore
from tests.support.ports import free_port
from tests.support.postgres import PostgresCluster, latin1_database

# Generous: the pool gives up after 2 s; the point is "seconds, not 30 s or forever".
FAIL_FAST = 10.0


def test_a_new_database_gets_the_schema_and_its_version(pg_dsn: str) -> None:
    store = open_store(StoreSettings(pg_dsn))
    store.close()
    with psycopg.connect(pg_dsn) as conn:
        versions = conn.execute("SELECT version FROM autoconfig_schema ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_reopening_migrates_nothing_and_keeps_every_row(pg_dsn: str) -> None:
    first = open_store(StoreSettings(pg_dsn))
    first.update("alice@example.net", {"imap": True}, "t")
    first.close()
    again = open_store(StoreSettings(pg_dsn))
    assert again.switches("alice@example.net") == Switches(imap=True)
    again.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM autoconfig_schema").fetchone() == (SCHEMA_VERSION,)


def test_nodes_starting_together_migrate_once(pg_dsn: str) -> None:
    stores: list[PostgresStore] = []
    threads = [threading.Thread(target=lambda: stores.append(PostgresStore(pg_dsn))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stores) == 4
    for store in stores:
        store.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM autoconfig_schema").fetchone() == (SCHEMA_VERSION,)


def test_a_database_from_a_newer_release_is_refused(pg_dsn: str) -> None:
    open_store(StoreSettings(pg_dsn)).close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO autoconfig_schema (version, description) VALUES (99, 'from the future')")
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        open_store(StoreSettings(pg_dsn))


def assert_each_unavailable_quickly(*calls: Callable[[], object]) -> None:
    """Each call raises StoreUnavailable, and within FAIL_FAST seconds."""
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - started < FAIL_FAST


def test_an_unreachable_server_is_unavailable_within_seconds() -> None:
    store = open_store(
        StoreSettings(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    )  # opening never blocks a start
    try:
        assert_each_unavailable_quickly(lambda: store.switches("alice@example.net"), store.ping)
    finally:
        store.close()


def wait_until_reads(store: Store, expected: Switches, address: str = "alice@example.net") -> None:
    """Back by itself: no restart, no reopening the store."""
    deadline = time.monotonic() + FAIL_FAST
    while True:
        try:
            assert store.switches(address) == expected
            return
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store did not recover"
            time.sleep(0.05)


def test_the_store_resumes_by_itself_after_an_outage(own_postgres: PostgresCluster, tmp_path: Path) -> None:
    dsn = own_postgres.create_database("outage")
    store = open_store(StoreSettings(dsn, timeout=1))
    try:
        store.update("alice@example.net", {"imap": True}, "t")
        own_postgres.stop_server()
        try:
            assert_each_unavailable_quickly(lambda: store.switches("alice@example.net"), store.ping, store.ping)
        finally:
            own_postgres.start_server()
        wait_until_reads(store, Switches(imap=True))
        store.ping()
    finally:
        store.close()


def test_a_server_that_stops_answering_costs_the_timeout_not_the_worker(
    own_postgres: PostgresCluster, tmp_path: Path
) -> None:
    """A frozen server accepts the query and never answers: each lookup gives up after
    ``[store] timeout``, and the store answers again once the server does."""
    dsn = own_postgres.create_database("frozen")
    store = open_store(StoreSettings(dsn, timeout=1))
    try:
        store.update("alice@example.net", {"imap": True}, "t")
        assert store.switches("alice@example.net") == Switches(imap=True)
        own_postgres.pause()
        try:
            # The first waits on its connection; the next on the pool, which cannot reconnect either.
            for says in ("no answer within 1 s", "PostgreSQL"):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=says):
                    store.switches("alice@example.net")
                assert time.monotonic() - started < 1 + 0.5
        finally:
            own_postgres.resume()
        wait_until_reads(store, Switches(imap=True))
    finally:
        store.close()


def test_a_nul_byte_never_reaches_libpq_where_it_would_cut_the_key_short(pg_dsn: str) -> None:
    """libpq ends a text parameter at its first NUL, so ``alice@example.net\\0x`` would read
    alice's row.  Addresses with control characters are refused long before (400); the
    lookup refuses one anyway rather than answer for another key."""
    store = open_store(StoreSettings(pg_dsn))
    try:
        store.update("alice@example.net", {"imap": True}, "t")
        with pytest.raises(ValueError, match="NUL"):
            store.switches("alice@example.net\0x")
        assert store.switches("alice@example.net") == Switches(imap=True)
    finally:
        store.close()


def test_a_rollback_after_psycopg_prepared_its_own_statements_leaves_lookups_working(pg_dsn: str) -> None:
    """psycopg prepares a query it has run five times on a connection, and after any
    ROLLBACK on that connection sends DEALLOCATE ALL, which also drops the lookup's
    statement (found by the break pass): the lookup prepares it again instead of failing."""
    store = open_store(StoreSettings(pg_dsn, pool_size=1))
    try:
        store.update("alice@example.net", {"imap": True}, "t")
        assert store.switches("alice@example.net") == Switches(imap=True)
        for _ in range(6):
            store.get("alice@example.net")  # prepared by psycopg from the fifth run on

        def rows() -> Iterator[tuple[str, Switches]]:
            yield ("bob@example.net", Switches(imap=True))
            raise RuntimeError("a bad row: the import rolls back")

        with pytest.raises(RuntimeError):
            store.import_switches(rows(), "t")
        assert store.switches("alice@example.net") == Switches(imap=True)
    finally:
        store.close()


def raised_within(call: Callable[[], object], seconds: float) -> BaseException | None:
    """What ``call`` raised (None if it returned), run in a thread the test gives up on
    after ``seconds``: a call still waiting then fails the test instead of hanging it."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the call still waited on the frozen server after {seconds:g} s"
    return outcome[0]


STORE_OPERATIONS = {
    "ping (/healthz)": lambda store: store.ping(),
    "get (admin API GET)": lambda store: store.get("alice@example.net"),
    "update (admin API PATCH)": lambda store: store.update("alice@example.net", {"pop": True}, "t"),
    "reset (admin API DELETE)": lambda store: store.reset("bob@example.net"),
}


@pytest.mark.parametrize("operation", STORE_OPERATIONS.values(), ids=STORE_OPERATIONS.keys())
def test_every_request_on_a_server_that_stops_answering_costs_the_timeout(
    own_postgres: PostgresCluster, operation: Callable[[Store], object]
) -> None:
    """Not only the lookup: /healthz and the admin API ask the store too.  Without the
    deadline a frozen server held the worker until gunicorn killed it (buffering) or a
    thread for the whole freeze (gthread): found by the break pass for the ping."""
    store = open_store(StoreSettings(own_postgres.create_database("frozen_ops"), timeout=1))
    try:
        for address in ("alice@example.net", "bob@example.net", "carol@example.net"):
            store.update(address, {"imap": True}, "t")
        own_postgres.pause()
        try:
            raised = raised_within(lambda: operation(store), 1 + 0.5)
        finally:
            own_postgres.resume()
        assert isinstance(raised, StoreUnavailable), raised
        # A write the frozen server had already received is applied when it wakes: the 503
        # told the caller to try again, and a repeated PATCH or DELETE changes nothing more.
        wait_until_reads(store, Switches(imap=True), "carol@example.net")
    finally:
        store.close()
        with psycopg.connect(own_postgres.dsn("postgres"), autocommit=True) as conn:
            conn.execute("DROP DATABASE frozen_ops WITH (FORCE)")


TABLE_OPERATIONS = {
    "switches (every client request)": lambda store: store.switches("alice@example.net"),
    **{name: operation for name, operation in STORE_OPERATIONS.items() if not name.startswith("ping")},
}


@pytest.mark.parametrize("operation", TABLE_OPERATIONS.values(), ids=TABLE_OPERATIONS.keys())
def test_a_table_gone_under_a_running_store_is_503_not_a_crash(
    pg_dsn: str, operation: Callable[[Store], object]
) -> None:
    """Someone renames or drops the accounts table: every request that needs it gets
    StoreUnavailable (503 with Retry-After), never a 500 and never a guess; back when it is."""
    store = open_store(StoreSettings(pg_dsn))
    try:
        store.update("alice@example.net", {"imap": True}, "t")
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE accounts RENAME TO accounts_away")
        try:
            with pytest.raises(StoreUnavailable, match="accounts"):
                operation(store)
        finally:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("ALTER TABLE accounts_away RENAME TO accounts")
        assert store.switches("alice@example.net") == Switches(imap=True)
    finally:
        store.close()


# -- the libpq lookup path (issue 19's break pass) ------------------------------------------------

JOERG = "jörg@example.net"


def test_the_store_reads_back_in_the_admin_api_what_the_cli_wrote_in_a_latin1_database(
    postgres: PostgresCluster,
) -> None:
    store = PostgresStore(latin1_database(postgres, "latin1_store"), timeout=2)
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
