"""The store contract, run against every backend."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from autoconfig.forking import forget_after_fork
from autoconfig.store import (
    OFF,
    ReadOnlyStore,
    Store,
    StoreError,
    StoreReplaced,
    StoreSettings,
    StoreUnavailable,
    Switches,
    open_store,
)
from autoconfig.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("pg_dsn")
        return dsn
    return f"sqlite:///{tmp_path}/accounts.sqlite3"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = open_store(StoreSettings(store_url))
    yield store
    store.close()


def test_an_address_never_seen_has_everything_off(store: Store) -> None:
    assert store.switches("nobody@example.net") == OFF
    account = store.get("nobody@example.net")
    assert account.switches == OFF
    assert account.imap_changed is None and account.pop_changed is None


def test_update_records_value_time_and_actor(store: Store) -> None:
    account = store.update("alice@example.net", {"imap": True}, "api:webmail")
    assert account.switches == Switches(imap=True, pop=False)
    assert account.imap_changed is not None and account.imap_changed.by == "api:webmail"
    assert account.pop_changed is None
    assert store.switches("alice@example.net") == Switches(imap=True, pop=False)


def test_only_a_changed_switch_gets_a_new_stamp(store: Store) -> None:
    first = store.update("alice@example.net", {"imap": True}, "first")
    second = store.update("alice@example.net", {"imap": True, "pop": True}, "second")
    assert second.imap_changed == first.imap_changed
    assert second.pop_changed is not None and second.pop_changed.by == "second"


def test_reset_forgets_the_account(store: Store) -> None:
    store.update("alice@example.net", {"imap": True, "pop": True}, "t")
    assert store.reset("alice@example.net") is True
    assert store.switches("alice@example.net") == OFF
    assert store.reset("alice@example.net") is False


@pytest.mark.parametrize("changes", [{"smtp": True}, {"imap": 1}, {"imap": "yes"}])
def test_update_rejects_unknown_switches_and_non_booleans(store: Store, changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        store.update("alice@example.net", changes, "t")  # type: ignore[arg-type]
    assert store.switches("alice@example.net") == OFF


def test_accounts_are_listed_in_order_and_by_domain(store: Store) -> None:
    for address in ("b@example.org", "c@example.net", "a@example.net"):
        store.update(address, {"pop": True}, "t")
    assert [a.address for a in store.accounts()] == ["a@example.net", "b@example.org", "c@example.net"]
    assert [a.address for a in store.accounts("example.org")] == ["b@example.org"]


def test_import_is_all_or_nothing(store: Store) -> None:
    store.update("kept@example.net", {"imap": True}, "t")

    def rows() -> Iterator[tuple[str, Switches]]:
        yield "new@example.net", Switches(imap=True)
        yield "kept@example.net", Switches(pop=True)
        raise RuntimeError("the file broke halfway")

    with pytest.raises(RuntimeError):
        store.import_switches(rows(), "import:test")
    assert store.switches("new@example.net") == OFF
    assert store.switches("kept@example.net") == Switches(imap=True)


def test_import_sets_every_row(store: Store) -> None:
    rows = [(f"user{i}@example.net", Switches(imap=i % 2 == 0, pop=i % 3 == 0)) for i in range(500)]
    store.import_switches(rows, "import:test")
    assert {a.address: a.switches for a in store.accounts()} == dict(rows)


def test_import_counts_and_rewrites_only_the_accounts_it_changes(store: Store) -> None:
    rows = [("a@example.net", Switches(imap=True)), ("b@example.net", Switches(pop=True))]
    assert store.import_switches(rows, "import:first.csv") == 2
    before = {account.address: account for account in store.accounts()}
    assert store.import_switches(rows, "import:again.csv") == 0
    assert {account.address: account for account in store.accounts()} == before  # stamps and actors kept
    changed = [("a@example.net", Switches(imap=True)), ("b@example.net", Switches(imap=True, pop=True))]
    assert store.import_switches(changed, "import:second.csv") == 1
    assert store.get("b@example.net").imap_changed.by == "import:second.csv"  # type: ignore[union-attr]
    assert store.get("a@example.net").imap_changed.by == "import:first.csv"  # type: ignore[union-attr]


def test_concurrent_writers_end_with_the_last_write_of_each(store: Store) -> None:
    def toggle(worker: int) -> None:
        for round_ in range(20):
            store.update(f"user{worker}@example.net", {"imap": round_ % 2 == 0, "pop": True}, f"w{worker}")

    threads = [threading.Thread(target=toggle, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(store.switches(f"user{n}@example.net") == Switches(imap=False, pop=True) for n in range(8))


def test_a_crash_mid_import_leaves_nothing_half_written(store_url: str) -> None:
    url = store_url
    first = open_store(StoreSettings(url))
    first.update("before@example.net", {"imap": True}, "t")
    first.close()
    crash = textwrap.dedent(
        f"""
        import os
        from autoconfig.store import StoreSettings, Switches, open_store
        store = open_store(StoreSettings({url!r}))
        def rows():
            for i in range(1000):
                yield f"user{{i}}@example.net", Switches(imap=True)
                if i == 500:
                    os._exit(9)  # the process dies inside the open transaction
        store.import_switches(rows(), "crash")
        """
    )
    result = subprocess.run([sys.executable, "-c", crash], cwd=Path(__file__).parents[1], check=False)
    assert result.returncode == 9
    store = open_store(StoreSettings(url))
    assert [a.address for a in store.accounts()] == ["before@example.net"]
    store.close()


def test_an_unreachable_database_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "gone.sqlite3"
    store = open_store(StoreSettings(f"sqlite:///{path}"))
    store.update("alice@example.net", {"imap": True}, "t")
    store.close()
    path.unlink()
    path.mkdir()  # a directory where the database was: every query fails
    with pytest.raises(StoreUnavailable):
        store.switches("alice@example.net")
    with pytest.raises(StoreUnavailable):
        store.ping()


def test_read_only_store_refuses_writes(store: Store) -> None:
    store.read_only = True
    with pytest.raises(ReadOnlyStore):
        store.update("alice@example.net", {"imap": True}, "t")
    with pytest.raises(ReadOnlyStore):
        store.reset("alice@example.net")


class Holder:
    """Stands for a store's connections: what a forked child must not reuse."""

    def __init__(self) -> None:
        self.connection: object | None = object()

    def forget_after_fork(self) -> None:
        self.connection = None


