"""Account stores: where the per-account IMAP/POP switches live.

``open_store(url)`` picks the backend from the URL scheme, so the config
(or ``AUTOCONFIG_DATABASE_URL``) is the only place that names one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import (
    OFF,
    SWITCHES,
    Account,
    Change,
    ReadOnlyStore,
    Store,
    StoreError,
    StoreReplaced,
    StoreUnavailable,
    Switches,
)

if TYPE_CHECKING:
    from .ldapfilter import LDAPSettings

__all__ = [
    "OFF",
    "SWITCHES",
    "Account",
    "Change",
    "ReadOnlyStore",
    "Store",
    "StoreError",
    "StoreReplaced",
    "StoreUnavailable",
    "Switches",
    "inspect_store",
    "open_store",
]


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQL_SOURCE_SCHEMES = (*POSTGRES_SCHEMES, "mysql://")
LDAP_SCHEMES = ("ldap://", "ldaps://")


def open_store(
    url: str,
    *,
    query: str | None = None,
    preset: str | None = None,
    ldap: LDAPSettings | None = None,
    pool_size: int = 4,
    timeout: float = 2.0,
) -> Store:
    """Open (and create or migrate, where the backend does that) the store at ``url``.

    With ``query`` the URL is an existing mail database (PostgreSQL or
    MySQL/MariaDB) read through that SELECT: the read-only ``sql`` source;
    ``preset`` only names where the query came from.  With ``ldap`` the URL
    is a directory read with those settings: the read-only ``ldap`` source.
    ``pool_size`` and ``timeout`` apply to every networked store.
    """
    if ldap is not None:
        if not url.startswith(LDAP_SCHEMES):
            raise StoreError("the ldap source needs an ldap:// or ldaps:// URL")
        _require_driver("ldap", "python-ldap", "ldap://")
        from .ldap import LDAPSource

        return LDAPSource(url, ldap, pool_size=pool_size, timeout=timeout)
    if query is not None:
        if not url.startswith(SQL_SOURCE_SCHEMES):
            raise StoreError("the sql source needs a postgresql:// or mysql:// URL")
        if url.startswith("mysql://"):
            _require_driver("MySQLdb", "mysqlclient", "mysql://")
        from .sql import SQLSource

        return SQLSource(url, query, pool_size=pool_size, timeout=timeout, preset=preset)
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, timeout=timeout)
    raise _unsupported(url)


def _unsupported(url: str) -> StoreError:
    """Why ``url`` names no store of its own."""
    scheme = url.split(":", 1)[0]
    if url.startswith(("mysql://", *LDAP_SCHEMES)):
        return StoreError(f"a {scheme}:// URL is a read-only source: it needs [store.sql] or [store.ldap]")
    return StoreError(f"unsupported store URL scheme: {scheme!r}")


def _require_driver(module: str, package: str, scheme: str) -> None:
    """The MySQL and LDAP drivers build from source against C libraries, so they are not in
    requirements.txt (the demo and SQLite/PostgreSQL need neither): say how to get them."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise StoreError(
            f"{scheme} needs the {package} package, which is not installed: install Debian's "
            "libmariadb-dev libldap2-dev libsasl2-dev pkg-config, then "
            "pip install -r requirements-sources.txt"
        )


@dataclass(frozen=True)
class StoreCheck:
    """What ``inspect_store`` found: a summary line, details (a source's expanded query), and
    why the store cannot be reached now, if it cannot."""

    summary: str
    details: tuple[str, ...] = ()
    unreachable: str | None = None


def inspect_store(
    url: str,
    *,
    query: str | None = None,
    preset: str | None = None,
    ldap: LDAPSettings | None = None,
    timeout: float = 2.0,
) -> StoreCheck:
    """What the store at ``url`` holds, found without changing anything.

    ``open_store`` creates files and tables and migrates schemas; a check
    (``check-config``) must do none of that.  The read-only sources (sql,
    ldap) change nothing by design, so they are opened and asked once.
    Raises ``StoreError`` when the service would refuse the store at start.
    """
    try:
        if query is not None or ldap is not None:
            store = open_store(url, query=query, preset=preset, ldap=ldap, pool_size=1, timeout=timeout)
            details = tuple(store.describe())
            try:
                store.ping()
            except StoreUnavailable as exc:
                return StoreCheck(store.kind, details, str(exc))
            finally:
                store.close()
            return StoreCheck(store.kind, details)
        if url.startswith("sqlite:///"):
            from .sqlite import inspect

            return StoreCheck(inspect(url))
        if url.startswith(POSTGRES_SCHEMES):
            from .postgres import inspect as inspect_postgres

            return StoreCheck(inspect_postgres(url, timeout))
    except StoreUnavailable as exc:
        return StoreCheck(url.split(":", 1)[0], unreachable=str(exc))
    raise _unsupported(url)
