"""Account stores: where the per-account IMAP/POP switches live.

``open_store(settings)`` opens the backend the ``[store]`` settings name:
by URL scheme (``sqlite:///``, ``postgresql://``), or the read-only source
whose ``[store.<name>]`` table is set (``sql``, ``ldap``), so the config (or
``AUTOCONFIG_DATABASE_URL``) is the only place that names one.

Every backend declares itself in one ``Backend`` (``settings.py``): its URL
schemes and their check, and for a source its settings type and the reader
of its table; ``registry.BACKENDS`` lists them.  A new source is one module
(its ``Backend``, with ``open`` importing its driver only when called) plus
one entry in ``BACKENDS``: tests/test_store_registry.py adds one that way.
The config reader imports ``registry.py`` only, which loads no driver and no
backend; ``*_settings.py`` beside a backend is its light half.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
from .registry import opener
from .settings import StoreSettings

__all__ = [
    "OFF",
    "SWITCHES",
    "Account",
    "Change",
    "ReadOnlyStore",
    "Store",
    "StoreError",
    "StoreReplaced",
    "StoreSettings",
    "StoreUnavailable",
    "Switches",
    "inspect_store",
    "open_store",
]


def open_store(settings: StoreSettings) -> Store:
    """Open (and create or migrate, where the backend does that) the store ``settings`` name.

    With ``settings.source`` the URL is read through that read-only source
    (an existing mail database through a SELECT, a directory through a
    filter); without it the URL names a store of this service's own.
    ``pool_size`` and ``timeout`` apply to every networked store.
    """
    open_backend, _ = opener(settings)
    return open_backend(settings)


@dataclass(frozen=True)
class StoreCheck:
    """What ``inspect_store`` found: a summary line, details (a source's expanded query), and
    why the store cannot be reached now, if it cannot."""

    summary: str
    details: tuple[str, ...] = ()
    unreachable: str | None = None


def inspect_store(settings: StoreSettings) -> StoreCheck:
    """What the store ``settings`` name holds, found without changing anything.

    ``open_store`` creates files and tables and migrates schemas; a check
    (``check-config``) must do none of that.  The read-only sources (sql,
    ldap) change nothing by design, so they are opened and asked once.
    Raises ``StoreError`` when the service would refuse the store at start.
    """
    _, inspect = opener(settings)
    try:
        if inspect is None:
            store = open_store(replace(settings, pool_size=1))
            details = tuple(store.describe())
            try:
                store.ping()
            except StoreUnavailable as exc:
                return StoreCheck(store.kind, details, str(exc))
            finally:
                store.close()
            return StoreCheck(store.kind, details)
        return StoreCheck(inspect(settings))
    except StoreUnavailable as exc:
        return StoreCheck(settings.scheme, unreachable=str(exc))
