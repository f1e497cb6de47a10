"""The hot lookup on PostgreSQL: one prepared SELECT, run through libpq itself, with a deadline.

Every Dovecot login and every client document reads one row.  Through
psycopg's ``Connection.execute`` that read cost about 120 us of the worker's
CPU on loopback, more than the rest of a Dovecot decision; the same
statement sent with libpq's own calls (``psycopg.pq``: send, wait, read the
text result) costs about 50 us, most of it the kernel's round trip
(``python -m bench.run --formats dovecot --store postgresql`` shows the
whole decision).  Nothing is cached: each call asks the server, so a switch
committed anywhere is what the next call sees.

The statement is prepared by name once per connection, so the server does
not parse and plan it at every login (psycopg's own default after five runs
of a query).  For the worker it makes no difference (``PQexecPrepared``
52.7 us against ``PQexecParams`` 54.6 us, the median of six loops), and
wrk's rounds did not tell the two apart beyond their noise.  A prepared
statement can vanish (psycopg sends ``DEALLOCATE ALL`` after a rollback on a
connection where it prepared its own) or go stale (a column's type changed
in the mail database: "cached plan must not change result type"); either
error prepares it again and runs it once more.  Behind a pooler in
transaction mode, PgBouncer 1.21 or later needs ``max_prepared_statements``
set, as for psycopg's own prepared statements.

Each call has one deadline, ``[store] timeout``.  A server that accepts the
query and never answers (frozen, or a network path that drops packets)
costs the request a 503 after that time, never a worker held until
gunicorn kills it; the connection, left mid-query, is closed so the pool
replaces it.  Errors the server sends come back as psycopg's own exception
classes, so the pool's handling of lost connections applies unchanged.
"""

from __future__ import annotations

import hashlib
import re
import select
import time
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors, pq

from .base import StoreUnavailable

Row = tuple[bytes | None, ...]

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_SQLSTATE = pq.DiagnosticField.SQLSTATE
# invalid_sql_statement_name (deallocated) and feature_not_supported (a stale plan).
_PREPARE_AGAIN = {b"26000", b"0A000"}
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP


class RowLookup:
    """A SELECT with ``$1``-style text parameters, answered as text within ``timeout`` seconds."""

    def __init__(self, sql: str, *, timeout: float, what: str) -> None:
        self.sql = sql.encode()
        # One name per statement text: several lookups share a connection without clashing.
        self.name = b"autoconfig_" + hashlib.sha256(self.sql).hexdigest()[:16].encode()
        self.timeout = timeout
        self.what = what
        # Connections this statement is prepared on; a replaced connection drops out by itself.
        self._prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def rows(self, conn: psycopg.Connection[Any], params: Sequence[bytes | None], limit: int) -> list[Row]:
        """At most ``limit`` rows of text values (``None`` for NULL); a ``None`` parameter is NULL."""
        if any(value is not None and b"\0" in value for value in params):
            # libpq reads a text parameter up to its first NUL: "a@b\0c" would be looked up as "a@b".
            # Addresses are validated long before this; a NUL here is a bug, never a lookup.
            raise ValueError(f"{self.what}: a NUL byte in a lookup parameter")
        deadline = time.monotonic() + self.timeout
        if conn not in self._prepared:
            self._prepare(conn, deadline)
        conn.pgconn.send_query_prepared(self.name, params)
        result = self._wait(conn, deadline)
        if result.status != _TUPLES_OK and result.error_field(_SQLSTATE) in _PREPARE_AGAIN:
            self._prepared.discard(conn)
            conn.pgconn.send_query(b"DEALLOCATE " + self.name)
            self._wait(conn, deadline)  # "does not exist" is as good as done
            self._prepare(conn, deadline)
            conn.pgconn.send_query_prepared(self.name, params)
            result = self._wait(conn, deadline)
        _check(result, _TUPLES_OK)
        columns = range(result.nfields)
        return [tuple(result.get_value(row, column) for column in columns) for row in range(min(result.ntuples, limit))]

    def _prepare(self, conn: psycopg.Connection[Any], deadline: float) -> None:
        conn.pgconn.send_prepare(self.name, self.sql)
        _check(self._wait(conn, deadline), _COMMAND_OK)
        self._prepared.add(conn)

    def _wait(self, conn: psycopg.Connection[Any], deadline: float) -> pq.abc.PGresult:
        pgconn = conn.pgconn
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


def _check(result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
    if result.status != expected:
        raise errors.error_from_result(result)


def numbered(query: str) -> tuple[str, tuple[str, ...]]:
    """``query`` with libpq's ``$1``-style parameters, and which parameter each number stands for.

    The same rewriting psycopg applies to ``%(name)s`` (no SQL parsing: a
    placeholder inside a string literal is a parameter there too).
    """
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return re.sub(r"%%|%\((\w+)\)s", number, query), tuple(order)
