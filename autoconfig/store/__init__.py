"""Account stores: where the per-account IMAP/POP switches live.

``open_store(url)`` picks the backend from the URL scheme, so the config
(or ``AUTOCONFIG_DATABASE_URL``) is the only place that names one.
"""

from __future__ import annotations

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


def open_store(url: str, *, query: str | None = None, pool_size: int = 4, timeout: float = 2.0) -> Store:
    """Open (and create or migrate, where the backend does that) the store at ``url``.

    With ``query`` the URL is an existing mail database read through that
    SELECT (the read-only ``sql`` source) instead of the service's own table.
    ``pool_size`` and ``timeout`` apply to PostgreSQL only.
    """
    if query is not None:
        if not url.startswith(POSTGRES_SCHEMES):
            raise StoreError("the sql source needs a postgresql:// URL")
        from .sql import SQLSource

        return SQLSource(url, query, pool_size=pool_size, timeout=timeout)
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, timeout=timeout)
    raise StoreError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
