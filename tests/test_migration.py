"""Moving from SQLite to PostgreSQL with the commands of docs/several-nodes.md loses no switch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from autoconfig.cli import main
from autoconfig.store import StoreSettings, Switches, open_store

Cli = Callable[..., Result]
SPECIAL = [
    "jörg.müller@example.net",  # UTF-8 local part (RFC 6532)
    "a+tag@example.net",
    "o'brien@example.org",
    "zz@xn--bcher-kva.example.net",
]


@pytest.fixture
def config_data(config_data: dict[str, Any]) -> dict[str, Any]:
    """The base config, also serving the IDN domain of SPECIAL (switches are stored only for served domains)."""
    config_data["provider"]["domains"].append("xn--bcher-kva.example.net")
    return config_data


def every_kind_of_account(count: int) -> list[tuple[str, Switches]]:
    """All four switch combinations, several domains, and addresses that sort or quote awkwardly."""
    addresses = [f"user{i:06d}@{('example.net', 'example.org')[i % 2]}" for i in range(count)] + SPECIAL
    return [(a, Switches(imap=i % 2 == 0, pop=i % 4 < 2)) for i, a in enumerate(addresses)]


def test_sqlite_to_csv_to_postgresql_to_csv_loses_nothing(cli: Cli, config_path: Path, pg_dsn: str) -> None:
    sqlite_url = next(line for line in config_path.read_text().splitlines() if "sqlite:///" in line).split('"')[1]
    accounts = every_kind_of_account(10_000)
    source = open_store(StoreSettings(sqlite_url))
    source.import_switches(accounts, "setup")
    source.update("late@example.net", {"pop": True}, "api:webmail")  # one written the ordinary way
    source.close()
    expected = dict(accounts) | {"late@example.net": Switches(pop=True)}

    exported = cli("accounts", "export")
    assert exported.exit_code == 0, exported.output
    csv_file = config_path.parent / "switches.csv"
    csv_file.write_text(exported.output, encoding="utf-8")

    # The same config, with the database named by the environment: docs/several-nodes.md's migration commands.
    on_postgres = {"AUTOCONFIG_DATABASE_URL": pg_dsn}
    runner = CliRunner()
    imported = runner.invoke(main, ["--config", str(config_path), "accounts", "import", str(csv_file)], env=on_postgres)
    assert imported.exit_code == 0, imported.output
    assert f"imported {len(expected)} rows" in imported.output
    again = runner.invoke(main, ["--config", str(config_path), "accounts", "export"], env=on_postgres)
    assert again.exit_code == 0, again.output

    assert again.output == exported.output  # byte for byte, in the same order
    target = open_store(StoreSettings(pg_dsn))
    try:
        assert {a.address: a.switches for a in target.accounts()} == expected
    finally:
        target.close()


def test_importing_the_same_file_twice_changes_no_stamp(pg_dsn: str) -> None:
    store = open_store(StoreSettings(pg_dsn))
    try:
        rows = every_kind_of_account(10)
        store.import_switches(rows, "import:first.csv")
        before = {a.address: a for a in store.accounts()}
        store.import_switches(rows, "import:second.csv")
        assert {a.address: a for a in store.accounts()} == before
    finally:
        store.close()
