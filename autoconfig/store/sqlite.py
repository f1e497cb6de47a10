"""SQLite: the embedded default store, for one node and for trying the service.

WAL lets gunicorn's workers read while one writes; every write is one
``BEGIN IMMEDIATE`` transaction, so a crash leaves each account either
fully old or fully new.  Connections are per thread and per process, since
sqlite3 connections must not cross either boundary.  The store keeps a list
of every connection it opened (``_Connections``) and closes each one
explicitly: ``close()`` closes all of them, whichever thread opened them; a
thread's connection is closed when the thread ends, one that failed when it
fails, and a forked child closes its copies of the parent's at once
(``SQLiteStore.forget_after_fork`` says why closing, not dropping).

Two faults of the file itself never stop the node and never give a wrong answer:

- A file that cannot be opened (unreadable, its directory missing) when a
  worker starts: the worker starts anyway, answers 503, and opens the file
  on a later request once it can.
- The file deleted or replaced under a running node: every process checks
  that the path still leads to the file it serves (``st_dev``/``st_ino``,
  one ``stat`` per request) and answers 503 while it does not; a write is
  refused before it starts, and one that committed into a file that has
  meanwhile left the path is answered 503, never acknowledged.  Under
  gunicorn the identity is the node's (recorded in ``AUTOCONFIG_NODE_DIR``,
  made fresh by each master start): a worker started after the fault does
  not adopt the new file or create an empty one, so workers never disagree.
  Putting the original file back resumes service; stopping and starting
  the node adopts the file now there.  (A reload, SIGHUP, is not enough on
  purpose: it starts new workers while the old ones still hold the old
  file's WAL, which SQLite would then read into the new file.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from ..forking import forget_after_fork
from .base import Account, Change, Store, StoreError, StoreReplaced, StoreUnavailable, Switches, now
from .rekey import Merge, Row, plan, report

log = logging.getLogger(__name__)

# The directory, one per gunicorn master start, where the node records which file it serves.
NODE_DIR_ENV = "AUTOCONFIG_NODE_DIR"
Identity = tuple[int, int]  # (st_dev, st_ino)

# 1: the accounts table; 2: keys in canonical form (store/rekey.py).
SCHEMA_VERSION = 2
SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS accounts (
        address TEXT PRIMARY KEY,
        domain  TEXT NOT NULL,
        imap    INTEGER NOT NULL DEFAULT 0 CHECK (imap IN (0, 1)),
        imap_at TEXT,
        imap_by TEXT,
        pop     INTEGER NOT NULL DEFAULT 0 CHECK (pop IN (0, 1)),
        pop_at  TEXT,
        pop_by  TEXT
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS accounts_by_domain ON accounts (domain, address)",
)
COLUMNS = "address, imap, imap_at, imap_by, pop, pop_at, pop_by"
UPSERT = """
INSERT INTO accounts (address, domain, imap, imap_at, imap_by, pop, pop_at, pop_by)
VALUES (:address, :domain, :imap, :at, :by, :pop, :at, :by)
ON CONFLICT (address) DO UPDATE SET
    imap_at = CASE WHEN imap != excluded.imap THEN excluded.imap_at ELSE imap_at END,
    imap_by = CASE WHEN imap != excluded.imap THEN excluded.imap_by ELSE imap_by END,
    imap = excluded.imap,
    pop_at = CASE WHEN pop != excluded.pop THEN excluded.pop_at ELSE pop_at END,
    pop_by = CASE WHEN pop != excluded.pop THEN excluded.pop_by ELSE pop_by END,
    pop = excluded.pop
-- An unchanged account is not rewritten, nor counted: the import reports what it changed.
WHERE imap != excluded.imap OR pop != excluded.pop
"""


def path_from_url(url: str) -> str:
    """``sqlite:///rel/path`` is relative to the working directory, ``sqlite:////abs`` absolute."""
    return url.removeprefix("sqlite:///")


