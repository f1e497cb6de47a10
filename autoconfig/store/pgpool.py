"""PostgreSQL connections for the stores that use it: one pool per process.

gunicorn forks its workers; a pool (its sockets and its worker threads)
must never cross a fork, so the pool is opened on first use in the process
that uses it, and forgotten in a forked child.

Failures the caller cannot fix (server down, connection lost, no free
connection within ``timeout``) become ``StoreUnavailable`` within about
``timeout`` seconds, so a client gets 503 quickly instead of hanging; after
the first such failure, requests fail in milliseconds until one succeeds.
A connection found broken (typically after the server restarted) is
discarded together with every idle connection that is just as dead, and
the work is tried once more on a fresh one.  The pool keeps reconnecting
in the background, so a node resumes by itself within a few seconds of the
database coming back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..forking import forget_after_fork
from .base import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a statement may run on the request path.  Bulk work (import,
# export) lifts it for its own transaction.
STATEMENT_TIMEOUT_MS = 5000
# While the database is known to be down, how long a request waits for a pooled connection.
DOWN_WAIT = 0.05
RECONNECT_TIMEOUT = 0.5
# The libpq lookups (pglookup.py) send and read UTF-8 bytes; libpq's own default is the
# database's encoding (LATIN1 in some older mail databases), where those bytes would be
# compared as other text and psycopg's path (import, export) would read them differently.
CLIENT_ENCODING = "UTF8"


class PgConnections:
    """A lazily opened ``ConnectionPool`` (autocommit connections) with error mapping."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        timeout: float,
        read_only: bool = False,
        what: str = "PostgreSQL",
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.timeout = timeout
        self.read_only = read_only
        self.what = what
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self.down = False  # set by a failure to reach the server, cleared by the next success
        self._checking = threading.Lock()
        self._check_done: threading.Event | None = None  # set when the last check of the idle connections ended
        forget_after_fork(self)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's pool without touching its sockets."""
        self._lock = threading.Lock()
        self._checking = threading.Lock()
        self._check_done = None
        self._pool = None
        self.down = False

    def _configure(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        if self.read_only:
            # The mail database is another system's: even a mistaken query cannot write to it.
            conn.execute("SET default_transaction_read_only = on")

    def pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = ConnectionPool(
                        self.url,
                        min_size=1,
                        max_size=self.pool_size,
                        timeout=self.timeout,
                        # End a failing reconnection loop quickly: the next request then starts
                        # a fresh attempt at once, instead of the pool sleeping through an
                        # exponential backoff while the database is already back.
                        reconnect_timeout=RECONNECT_TIMEOUT,
                        kwargs={
                            "autocommit": True,
                            "connect_timeout": max(2, int(self.timeout)),
                            "client_encoding": CLIENT_ENCODING,
                        },
                        configure=self._configure,
                        name="autoconfig",
                        open=False,
                    )
                    pool.open(wait=False)
                    self._pool = pool
        return pool

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A connection outside the pool, for one-off work at start (schema migration)."""
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(2, int(self.timeout)), client_encoding=CLIENT_ENCODING
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{self.what}: {exc}") from exc

    def run(self, work: Callable[[psycopg.Connection[tuple[object, ...]]], T], *, retry: bool = True) -> T:
        """``work(conn)`` on a pooled connection; retried once if that connection was dead."""
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            broken = False
            # Once the database is known to be down, take only a connection the pool already
            # has (it keeps reconnecting in the background): fail in milliseconds, not seconds,
            # so an outage does not tie up every worker thread for the whole pool timeout.
            wait = DOWN_WAIT if self.down else None
            pool = self.pool()
            try:
                # getconn/putconn rather than ``with pool.connection()``: the connections are
                # autocommit, so the commit that block ends with has nothing to do, and skipping
                # it is a tenth of a PostgreSQL lookup's CPU.  A transaction ``work`` opens
                # (``conn.transaction()``) ends inside ``work``; putconn rolls back anything left.
                conn = pool.getconn(timeout=wait)
                try:
                    result = work(conn)
                except psycopg.OperationalError:
                    broken = conn.broken
                    raise
                finally:
                    pool.putconn(conn)
                self.down = False
                return result
            except psycopg.OperationalError as exc:
                if broken and attempt < attempts:
                    log.warning("%s: connection lost (%s); checking the pool and retrying once", self.what, exc)
                    self._check_idle(pool)
                    continue
                if broken or isinstance(exc, PoolTimeout):
                    self.down = True
                raise StoreUnavailable(f"{self.what}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_idle(self, pool: ConnectionPool) -> None:
        """Discard every idle connection as dead as the one just lost, waiting at most ``timeout``.

        The pool's ``check()`` sends each idle connection an empty query with no deadline: on a
        server that lost one connection and does not answer on the others (frozen, a network
        path dropping packets) it would hold the request for as long as that lasts.  It runs in
        its own thread (one at a time); the request waits for it as long as a query may take,
        which after a plain restart is milliseconds.
        """
        with self._checking:
            done = self._check_done
            if done is None or done.is_set():
                done = self._check_done = threading.Event()

                def check() -> None:
                    try:
                        pool.check()
                    except Exception as exc:  # a closed pool: nothing left to check
                        log.debug("%s: checking the idle connections failed: %s", self.what, exc)
                    finally:
                        done.set()

                threading.Thread(target=check, name=f"{self.what} pool check", daemon=True).start()
        done.wait(self.timeout)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """A pooled connection held for a while (a streamed listing); no retry."""
        try:
            with self.pool().connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{self.what}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=2.0)