def test_a_forked_child_forgets_connections_and_the_parent_keeps_them() -> None:
    holder = Holder()
    forget_after_fork(holder)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if holder.connection is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child still held the parent's connection"
    assert holder.connection is not None


def test_a_forked_process_can_use_the_store_and_the_parent_is_undisturbed(store: Store) -> None:
    """What a gunicorn worker does after the fork: reads and writes, with the parent still working."""
    store.update("alice@example.net", {"pop": True}, "parent")
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = store.switches("alice@example.net") == Switches(pop=True)
            store.update("bob@example.net", {"imap": True}, "child")
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.switches("bob@example.net") == Switches(imap=True)
    assert store.switches("alice@example.net") == Switches(pop=True)


def test_a_sqlite_file_from_a_newer_release_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "accounts.sqlite3"
    with closing(sqlite3.connect(path)) as newer:
        newer.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        open_store(StoreSettings(f"sqlite:///{path}"))
    with closing(sqlite3.connect(path)) as after:
        assert after.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "the file was switched to WAL"
        assert after.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def _open_at_the_barrier(url: str, barrier: Any) -> None:  # a multiprocessing Barrier
    barrier.wait()
    open_store(StoreSettings(url)).close()


def test_workers_booting_together_on_a_new_sqlite_file_all_open_it(tmp_path: Path) -> None:
    """gunicorn boots its workers at the same moment; on a new file they all set it up at once.

    The race is narrow: with two workers, 3 to 12 boots in a hundred failed
    before it was closed, so it is run a hundred times over.
    """
    forked = multiprocessing.get_context("fork")
    for attempt in range(100):
        url = f"sqlite:///{tmp_path}/fresh{attempt}.sqlite3"
        barrier = forked.Barrier(2)
        workers = [forked.Process(target=_open_at_the_barrier, args=(url, barrier)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert [w.exitcode for w in workers] == [0, 0], f"a worker failed to open {url}"


def test_a_worker_opening_the_sqlite_file_during_an_import_does_not_wait_for_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/accounts.sqlite3"
    importer = open_store(StoreSettings(url))
    inside, release = threading.Event(), threading.Event()

    def rows() -> Iterator[tuple[str, Switches]]:
        yield "alice@example.net", Switches(imap=True)
        inside.set()
        release.wait(10)

    thread = threading.Thread(target=importer.import_switches, args=(rows(), "import"))
    thread.start()
    try:
        assert inside.wait(5)
        started = time.monotonic()
        worker = open_store(StoreSettings(url))
        assert worker.switches("alice@example.net") == OFF, "the import is not committed yet"
        assert time.monotonic() - started < 1, "opening waited for the import's write lock"
    finally:
        release.set()
        thread.join()
    assert worker.switches("alice@example.net") == Switches(imap=True)
    worker.close()
    importer.close()


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "accounts.sqlite3"


@pytest.fixture
def sqlite_store(sqlite_file: Path) -> Iterator[SQLiteStore]:
    """A SQLiteStore on ``sqlite_file``, closed when the test ends; a test may close it sooner and use it again."""
    store = SQLiteStore(f"sqlite:///{sqlite_file}")
    yield store
    store.close()


def test_a_write_to_a_replaced_sqlite_file_is_refused_and_lands_nowhere(
    tmp_path: Path, sqlite_file: Path, sqlite_store: SQLiteStore
) -> None:
    """The path no longer leads to the open file: 503 territory, and no write is acknowledged."""
    sqlite_store.update("alice@example.net", {"imap": True}, "test")
    sqlite_file.rename(tmp_path / "moved.sqlite3")
    with closing(sqlite3.connect(sqlite_file)) as other:  # someone else's file at the path
        other.execute("CREATE TABLE unrelated (x)")
    with pytest.raises(StoreReplaced, match="replaced under the running node"):
        sqlite_store.update("alice@example.net", {"pop": True}, "test")
    with pytest.raises(StoreReplaced):
        sqlite_store.switches("alice@example.net")
    with pytest.raises(StoreReplaced):
        sqlite_store.ping()
    (tmp_path / "moved.sqlite3").replace(sqlite_file)  # the original is back: service resumes
    assert sqlite_store.switches("alice@example.net") == Switches(imap=True, pop=False)


def test_a_sqlite_file_that_cannot_be_opened_at_start_is_opened_later(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database directory should be")
    url = f"sqlite:///{blocker}/accounts.sqlite3"
    store = SQLiteStore(url)  # starts: the node must not die of it
    try:
        with pytest.raises(StoreUnavailable):
            store.switches("alice@example.net")
        blocker.unlink()
        assert store.switches("alice@example.net") == OFF
        store.update("alice@example.net", {"imap": True}, "test")
        assert store.switches("alice@example.net") == Switches(imap=True, pop=False)
    finally:
        store.close()


# -- Every SQLite connection is closed by the store, never left to the garbage collector ------
# (Python 3.13 warns about a collected open connection; until then it holds the file and its locks.)


def open_files(database: Path) -> int:
    """This process's file descriptors on ``database`` and its -wal (SQLite maps the -shm)."""
    names = {str(database), f"{database}-wal"}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the descriptor listdir itself used, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}") in names
    return count


def test_closing_the_store_closes_the_connections_of_every_thread(sqlite_file: Path, sqlite_store: SQLiteStore) -> None:
    mine = open_files(sqlite_file)
    looked_up, finish = threading.Event(), threading.Event()

    def worker_thread() -> None:
        sqlite_store.switches("alice@example.net")
        looked_up.set()
        finish.wait(10)

    thread = threading.Thread(target=worker_thread)
    thread.start()
    try:
        assert looked_up.wait(5)
        assert open_files(sqlite_file) > mine > 0, "the thread has a connection of its own"
        sqlite_store.close()
        assert open_files(sqlite_file) == 0, "a connection of a thread that is still running was left open"
    finally:
        finish.set()
        thread.join()
    assert sqlite_store.switches("alice@example.net") == OFF, "a closed store opens a fresh connection on use"


def test_a_threads_connection_is_closed_when_the_thread_ends(sqlite_file: Path, sqlite_store: SQLiteStore) -> None:
    # Only the threads' connections, then: while another connection of this process holds a
    # lock on the file, SQLite keeps a closed one's descriptor for reuse (POSIX locks belong
    # to the process), so the count would not show the closes.
    sqlite_store.close()
    threads = [threading.Thread(target=sqlite_store.switches, args=("alice@example.net",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert open_files(sqlite_file) == 0


def test_a_connection_that_failed_is_closed(sqlite_file: Path, sqlite_store: SQLiteStore) -> None:
    with closing(sqlite3.connect(sqlite_file)) as other:
        other.execute("DROP TABLE accounts")  # every lookup now fails with an OperationalError
    with pytest.raises(StoreUnavailable, match="no such table"):
        sqlite_store.switches("alice@example.net")
    assert open_files(sqlite_file) == 0


def test_a_forked_child_closes_its_copies_of_the_parents_connections_at_once(
    sqlite_file: Path, sqlite_store: SQLiteStore
) -> None:
    """The copies are closed before anything else runs in the child (SQLiteStore.forget_after_fork says why)."""
    sqlite_store.update("alice@example.net", {"imap": True}, "parent")
    assert open_files(sqlite_file) > 0
    pid = os.fork()
    if pid == 0:
        inherited_closed = open_files(sqlite_file) == 0
        served = sqlite_store.switches("alice@example.net") == Switches(imap=True)
        os._exit(0 if inherited_closed and served and open_files(sqlite_file) > 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert open_files(sqlite_file) > 0, "the parent's connection is its own"
    assert sqlite_store.switches("alice@example.net") == Switches(imap=True)
