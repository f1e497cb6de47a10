"""The ``mysql://`` URL as the registry knows it: parsed and checked without loading the driver.

Only the read-only ``sql`` source reads a MySQL or MariaDB database, so the
URL has no store of its own; ``mysql.py`` holds the connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from .settings import Backend

SCHEME = "mysql://"
DEFAULT_PORT = 3306


@dataclass(frozen=True)
class MySQLURL:
    """A parsed ``mysql://user:password@host:port/database`` (``?unix_socket=…&ssl_ca=…``)."""

    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    unix_socket: str | None = None
    ssl_ca: str | None = None


def parse_url(url: str) -> MySQLURL:
    """Parse without ever putting the URL (it may hold a password) into an error."""
    if not url.startswith(SCHEME):
        raise ValueError("must start with mysql://")
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("is not a valid mysql:// URL (check the port)") from None
    query = parse_qs(parts.query, strict_parsing=False)
    unknown = sorted(set(query) - {"unix_socket", "ssl_ca"})
    if unknown:
        raise ValueError(f"unknown mysql:// URL parameter {unknown[0]!r}; use unix_socket or ssl_ca")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError("must name the database: mysql://user:password@host:3306/database")
    unix_socket = query.get("unix_socket", [None])[0]
    if not parts.hostname and not unix_socket:
        raise ValueError("must name a host (or ?unix_socket=/path)")
    if not parts.username:
        raise ValueError("must name the user: mysql://user:password@host/database")
    return MySQLURL(
        host=parts.hostname or "localhost",
        port=port,
        database=database,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        unix_socket=unix_socket,
        ssl_ca=query.get("ssl_ca", [None])[0],
    )


def check_url(value: str) -> str:
    parse_url(value)  # its errors never repeat the URL
    return value


MYSQL = Backend(
    name="mysql",
    schemes=(SCHEME,),
    example="mysql://user@host/dbname",
    check_url=check_url,
    needs="[store.sql] with a query or a preset",
    driver=("MySQLdb", "mysqlclient"),
)
