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


def open_store(url: str) -> Store:
    """Open (and create or migrate, where the backend does that) the store at ``url``."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    raise StoreError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