def inspect(url: str) -> str:
    """What the file at ``url`` holds, read without creating or changing anything (``check-config``).

    A file with a ``-wal`` beside it is in use, and SQLite reads it consistently
    read-only; without one, a read-only connection would create the ``-wal``
    and ``-shm`` files, so the file is opened as immutable (no writer is
    connected, since a connected writer keeps the ``-wal``).
    """
    path = Path(path_from_url(url)).absolute()
    if not path.exists():
        return f"sqlite {path} (not created yet: the service creates it, and its directory, at start)"
    mode = "ro" if Path(f"{path}-wal").exists() else "ro&immutable=1"
    try:
        with closing(sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True)) as conn:
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{path}: schema version {version} is newer than this release understands")
            if version < SCHEMA_VERSION:
                return f"sqlite {path} (no tables yet: the service creates them at start)"
            count: int = conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite database {path}: {exc}") from None
    return f"sqlite {path} ({count} accounts)"


def _domain(key: str) -> str:
    return key.rpartition("@")[2]


def _change(at: str | None, by: str | None) -> Change | None:
    return None if at is None else Change(datetime.fromisoformat(at), by or "")


def _account(row: sqlite3.Row) -> Account:
    return Account(
        address=row["address"],
        switches=Switches(imap=bool(row["imap"]), pop=bool(row["pop"])),
        imap_changed=_change(row["imap_at"], row["imap_by"]),
        pop_changed=_change(row["pop_at"], row["pop_by"]),
    )


# Keys that are not plain lower-case ASCII: the only ones the canonical form can change.
_NOT_LOWER_ASCII = "length(CAST(address AS BLOB)) <> length(address) OR address <> lower(address)"
_REKEY_CANDIDATES = f"SELECT {COLUMNS} FROM accounts WHERE {_NOT_LOWER_ASCII}"


def _rekey(conn: sqlite3.Connection, path: str) -> tuple[Merge, ...]:
    """Schema 2, inside the caller's transaction: every key in canonical form, rows of one mailbox merged."""

    def row(found: sqlite3.Row) -> Row:
        return Row(
            found["address"], bool(found["imap"]), found["imap_at"], found["imap_by"],
            bool(found["pop"]), found["pop_at"], found["pop_by"],
        )  # fmt: skip

    def row_at(key: str) -> Row | None:
        found = conn.execute(f"SELECT {COLUMNS} FROM accounts WHERE address = ?", (key,)).fetchone()
        return None if found is None else row(found)

    candidates = [row(found) for found in conn.execute(_REKEY_CANDIDATES).fetchall()]
    rekeying = plan(candidates, row_at, now().isoformat())
    for old, new in rekeying.renames:
        conn.execute("UPDATE accounts SET address = ? WHERE address = ?", (new, old))
    for merge, merged in rekeying.merges:
        conn.executemany("DELETE FROM accounts WHERE address = ?", [(source,) for source in merge.sources])
        conn.execute(
            "INSERT INTO accounts (address, domain, imap, imap_at, imap_by, pop, pop_at, pop_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (merged.address, _domain(merged.address), int(merged.imap), merged.imap_at, merged.imap_by,
             int(merged.pop), merged.pop_at, merged.pop_by),
        )  # fmt: skip
    return report(rekeying, f"SQLite database {path}")


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    """Open ``path``; without ``create`` a missing file is an error, never a new empty database.

    ``check_same_thread=False`` lets the store close a connection from
    another thread than the one that opened it (``_Connections``); each
    connection is still used by one thread only, the one it belongs to.
    """
    uri = f"file:{urllib.parse.quote(path)}?mode={'rwc' if create else 'rw'}"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)


