"""The PostgreSQL store as the registry knows it, without loading psycopg until a URL is checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import Backend, StoreSettings

if TYPE_CHECKING:
    from .base import Store

SCHEMES = ("postgresql://", "postgres://")


def check_url(value: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value)
    except Exception:
        # Never echo it: a PostgreSQL URL may carry a password.
        raise ValueError("is not a valid postgresql:// connection URL (libpq rejects it)") from None
    return value


def open_postgres(settings: StoreSettings) -> Store:
    from .postgres import PostgresStore

    return PostgresStore(settings.url, pool_size=settings.pool_size, timeout=settings.timeout)


def inspect_postgres(settings: StoreSettings) -> str:
    from .postgres import inspect

    return inspect(settings.url, settings.timeout)


POSTGRESQL = Backend(
    name="postgresql",
    schemes=SCHEMES,
    example="postgresql://user@host/dbname",
    check_url=check_url,
    open=open_postgres,
    inspect=inspect_postgres,
)
