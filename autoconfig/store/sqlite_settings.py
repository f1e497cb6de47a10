"""The ``sqlite:///`` store as the registry knows it, without loading ``sqlite.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import Backend, StoreSettings

if TYPE_CHECKING:
    from .base import Store

PREFIX = "sqlite:///"


def check_url(value: str) -> str:
    if len(value) == len(PREFIX):
        raise ValueError("must name the file: sqlite:///relative/path or sqlite:////absolute/path")
    return value


def open_sqlite(settings: StoreSettings) -> Store:
    from .sqlite import SQLiteStore

    return SQLiteStore(settings.url)


def inspect_sqlite(settings: StoreSettings) -> str:
    from .sqlite import inspect

    return inspect(settings.url)


SQLITE = Backend(
    name="sqlite",
    schemes=(PREFIX,),
    example="sqlite:///relative/path, sqlite:////absolute/path",
    check_url=check_url,
    open=open_sqlite,
    inspect=inspect_sqlite,
)