class _Connections:
    """Every connection one store has open, so that each is closed, never left to the garbage collector.

    Python 3.13 warns (``ResourceWarning``) about a connection collected
    while open, and until then it holds a file descriptor and the file's
    locks; a store serves from several threads and sometimes from a
    forked child, so its ``close()`` cannot rely on the calling thread's
    connection being the only one.
    """

    def __init__(self) -> None:
        # Reentrant: a thread's connection is closed by ``_ThreadConnection.__del__``, which the
        # garbage collector may run in a thread that is inside one of these methods.
        self._lock = threading.RLock()
        self._open: set[sqlite3.Connection] = set()

    def connect(self, path: str, *, create: bool) -> sqlite3.Connection:
        conn = _connect(path, create=create)
        with self._lock:
            self._open.add(conn)
        return conn

    def close(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def close_all(self) -> None:
        with self._lock:
            connections, self._open = self._open, set()
        for conn in connections:
            conn.close()


class _ThreadConnection:
    """Held in a thread's ``threading.local`` slot: closes that thread's connection when the thread ends.

    Only while the store lives: when the store itself is collected unclosed,
    its ``_Connections`` is gone and the connection is left open, so Python
    still warns about the store that was never closed.
    """

    def __init__(self, conn: sqlite3.Connection, connections: _Connections) -> None:
        self.conn = conn
        self._connections = weakref.ref(connections)

    def __del__(self) -> None:
        connections = self._connections()
        if connections is not None:
            connections.close(self.conn)


def _identity(path: str) -> Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _node_record(path: str) -> Path | None:
    """Where this node records the identity of the file at ``path`` (None outside gunicorn)."""
    directory = os.environ.get(NODE_DIR_ENV)
    if not directory:
        return None
    name = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]
    return Path(directory) / f"sqlite-{name}"


def _read_record(record: Path | None) -> Identity | None:
    if record is None:
        return None
    try:
        dev, ino = record.read_text().split()
        return int(dev), int(ino)
    except (OSError, ValueError):
        return None


def _write_record(record: Path | None, identity: Identity) -> Identity:
    """Record ``identity`` as the node's file unless a worker did first; the node's file either way."""
    if record is None:
        return identity
    temporary = record.with_name(f"{record.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{identity[0]} {identity[1]}\n")
        os.link(temporary, record)  # atomic, and refused if another worker recorded first
    except FileExistsError:
        pass
    except OSError as exc:
        log.warning("cannot record the SQLite file identity in %s: %s", record.parent, exc)
        return identity
    finally:
        temporary.unlink(missing_ok=True)
    return _read_record(record) or identity


