"""The admin command line: same store, same gate, same documents as the web."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient

from autoconfig.cli import EXIT_COULD_NOT_CHECK, main
from autoconfig.config import ENV_DATABASE_URL
from autoconfig.store import StoreSettings, Switches, open_store
from autoconfig.store.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from tests.support.ports import free_port

Cli = Callable[..., Result]
WriteConfig = Callable[..., Path]


def test_set_then_show(cli: Cli) -> None:
    result = cli("accounts", "set", "Alice@Example.NET", "--imap", "on")
    assert result.exit_code == 0, result.output
    shown = cli("accounts", "show", "alice@example.net").output
    assert "imap: on (since" in shown and "by cli:" in shown
    assert "pop:  off" in shown


def test_set_refuses_an_address_in_a_domain_not_served(cli: Cli) -> None:
    result = cli("accounts", "set", "alice@example.nte", "--imap", "on")
    assert result.exit_code == 1
    assert "example.nte is not a domain this service answers for" in result.output
    assert cli("accounts", "list").output == ""


def test_import_refuses_a_file_with_an_address_in_a_domain_not_served(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "switches.csv"
    source.write_text("address,imap,pop\na@example.net,on,off\nb@example.nte,on,off\n")
    result = cli("accounts", "import", str(source))
    assert result.exit_code == 1
    assert f"{source}: line 3: example.nte is not a domain this service answers for" in result.output
    assert cli("accounts", "list").output == ""


def test_set_needs_a_switch_and_a_valid_address(cli: Cli) -> None:
    assert cli("accounts", "set", "alice@example.net").exit_code == 2
    result = cli("accounts", "set", "not-an-address", "--imap", "on")
    assert result.exit_code == 2 and "exactly one @" in result.output


def test_render_prints_what_the_client_gets(cli: Cli, client: FlaskClient) -> None:
    assert cli("render", "thunderbird", "alice@example.net").exit_code == 1
    cli("accounts", "set", "alice@example.net", "--imap", "on")
    result = cli("render", "thunderbird", "alice@example.net")
    assert result.exit_code == 0
    served = client.get("/mail/config-v1.1.xml?emailaddress=alice@example.net").data
    assert result.output.encode() == served
    assert '<incomingServer type="imap">' in result.output and "pop3" not in result.output


def test_render_of_a_disabled_account_explains_and_fails(cli: Cli, client: FlaskClient) -> None:
    result = cli("render", "thunderbird", "nobody@example.net")
    assert result.exit_code == 1
    assert "enable IMAP" in result.output
    # The very text the 404 carries, setup page included.
    served = client.get("/mail/config-v1.1.xml?emailaddress=nobody@example.net")
    assert served.status_code == 404
    assert result.output == served.get_data(as_text=True)


def test_list_and_domain_filter(cli: Cli) -> None:
    cli("accounts", "set", "b@example.org", "--pop", "on")
    cli("accounts", "set", "a@example.net", "--imap", "on")
    assert cli("accounts", "list").output.splitlines() == [
        "a@example.net\timap=on\tpop=off",
        "b@example.org\timap=off\tpop=on",
    ]
    assert cli("accounts", "list", "--domain", "EXAMPLE.org").output.splitlines() == ["b@example.org\timap=off\tpop=on"]


def test_import_then_export_round_trips(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "switches.csv"
    source.write_text("address,imap,pop\nA@example.net,on,off\nb@example.net,false,true\nc@example.org,1,1\n")
    result = cli("accounts", "import", str(source))
    assert result.exit_code == 0, result.output
    assert cli("accounts", "export").output == (
        "address,imap,pop\na@example.net,on,off\nb@example.net,off,on\nc@example.org,on,on\n"
    )


def test_import_says_what_it_changed(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "switches.csv"
    source.write_text("address,imap,pop\na@example.net,on,off\nb@example.net,off,on\n")
    first = cli("accounts", "import", str(source))
    assert first.output == f"imported 2 rows from {source}: 2 created or changed, 0 already as in the file\n"
    again = cli("accounts", "import", str(source))
    assert again.output == f"imported 2 rows from {source}: 0 created or changed, 2 already as in the file\n"
    source.write_text("address,imap,pop\na@example.net,on,on\nb@example.net,off,on\n")
    changed = cli("accounts", "import", str(source))
    assert changed.output == f"imported 2 rows from {source}: 1 created or changed, 1 already as in the file\n"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("email,imap,pop\na@example.net,on,off\n", "line 1: the header"),
        ("address,imap,pop\na@example.net,on,off\nbad-address,on,off\n", "line 3: the address must contain"),
        ("address,imap,pop\na@example.net,on,maybe\n", "line 2: column pop"),
        ("address,imap,pop\na@example.net,on\n", "line 2: expected 3 columns"),
        (
            "address,imap,pop\na@example.net,on,off\nA@EXAMPLE.net,off,off\n",
            "line 3: a@example.net already appears on line 2",
        ),
    ],
)
def test_a_bad_row_rejects_the_whole_file_and_names_the_row(cli: Cli, tmp_path: Path, content: str, says: str) -> None:
    source = tmp_path / "switches.csv"
    source.write_text(content)
    result = cli("accounts", "import", str(source))
    assert result.exit_code == 1
    assert says in result.output
    assert cli("accounts", "list").output == ""


def test_check_config_reports_ok(cli: Cli, config_path: Path) -> None:
    result = cli("check-config")
    assert result.exit_code == 0
    assert "admin API: enabled" in result.output
    assert result.output.splitlines()[-1] == f"{config_path}: OK"


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_check_config_creates_no_sqlite_file_nor_its_directory(
    tmp_path: Path, config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    state = tmp_path / "var" / "lib" / "autoconfig"
    config_data["store"]["url"] = f"sqlite:///{state}/accounts.sqlite3"
    result = CliRunner().invoke(main, ["--config", str(write_config(config_data)), "check-config"], env={})
    assert result.exit_code == 0, result.output
    assert f"sqlite {state}/accounts.sqlite3 (not created yet" in result.output
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("in_use", [False, True], ids=["idle", "in-use"])
def test_check_config_reads_an_existing_sqlite_file_without_touching_it(
    tmp_path: Path, config_data: dict[str, Any], write_config: WriteConfig, in_use: bool
) -> None:
    url = config_data["store"]["url"]
    store = open_store(StoreSettings(url))
    store.import_switches([("a@example.net", Switches(imap=True)), ("b@example.net", Switches(pop=True))], "t")
    if not in_use:
        store.close()  # the last connection out removes the -wal file
    config = write_config(config_data, "checked.toml")
    before = _tree(tmp_path)
    try:
        result = CliRunner().invoke(main, ["--config", str(config), "check-config"], env={})
        after = _tree(tmp_path)
    finally:
        store.close()
    assert result.exit_code == 0, result.output
    assert "(2 accounts)" in result.output
    assert ("accounts.sqlite3-wal" in before) is in_use
    assert after.keys() == before.keys()
    # -shm is the shared memory in which every reader of a file in use marks what it reads.
    assert {k: v for k, v in after.items() if not k.endswith("-shm")} == {
        k: v for k, v in before.items() if not k.endswith("-shm")
    }


def test_check_config_refuses_a_sqlite_file_from_a_newer_release(cli: Cli, config_data: dict[str, Any]) -> None:
    path = Path(config_data["store"]["url"].removeprefix("sqlite:///"))
    with closing(sqlite3.connect(path)) as newer:
        newer.execute("PRAGMA user_version = 99")
    result = cli("check-config")
    assert result.exit_code == 1
    assert "schema version 99 is newer" in result.output and "OK" not in result.output


def test_check_config_says_ok_only_once_everything_is_checked(cli: Cli, config_path: Path) -> None:
    config_path.write_text(
        config_path.read_text() + '[apple]\nsigning_certificate = "missing.pem"\nsigning_key = "missing.key"\n'
    )
    result = cli("check-config")
    assert result.exit_code == 1
    assert "apple.signing_certificate" in result.output
    assert "OK" not in result.output


def test_check_config_names_file_and_key(cli: Cli, config_path: Path) -> None:
    config_path.write_text(config_path.read_text().replace("port = 993", 'port = "993"'))
    result = cli("check-config")
    assert result.exit_code == 1
    assert f"{config_path}: servers.imap[0].port: expected an integer" in result.output


def _check(config_data: dict[str, Any], write_config: WriteConfig, database_url: str) -> Result:
    config = write_config(config_data)
    return CliRunner().invoke(main, ["--config", str(config), "check-config"], env={ENV_DATABASE_URL: database_url})


def test_check_config_neither_creates_nor_migrates_postgresql_tables(
    pg_dsn: str, config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    result = _check(config_data, write_config, pg_dsn)
    assert result.exit_code == 0, result.output
    assert "store:    postgresql (no tables yet: the service creates them at start)" in result.output
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    open_store(StoreSettings(pg_dsn)).close()
    assert f"store:    postgresql (schema {PG_SCHEMA_VERSION})" in _check(config_data, write_config, pg_dsn).output


def test_check_config_with_postgresql_down_is_a_warning_not_a_refusal(
    config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    result = _check(config_data, write_config, f"postgresql://autoconfig@127.0.0.1:{free_port()}/autoconfig")
    assert result.exit_code == EXIT_COULD_NOT_CHECK
    assert "store:    postgresql, cannot be reached now: PostgreSQL:" in result.output
    assert result.output.splitlines()[-1].endswith(
        ": OK, but the store cannot be reached now; the service would start and answer 503"
    )
