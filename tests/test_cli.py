"""The admin command line: same store, same gate, same documents as the web."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from flask.testing import FlaskClient

Cli = Callable[..., Result]


def test_set_then_show(cli: Cli) -> None:
    result = cli("accounts", "set", "Alice@Example.NET", "--imap", "on")
    assert result.exit_code == 0, result.output
    shown = cli("accounts", "show", "alice@example.net").output
    assert "imap: on (since" in shown and "by cli:" in shown
    assert "pop:  off" in shown


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


def test_render_of_a_disabled_account_explains_and_fails(cli: Cli) -> None:
    result = cli("render", "thunderbird", "nobody@example.net")
    assert result.exit_code == 1
    assert "enable IMAP" in result.output


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


def test_check_config_reports_ok(cli: Cli) -> None:
    result = cli("check-config")
    assert result.exit_code == 0
    assert ": OK" in result.output and "admin API: enabled" in result.output


def test_check_config_names_file_and_key(cli: Cli, config_path: Path) -> None:
    config_path.write_text(config_path.read_text().replace("port = 993", 'port = "993"'))
    result = cli("check-config")
    assert result.exit_code == 1
    assert f"{config_path}: servers.imap[0].port: expected an integer" in result.output
