"""Choosing the store in the config: SQLite, PostgreSQL, or the read-only sql source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoconfig.config import ConfigError, load
from autoconfig.store.sql_settings import SQLSettings

Write = Callable[[dict[str, Any]], Path]
QUERY = "SELECT enableimap = 1, enablepop3 = 1 FROM mailbox WHERE username = %(address)s"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://autoconfig:secret@db.example.net:5432/autoconfig",
        "postgres://autoconfig@db.example.net/autoconfig",
        "postgresql:///autoconfig?host=/run/postgresql",
    ],
)
def test_postgresql_urls_are_accepted_from_the_file_and_the_environment(
    config_data: dict[str, Any], write_config: Write, url: str
) -> None:
    config_data["store"]["url"] = url
    assert load(write_config(config_data), env={}).store.url == url
    config_data["store"]["url"] = "sqlite:///file.sqlite3"
    assert load(write_config(config_data), env={"AUTOCONFIG_DATABASE_URL": url}).store.url == url


def test_a_broken_postgresql_url_is_named_but_never_echoed(config_data: dict[str, Any], write_config: Write) -> None:
    config_data["store"]["url"] = "postgresql://autoconfig:hunter2-secret@db.example.net/x?nonsense=1"
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: store.url: ")
    assert "hunter2" not in str(error.value)
    config_data["store"]["url"] = "sqlite:///file.sqlite3"
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={"AUTOCONFIG_DATABASE_URL": "postgres://u:hunter2-secret@[::1/d"})
    assert str(error.value).startswith("AUTOCONFIG_DATABASE_URL: ")
    assert "hunter2" not in str(error.value)


def test_pool_settings_have_defaults(config: Any) -> None:
    assert (config.store.pool_size, config.store.timeout, config.store.source) == (4, 2, None)


@pytest.mark.parametrize(
    ("store", "named", "says"),
    [
        ({"pool_size": 0}, "store.pool_size", "between 1 and 100"),
        ({"timeout": 60}, "store.timeout", "between 1 and 30"),
        ({"timeout": 1.5}, "store.timeout", "expected an integer"),
        ({"sql": {}}, "store.sql.query", "is required"),
        ({"sql": {"query": QUERY, "columns": 2}}, "store.sql.columns", "unknown option"),
    ],
)
def test_bad_store_options_name_the_key(
    config_data: dict[str, Any], write_config: Write, store: dict[str, Any], named: str, says: str
) -> None:
    config_data["store"].update(store)
    config_data["store"]["url"] = "postgresql://autoconfig@db.example.net/mail"
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: {named}: ")
    assert says in str(error.value)


def test_the_sql_source_is_configured_with_a_query(config_data: dict[str, Any], write_config: Write) -> None:
    config_data["store"] = {"url": "postgresql://mailreader@db.example.net/vmail", "sql": {"query": QUERY}}
    assert load(write_config(config_data), env={}).store.source == SQLSettings(QUERY)


def test_a_missing_source_driver_is_named_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """mysqlclient and python-ldap are not in requirements.txt: a start without them says what to do."""
    import importlib.util

    from autoconfig.store import StoreError, StoreSettings, open_store

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("MySQLdb", "ldap") else real_find_spec(name, *a)
    )
    with pytest.raises(StoreError, match=r"mysql:// needs the mysqlclient package.*requirements-sources.txt"):
        open_store(StoreSettings("mysql://reader@127.0.0.1/vmail", source=SQLSettings("SELECT 1, 1")))
