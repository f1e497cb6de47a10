"""``accounts import`` of malformed files: exit status 1, the line and the problem named,
and nothing written (issue 17, class 8)."""

from __future__ import annotations

import codecs
import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
from click.testing import Result

from tests.support.config import BASE_CONFIG
from tests.support.gunicorn import ROOT

Cli = Callable[..., Result]
HEADER = b"address,imap,pop\n"
GOOD_ROW = b"first@example.net,on,on\n"  # every bad file starts with a good row: it must not land
LIMIT = csv.field_size_limit()

MALFORMED = {
    "Latin-1 byte": (HEADER + GOOD_ROW + b"j\xf6rg@example.net,on,off\n", "line 3: byte 2 (0xf6) is not UTF-8"),
    "byte in the header": (b"addr\xe9ss,imap,pop\n" + GOOD_ROW, "line 1: byte 5 (0xe9) is not UTF-8"),
    "truncated UTF-8 at the end": (HEADER + GOOD_ROW + b"j\xc3", "line 3: byte 2 (0xc3) is not UTF-8"),
    "a gzip file": (b"\x1f\x8b\x08\x00" + bytes(range(256)), "line 1: byte 2 (0x8b) is not UTF-8"),
    "field over the csv limit": (
        HEADER + GOOD_ROW + b"a" * (LIMIT + 1) + b"@example.net,on,off\n",
        f"line 3: a field is longer than {LIMIT} characters",
    ),
    "quoted field over the limit across lines": (
        HEADER + GOOD_ROW + b'"' + b"a\n" * (LIMIT // 2 + 1) + b'",on,off\n',
        f"lines 3-{3 + LIMIT // 2}: a field is longer than {LIMIT} characters",
    ),
    "quote never closed": (
        HEADER + GOOD_ROW + b'"b@example.net,on,off\nc@example.net,on,off\n',
        "lines 3-4: a quoted field is never closed",
    ),
    "text after a closing quote": (HEADER + GOOD_ROW + b'"b@example.net"x,on,off\n', "line 3: a quote inside"),
    "carriage return in a field": (HEADER + GOOD_ROW + b"b@exam\rple.net,on,off\n", "line 3: a carriage return"),
    "UTF-16 with its byte-order mark": (
        (HEADER + GOOD_ROW).decode().encode("utf-16"),
        "line 1: the file starts with a UTF-16 or UTF-32 byte-order mark",
    ),
    "UTF-32 with its byte-order mark": (
        (HEADER + GOOD_ROW).decode().encode("utf-32"),
        "line 1: the file starts with a UTF-16 or UTF-32 byte-order mark",
    ),
    "UTF-16 without a byte-order mark": ((HEADER + GOOD_ROW).decode().encode("utf-16-le"), "(NUL bytes"),
    "two byte-order marks": (codecs.BOM_UTF8 * 2 + HEADER + GOOD_ROW, "line 1: the header must be"),
    "empty": (b"", "line 1: the file is empty"),
    "a byte-order mark alone": (codecs.BOM_UTF8, "line 1: the line is empty"),
    "NUL in an address": (HEADER + GOOD_ROW + b"b\x00@example.net,on,off\n", "line 3: the address contains"),
    "wrong header": (b"email,imap,pop\n" + GOOD_ROW, "line 1: the header must be address,imap,pop; found 'email,"),
}


@pytest.fixture
def existing(cli: Cli) -> str:
    """One account before the import; whatever fails, the export stays exactly this."""
    assert cli("accounts", "set", "before@example.net", "--pop", "on").exit_code == 0
    exported = cli("accounts", "export")
    assert exported.exit_code == 0
    return exported.output


@pytest.mark.parametrize(("content", "says"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_file_exits_1_names_the_line_and_writes_nothing(
    cli: Cli, tmp_path: Path, existing: str, content: bytes, says: str
) -> None:
    source = tmp_path / "switches.csv"
    source.write_bytes(content)
    result = cli("accounts", "import", str(source))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not an exception
    assert result.output.startswith(f"Error: {source}: line")
    assert says in result.output
    assert cli("accounts", "export").output == existing


@pytest.mark.parametrize(
    "content",
    [
        codecs.BOM_UTF8 + HEADER + b"A@example.net,on,off\nj\xc3\xb6rg@example.net,off,on\n",
        HEADER.replace(b"\n", b"\r\n") + b"A@example.net,on,off\r\nj\xc3\xb6rg@example.net,off,on\r\n",
        codecs.BOM_UTF8 + b'"address","imap","pop"\r\n"A@example.net","on","off"\r\n"j\xc3\xb6rg@example.net",0,1',
    ],
    ids=["UTF-8 BOM (a spreadsheet's CSV UTF-8)", "CRLF", "BOM, quotes, CRLF, no final newline"],
)
def test_what_spreadsheets_write_is_read(cli: Cli, tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "switches.csv"
    source.write_bytes(content)
    result = cli("accounts", "import", str(source))
    assert result.exit_code == 0, result.output
    assert cli("accounts", "export").output == "address,imap,pop\na@example.net,on,off\njörg@example.net,off,on\n"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (HEADER + b"j\xf6rg@example.net,on,off\n", "line 2: byte 2 (0xf6) is not UTF-8"),
        (HEADER + b"a" * (LIMIT + 1) + b",on,off\n", f"line 2: a field is longer than {LIMIT} characters"),
    ],
    ids=["not UTF-8", "field over the limit"],
)
def test_the_real_command_prints_a_message_not_a_traceback(tmp_path: Path, content: bytes, says: str) -> None:
    """``python -m autoconfig`` itself, as an operator runs it (these two were tracebacks)."""
    data = {**BASE_CONFIG, "store": {"url": f"sqlite:///{tmp_path}/accounts.sqlite3"}}
    config = tmp_path / "autoconfig.toml"
    config.write_bytes(tomli_w.dumps(data).encode())
    source = tmp_path / "switches.csv"
    source.write_bytes(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOCONFIG_")}
    done = subprocess.run(
        [sys.executable, "-m", "autoconfig", "--config", str(config), "accounts", "import", str(source)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert says in done.stderr
