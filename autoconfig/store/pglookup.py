"""The hot lookup on PostgreSQL: one SELECT sent through libpq itself, with a deadline.

Every Dovecot login and every client document reads one row.  Through
psycopg's ``Connection.execute`` that read cost about 120 us of the worker's
CPU on loopback, more than the rest of a Dovecot decision; the same
statement sent with libpq's own calls (``psycopg.pq``: send, wait, read the
text result) costs about 50 us, most of it the kernel's round trip
(``python -m bench.run --formats dovecot --store postgresql`` shows the
whole decision).  Nothing is cached: each call asks the server, so a switch
committed anywhere is what the next call sees.

The statement is unnamed (libpq's ``PQsendQueryParams``): nothing is left
on the connection between calls, as a pooler in transaction mode (PgBouncer)
needs, since a statement prepared by name may be missing from the next
server connection it hands out.  A named one measured no cheaper for the
worker (``PQexecPrepared`` 52.7 us against 54.6 us, the median of six loops).

The wait has a deadline, ``[store] timeout``.  A server that accepts the
query and never answers (frozen, or a network path that drops packets)
costs the request a 503 after that time, never a worker held until
gunicorn kills it; the connection, left mid-query, is closed so the pool
replaces it.  Errors the server sends come back as psycopg's own exception
classes, so the pool's handling of lost connections applies unchanged.
"""

from __future__ import annotations

import re
import select
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors, pq

from .base import StoreUnavailable

Row = tuple[bytes | None, ...]

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP


class RowLookup:
    """A SELECT with ``$1``-style text parameters, answered as text within ``timeout`` seconds."""

    def __init__(self, sql: str, *, timeout: float, what: str) -> None:
        self.sql = sql.encode()
        self.timeout = timeout
        self.what = what

    def rows(self, conn: psycopg.Connection[Any], params: Sequence[bytes | None], limit: int) -> list[Row]:
        """At most ``limit`` rows of text values (``None`` for NULL); a ``None`` parameter is NULL."""
        if any(value is not None and b"\0" in value for value in params):
            # libpq reads a text parameter up to its first NUL: "a@b\0c" would be looked up as "a@b".
            # Addresses are validated long before this; a NUL here is a bug, never a lookup.
            raise ValueError(f"{self.what}: a NUL byte in a lookup parameter")
        conn.pgconn.send_query_params(self.sql, params)
        result = self._wait(conn)
        if result.status != _TUPLES_OK:
            raise errors.error_from_result(result)
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
