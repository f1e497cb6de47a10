"""Account stores: where the per-account IMAP/POP switches live.

``open_store(url)`` picks the backend from the URL scheme, so the config
(or ``AUTOCONFIG_DATABASE_URL``) is the only place that names one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    OFF,
    SWITCHES,
    Account,
    Change,
    ReadOnlyStore,
    Store,
    StoreError,
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
    "StoreUnavailable",
    "Switches",
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
    if url.startswith(("mysql://", *LDAP_SCHEMES)):
        raise StoreError(f"a {url.split(':', 1)[0]}:// URL is a read-only source: it needs [store.sql] or [store.ldap]")
    raise StoreError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")


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