# How often a lookup checks that the path still leads to the file it read (seconds).
FILE_CHECK_INTERVAL = 0.1
MMAP_SIZE = 256 * 1024 * 1024
BUSY_TIMEOUT = 5.0
_SWITCHES_QUERY = "SELECT imap, pop FROM accounts WHERE address = ?"
_SWITCH_VALUES = {(imap, pop): Switches(imap=bool(imap), pop=bool(pop)) for imap in (0, 1) for pop in (0, 1)}


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        self._connections = _Connections()
        self._local = threading.local()
        # The file this store serves, once opened: what the path must keep leading to.
        self._identity: Identity | None = None
        self._prepared = False
        self._next_check = 0.0  # when a lookup next checks the file (monotonic)
        self._record = _node_record(self.path)
        forget_after_fork(self)
        try:
            self._connection()
        except StoreUnavailable as exc:
            # A worker starting while the file cannot be opened still starts: it answers 503
            # and /healthz says so until the file can be opened, then serves as usual.
            log.warning("SQLite store unavailable at start, will retry on use: %s", exc)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Switch on WAL and create the schema, if another process has not already.

        gunicorn boots its workers at the same moment, so on a new file they
        race each other here.  SQLite answers a journal-mode switch that meets
        another connection's lock with "database is locked" at once, without
        waiting on the busy timeout, so that one step is retried.  A database
        already at this schema is only read: a worker booting during a long
        import does not wait for the import's write lock.
        """
        version = self._schema_version(conn)  # a newer schema is refused before anything is changed
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    break
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if version == SCHEMA_VERSION:
            return
        with self._transaction() as locked:
            # Read again under the write lock: another worker may have just created it.
            found = self._schema_version(locked)
            if found < 1:
                for statement in SCHEMA:
                    locked.execute(statement)
            if 0 < found < 2:  # a new file has no keys to rewrite
                self.migration_merges = _rekey(locked, self.path)
            if found < SCHEMA_VERSION:
                locked.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this release understands")
        return version

    def forget_after_fork(self) -> None:
        """In a forked child: close the child's copies of the parent's connections, before any other use.

        SQLite's rule is never to carry a connection across ``fork()``, and
        dropping the references would not keep to it: a collected
        ``sqlite3.Connection`` closes its database anyway (Python 3.13 with a
        ``ResourceWarning``), only later, at a moment nobody chose.  Keeping
        the copies open for the child's whole life is worse: SQLite keeps
        its POSIX lock bookkeeping per process and per file, the child
        inherits the parent's, and while an inherited connection to the
        file stays open a connection the child opens to it shares that
        bookkeeping, believes it holds the shared lock the parent took and
        takes none of its own.  The parent's last connection then gets the
        exclusive lock on close, checkpoints and deletes the WAL under the
        child's open read transaction (tried on SQLite 3.40 and 3.46).
        Closing the copies first makes the child's own connections take
        real locks.  The close itself cannot harm the parent: the child's
        fcntl locks are its own (it holds none), the shared memory of the
        WAL index is only unmapped, and the checkpoint a closing connection
        attempts needs an exclusive lock, refused while the parent (or any
        other process) holds the file open.  Forking while another thread
        is inside SQLite is unsafe in any case (its mutexes are copied
        locked) and not supported: gunicorn's master forks before a worker
        opens its store.
        """
        self._connections.close_all()
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._errors():
                conn = self._open()
        return conn

    def _open(self) -> sqlite3.Connection:
        """A new connection to the file this store serves, never to another one."""
        expected = self._identity or _read_record(self._record)
        if expected is None:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc
            conn = self._connections.connect(self.path, create=True)
        else:
            # The node has served a file at this path: never create an empty one in its place.
            if _identity(self.path) is None:
                raise StoreReplaced(f"SQLite database {self.path}: the file this node serves was deleted")
            conn = self._connections.connect(self.path, create=False)
        found = _identity(self.path)  # sqlite3.connect has opened the file: this is the one it holds
        if found is None or (expected is not None and found != expected):
            self._connections.close(conn)
            raise StoreReplaced(f"SQLite database {self.path}: the file at the path is not the one this node serves")
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous = FULL")
            # Lookups read pages straight from the OS page cache, shared by all
            # workers, instead of copying them in with a read() each: about a
            # fifth of a lookup's time under load (bench/).
            conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
            self._local.conn = conn
            self._local.owner = _ThreadConnection(conn, self._connections)
            # The lookup's own cursor, made once, with plain tuples for rows.
            lookup = self._local.lookup = conn.cursor()
            lookup.row_factory = None
            if not self._prepared:
                self._prepare(conn)
                self._prepared = True
        except BaseException:
            self._forget_connection()
            self._connections.close(conn)
            raise
        if self._identity is None:
            self._identity = _write_record(self._record, found)
            if self._identity != found:  # another worker recorded another file first
                self._forget_connection()
                self._check_file()
        return conn

    def _check_file(self) -> None:
        """Raise ``StoreReplaced`` unless the path still leads to the file this store serves."""
        try:
            st = os.stat(self.path)
        except OSError:
            raise StoreReplaced(f"SQLite database {self.path}: the file this node serves was deleted") from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreReplaced(f"SQLite database {self.path}: the file was replaced under the running node")

    def _lookup_cursor(self) -> sqlite3.Cursor:
        self._connection()
        lookup: sqlite3.Cursor = self._local.lookup
        return lookup

    def _forget_connection(self) -> None:
        """Close this thread's connection, if it has one; its next call opens a fresh one."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = self._local.lookup = self._local.owner = None
        if conn is not None:
            self._connections.close(conn)

    def _unavailable(self, exc: sqlite3.OperationalError) -> StoreUnavailable:
        """The error to raise for ``exc``; the connection is closed, so the next call opens a fresh one."""
        self._forget_connection()
        return StoreUnavailable(f"SQLite database {self.path}: {exc}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            conn = self._connection()
            if self._prepared:  # (the schema's own transaction runs before the identity is known)
                self._check_file()  # no write starts into a file that has left the path
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if self._identity is not None:
                # Committed into a file that has just left the path: the write is lost, so it
                # is answered 503, never acknowledged.
                self._check_file()

    def _switches(self, key: str) -> Switches | None:
        # The hot path: without ``_errors``, as a generator-based context
        # manager costs more than the query's own Python overhead.
        try:
            lookup: sqlite3.Cursor = getattr(self._local, "lookup", None) or self._lookup_cursor()
            row = lookup.execute(_SWITCHES_QUERY, (key,)).fetchone()
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc
        # After the read, at most every FILE_CHECK_INTERVAL: a stat on every request cost
        # about 0.09 of bench/coldcache's ratio.  Reads in the interval after a replacement
        # still see every acknowledged write, because writes check the file every time.
        now = time.monotonic()
        if now >= self._next_check:
            self._check_file()
            self._next_check = now + FILE_CHECK_INTERVAL
        return None if row is None else _SWITCH_VALUES[row[0], row[1]]

    def _get(self, key: str) -> Account | None:
        with self._errors():
            row = self._connection().execute(f"SELECT {COLUMNS} FROM accounts WHERE address = ?", (key,)).fetchone()
        self._check_file()
        return None if row is None else _account(row)

    def _update(self, key: str, changes: dict[str, bool], actor: str, at: datetime) -> Account:
        stamp = at.isoformat()
        with self._transaction() as conn:
            row = conn.execute("SELECT imap, pop FROM accounts WHERE address = ?", (key,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO accounts (address, domain) VALUES (?, ?)", (key, _domain(key)))
                current: dict[str, bool | None] = {"imap": None, "pop": None}
            else:
                current = {"imap": bool(row["imap"]), "pop": bool(row["pop"])}
            for switch, value in changes.items():
                if current[switch] != value:
                    # switch is one of SWITCHES (checked by Store.update), never client text.
                    conn.execute(
                        f"UPDATE accounts SET {switch} = ?, {switch}_at = ?, {switch}_by = ? WHERE address = ?",
                        (int(value), stamp, actor, key),
                    )
            account = conn.execute(f"SELECT {COLUMNS} FROM accounts WHERE address = ?", (key,)).fetchone()
        return _account(account)

    def _delete(self, key: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM accounts WHERE address = ?", (key,)).rowcount > 0

    def _accounts(self, domain: str | None) -> Iterator[Account]:
        # Read on a connection of its own so a long listing never holds the thread's connection.
        self._connection()  # the file is known and prepared
        with self._errors():
            conn = self._connections.connect(self.path, create=False)
        conn.row_factory = sqlite3.Row
        if _identity(self.path) != self._identity:
            self._connections.close(conn)
            self._check_file()
        try:
            with self._errors():
                if domain is None:
                    rows = conn.execute(f"SELECT {COLUMNS} FROM accounts ORDER BY address")
                else:
                    rows = conn.execute(f"SELECT {COLUMNS} FROM accounts WHERE domain = ? ORDER BY address", (domain,))
                for row in rows:
                    yield _account(row)
        finally:
            self._connections.close(conn)

    def _import(self, rows: Iterable[tuple[str, Switches]], actor: str, at: datetime) -> int:
        stamp = at.isoformat()
        params = (
            {"address": key, "domain": _domain(key), "imap": int(s.imap), "pop": int(s.pop), "at": stamp, "by": actor}
            for key, s in rows
        )
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(UPSERT, params)
            return conn.total_changes - before

    def _ping(self) -> None:
        with self._errors():
            self._connection().execute("SELECT 1").fetchone()
        self._check_file()

    def close(self) -> None:
        """Close every connection of this store, whichever thread opened it.

        A later call opens a fresh connection again (the CLI and the tests
        reuse a closed store).  A thread still inside a call on one of them
        then fails, so a store is closed when its threads are done with it.
        """
        self._connections.close_all()
        self._local = threading.local()
