"""The read-only ``sql`` source as the registry knows it: ``[store.sql]`` read and checked without a driver.

The source reads a PostgreSQL or MySQL/MariaDB URL through one SELECT, a
hand-written ``query`` or a ``preset``'s (``presets.py``); ``sql.py`` runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from .base import StoreError
from .mysql_settings import MYSQL
from .postgres_settings import POSTGRESQL
from .presets import SQL_PRESETS
from .settings import Backend, SourceSettings, StoreSettings
from .source import check_parameters

if TYPE_CHECKING:
    from .base import Store
    from .settings import Table

DIALECTS = {"postgresql": POSTGRESQL.schemes, "mysql": MYSQL.schemes}


@dataclass(frozen=True)
class SQLSettings(SourceSettings):
    """``[store.sql]``, checked; ``preset`` names the preset the query came from, if any."""

    name: ClassVar[str] = "sql"
    query: str
    preset: str | None = None


def check_query(query: str) -> str:
    """Reject, at config time, a query that cannot be the one SELECT this source runs."""
    text = query.strip().rstrip(";").strip()
    if not re.match(r"(?is)^(select|with)\b", text):
        raise ValueError("must be one SELECT statement (it may start with WITH)")
    if ";" in text:
        raise ValueError("must be a single statement: remove the ';' inside it")
    check_parameters(text, percent_note=" (the query is a parameterised query)")
    return text


def dialect(url: str) -> str:
    """Which SQL database a URL names: "postgresql" or "mysql"."""
    for name, schemes in DIALECTS.items():
        if url.startswith(schemes):
            return name
    raise StoreError("the sql source needs a postgresql:// or mysql:// URL")


def read(table: Table, env: Mapping[str, str], base: Path) -> SQLSettings:
    """``[store.sql]``: a hand-written ``query`` or a ``preset``, never both."""
    if table.has("query") and table.has("preset"):
        raise table.error(table.key("preset"), "a preset and a hand-written query are mutually exclusive; keep one")
    if table.has("preset"):
        preset = table.string("preset", choices=tuple(SQL_PRESETS))
        table.finish()
        return SQLSettings(SQL_PRESETS[preset].query, preset)
    query = table.string("query", check=check_query, multiline=True)
    table.finish()
    return SQLSettings(query)


def check(settings: StoreSettings, store: Table) -> None:
    """A preset is written for some databases only."""
    source = settings.source
    if not isinstance(source, SQLSettings) or source.preset is None:
        return
    preset = SQL_PRESETS[source.preset]
    if dialect(settings.url) not in preset.dialects:
        raise store.error(
            f"{store.key(SQLSettings.name)}.preset", f"{preset.name} is for {' or '.join(preset.dialects)} databases"
        )


def open_sql(settings: StoreSettings) -> Store:
    from .sql import SQLSource

    source = settings.source
    if not isinstance(source, SQLSettings):
        raise StoreError("the sql source needs [store.sql] settings")
    return SQLSource(
        settings.url, source.query, pool_size=settings.pool_size, timeout=settings.timeout, preset=source.preset
    )


SQL = Backend(
    name=SQLSettings.name,
    open=open_sql,
    read=read,
    reads=(*POSTGRESQL.schemes, *MYSQL.schemes),
    reads_words="a postgresql:// or mysql:// URL",
    check=check,
)
