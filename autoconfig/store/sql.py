"""The ``sql`` source: read the switches from the ISP's existing mail database.

Many mail systems already keep per-mailbox flags (iRedMail's
``mailbox.enableimaptls`` / ``enablepop3tls``, mailcow's ``imap_access`` /
``pop3_access``) that the IMAP and POP servers enforce.  Reading them with one configured, parameterised
``SELECT`` means the service shows exactly what the mail servers allow,
with no copy to keep in sync.  The source is read-only: switches change
where that database is managed, so every write here is refused.

The database is PostgreSQL (psycopg) or MySQL/MariaDB (mysqlclient); both
take the same ``%(name)s`` parameters, so one query text can serve both.
A preset (``presets.py``) supplies the query for a known mail stack.

The query gets the named parameters ``%(address)s`` (normalised, lower
case), ``%(local_part)s`` and ``%(domain)s`` and returns one row of two
columns, IMAP then POP.  No row means both off, like an unknown address.
Several rows mean the query is too loose; a protocol is then offered only
if every row enables it, since showing a disabled protocol is the one
mistake this service must not make.  More than ``MAX_ROWS`` rows is a 503
(the rows past it are unread), as past the ldap source's sizelimit.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from .base import StoreError, StoreUnavailable, Switches
from .pglookup import RowLookup, numbered
from .pgpool import PgConnections
from .settings import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT
from .source import ReadOnlySource, address_parameters
from .sql_settings import check_query, dialect

log = logging.getLogger(__name__)

MAX_ROWS = 50
READ_ROWS = MAX_ROWS + 1  # what the drivers read: one more tells "too many" from "exactly the limit"
_TRUE_TEXT = {"1", "t", "true", "y", "yes", "on"}
_FALSE_TEXT = {"", "0", "f", "false", "n", "no", "off"}


def _flag(value: object, column: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXT | _FALSE_TEXT:
            return text in _TRUE_TEXT
        # PostgreSQL sends every value as text here: a numeric column arrives as "1.0".
        with suppress(InvalidOperation):
            number = Decimal(text)
            if number.is_finite():
                return number != 0
    raise StoreUnavailable(f"sql source: column {column} returned {type(value).__name__}; return a boolean or 0/1")


class _Postgres:
    """The mail database on PostgreSQL: the libpq lookup with a deadline (pglookup.py) on the shared pool code."""

    query_errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, url: str, query: str, *, pool_size: int, timeout: int) -> None:
        self._db = PgConnections(url, pool_size=pool_size, timeout=timeout, read_only=True, what="mail database")
        self._query = query
        text, self._names = numbered(query)
        self._lookup = RowLookup(text, timeout=timeout, what="mail database")
        self._ping = RowLookup("SELECT 1", timeout=timeout, what="mail database")

    def rows(self, params: dict[str, str]) -> list[tuple[Any, ...]]:
        values = [params[name].encode() for name in self._names]

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            rows = self._lookup.rows(conn, values, READ_ROWS)
            return [tuple(None if value is None else value.decode() for value in row) for row in rows]

        return self._db.run(work)

    def width(self, params: dict[str, str]) -> int:
        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            return len(conn.execute(self._query, params).description or ())

        return self._db.run(work)

    def ping(self) -> None:
        self._db.run(lambda conn: self._ping.rows(conn, [], 1))

    def close(self) -> None:
        self._db.close()


class _MySQL:
    """The mail database on MySQL or MariaDB: mysqlclient through ``connpool``."""

    def __init__(self, url: str, query: str, *, pool_size: int, timeout: int) -> None:
        import MySQLdb

        from . import mysql

        self.query_errors: tuple[type[BaseException], ...] = (MySQLdb.MySQLError,)
        self._db = mysql.MySQLConnections(url, pool_size=pool_size, timeout=timeout)
        self._query = query

    def _execute(self, query: str, params: dict[str, str], fetch: bool) -> Any:
        def work(conn: Any) -> Any:
            cur = conn.cursor()
            try:
                cur.execute(query, params)
                return cur.fetchmany(READ_ROWS) if fetch else len(cur.description or ())
            finally:
                cur.close()

        return self._db.pool.run(work)

    def rows(self, params: dict[str, str]) -> list[tuple[Any, ...]]:
        return list(self._execute(self._query, params, fetch=True))

    def width(self, params: dict[str, str]) -> int:
        return int(self._execute(self._query, params, fetch=False))

    def ping(self) -> None:
        self._execute("SELECT 1", {}, fetch=True)

    def close(self) -> None:
        self._db.pool.close()


class SQLSource(ReadOnlySource):
    kind = "sql"
    origin = "the mail database"
    match_words = ("row", "rows")
    read_only_reason = (
        "the account source is the mail database (store.sql), which is read-only here; "
        "change IMAP/POP where that database is managed (webmail or the mail admin tool)"
    )

    def __init__(
        self,
        url: str,
        query: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: int = DEFAULT_TIMEOUT,
        preset: str | None = None,
    ) -> None:
        self.query = check_query(query)
        self.preset = preset
        self.dialect = dialect(url)
        self._db: _Postgres | _MySQL = (
            _Postgres(url, self.query, pool_size=pool_size, timeout=timeout)
            if self.dialect == "postgresql"
            else _MySQL(url, self.query, pool_size=pool_size, timeout=timeout)
        )
        try:
            self._check_shape()
        except StoreUnavailable as exc:
            log.warning("sql source: mail database unreachable at start: %s", exc)

    def describe(self) -> list[str]:
        source = f"preset {self.preset}" if self.preset else "store.sql.query"
        return [f"sql ({self.dialect}, {source}): {self.query}"]

    def _check_shape(self) -> None:
        """Run the query once for a non-existent address: a typo fails the start, not a client."""
        try:
            columns = self._db.width(address_parameters("nobody@autoconfig.invalid"))
        except self._db.query_errors as exc:
            raise StoreError(f"store.sql.query: the mail database rejects the query: {exc}") from None
        if columns != 2:
            raise StoreError(f"store.sql.query: must return 2 columns (imap, pop); it returns {columns}")

    def _switches(self, key: str) -> Switches | None:
        try:
            rows = self._db.rows(address_parameters(key))
        except self._db.query_errors as exc:
            # The other system's schema changed under us: no guess, a 503 and a log line naming why.
            raise StoreUnavailable(f"mail database: the configured query (store.sql.query) failed: {exc}") from exc
        if len(rows) > MAX_ROWS:
            # Rows past the limit are unread, and any of them may turn a protocol off: no guess,
            # as the ldap source does past its sizelimit.
            raise StoreUnavailable(f"mail database: more than {MAX_ROWS} rows match one address; check store.sql.query")
        return self._every_match(
            rows, imap=lambda row: _flag(row[0], "1 (imap)"), pop=lambda row: _flag(row[1], "2 (pop)")
        )

    def _ping(self) -> None:
        self._db.ping()

    def close(self) -> None:
        self._db.close()
