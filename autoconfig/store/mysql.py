"""MySQL and MariaDB connections for the read-only ``sql`` source.

The driver is mysqlclient (``MySQLdb``), the C binding over libmariadb.
Measured in one process against PyMySQL, the pure-Python driver, on the
same parameterised primary-key SELECT against MariaDB 10.11 on loopback, it
costs 29.5 us of client CPU per lookup against PyMySQL's 46.8 us
(``python -m bench.drivers``), and CPU per lookup is what this service is
measured by.  Both speak the same
``%(name)s`` parameter style as psycopg, so one query syntax serves both
databases.

Every connection is a read-only session (``SET SESSION TRANSACTION READ
ONLY``): the mail database is another system's, and even a mistaken query
must not change it.  The client gives up on a silent server after the
store timeout (``read_timeout``), and MariaDB itself stops a statement that
runs longer (``max_statement_time``).
"""

from __future__ import annotations

import logging
from typing import Any

import MySQLdb

from .connpool import ConnectionPool
from .mysql_settings import parse_url

log = logging.getLogger(__name__)

# Connection-level failures: the server is away, restarting, or too slow.  Anything
# else the driver raises (a rejected query) leaves the connection usable.
LOST = (MySQLdb.OperationalError, MySQLdb.InterfaceError)
# Errors that are the query's fault even though the driver files them as OperationalError.
QUERY_ERRORS = {1054, 1064, 1146, 1142, 1143, 1792, 3140, 4078}


def is_query_error(exc: BaseException) -> bool:
    """True when MySQL rejected the statement itself (bad column, no table, no privilege, read-only)."""
    if isinstance(exc, MySQLdb.ProgrammingError | MySQLdb.DataError | MySQLdb.IntegrityError):
        return True
    if isinstance(exc, MySQLdb.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0] in QUERY_ERRORS
    return False


def _close(conn: MySQLdb.Connection) -> None:
    conn.close()  # type: ignore[no-untyped-call]  # types-mysqlclient leaves close() untyped


def is_lost(exc: BaseException) -> bool:
    """A failure of the connection (discard it), not of the statement."""
    return isinstance(exc, LOST) and not is_query_error(exc)


class MySQLConnections:
    """Read-only sessions to the mail database, ``pool_size`` per process."""

    def __init__(self, url: str, *, pool_size: int, timeout: int, what: str = "mail database") -> None:
        self.url = parse_url(url)
        self.timeout = timeout
        self.what = what
        self.pool: ConnectionPool[MySQLdb.Connection] = ConnectionPool(
            self._connect, _close, size=pool_size, timeout=timeout, lost=is_lost, what=what
        )

    def _connect(self) -> MySQLdb.Connection:
        seconds = max(1, self.timeout)
        kwargs: dict[str, Any] = {
            "user": self.url.user,
            "password": self.url.password,
            "database": self.url.database,
            "connect_timeout": seconds,
            "read_timeout": seconds,
            "write_timeout": seconds,
            "charset": "utf8mb4",
            "autocommit": True,
        }
        if self.url.unix_socket:
            kwargs["unix_socket"] = self.url.unix_socket
        else:
            kwargs["host"], kwargs["port"] = self.url.host, self.url.port
        if self.url.ssl_ca:
            kwargs["ssl"] = {"ca": self.url.ssl_ca}
            kwargs["ssl_mode"] = "VERIFY_IDENTITY"
        conn = MySQLdb.connect(**kwargs)
        try:
            cur = conn.cursor()
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            try:
                cur.execute(f"SET SESSION max_statement_time = {float(seconds)}")  # MariaDB
            except MySQLdb.OperationalError:
                cur.execute(f"SET SESSION max_execution_time = {seconds * 1000}")  # MySQL 5.7+
            cur.close()
        except BaseException:
            _close(conn)
            raise
        return conn
