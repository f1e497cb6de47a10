"""The hot lookup on PostgreSQL: one prepared SELECT, run through libpq itself, with a deadline.

Every Dovecot login and every client document reads one row.  Through
psycopg's ``Connection.execute`` that read cost about 120 us of the worker's
CPU on loopback, more than the rest of a Dovecot decision; the same
statement prepared once per connection and run with libpq's own calls
(``psycopg.pq``: send, wait, read the text result) costs about 45 us, most of
it the kernel's round trip (``python -m bench.run --formats dovecot --store
postgresql`` shows the whole decision).  Nothing is cached: each call asks
the server, so a switch committed anywhere is what the next call sees.

The wait has a deadline, ``[store] timeout``.  A server that accepts the
query and never answers (frozen, or a network path that drops packets)
costs the request a 503 after that time, never a worker held until
gunicorn kills it; the connection, left mid-query, is closed so the pool
replaces it.  Errors the server sends come back as psycopg's own exception
classes, so the pool's handling of lost connections applies unchanged.
"""

from __future__ import annotations

import select
import time
import weakref
from typing import Any

import psycopg
from psycopg import errors, pq

from .base import StoreUnavailable

Row = tuple[bytes | None, ...]

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP


class PreparedLookup:
    """A SELECT with ``$1``-style parameters, prepared on each connection the first time it runs there."""

    def __init__(self, name: str, sql: str, *, timeout: float, what: str) -> None:
        self.name = name.encode()
        self.sql = sql.encode()
        self.timeout = timeout
        self.what = what
        # Connections this statement is prepared on; a replaced connection drops out by itself.
        self._prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def rows(self, conn: psycopg.Connection[Any], params: list[bytes], limit: int) -> list[Row]:
        """At most ``limit`` rows of text values (``None`` for NULL)."""
        if any(b"\0" in value for value in params):
            # libpq reads a text parameter up to its first NUL: "a@b\0c" would be looked up as "a@b".
            # Addresses are validated long before this; a NUL here is a bug, never a lookup.
            raise ValueError(f"{self.what}: a NUL byte in a lookup parameter")
        pgconn = conn.pgconn
        if conn not in self._prepared:
            pgconn.send_prepare(self.name, self.sql)
            self._check(self._wait(conn), _COMMAND_OK)
            self._prepared.add(conn)
        pgconn.send_query_prepared(self.name, params)
        result = self._wait(conn)
        self._check(result, _TUPLES_OK)
        columns = range(result.nfields)
        return [tuple(result.get_value(row, column) for column in columns) for row in range(min(result.ntuples, limit))]

    def _wait(self, conn: psycopg.Connection[Any]) -> pq.abc.PGresult:
        pgconn = conn.pgconn
        deadline = time.monotonic() + self.timeout
        poller: select.poll | None = None
        pgconn.consume_input()  # raises OperationalError if the connection is gone
        while pgconn.is_busy():
            remaining = deadline - time.monotonic()
            if poller is None:
                poller = select.poll()
                poller.register(pgconn.socket, _READABLE)
            if remaining <= 0 or not poller.poll(remaining * 1000):
                conn.close()  # mid-query: never hand it back to the pool
                raise StoreUnavailable(f"{self.what}: no answer within {self.timeout:g} s ([store] timeout)")
            pgconn.consume_input()
        result = pgconn.get_result()
        # Read to the end of the command, so the connection is idle again for its next user.
        while pgconn.get_result() is not None:
            pass
        if result is None:  # pragma: no cover - libpq returns a result for every query it sent
            raise psycopg.OperationalError(f"{self.what}: the server sent no result")
        return result

    @staticmethod
    def _check(result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
        if result.status != expected:
            raise errors.error_from_result(result)
