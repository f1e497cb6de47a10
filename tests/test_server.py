"""End to end through the real gunicorn server on a loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from autoconfig.web.pages import HTML_HEADERS
from tests.support.admin import LiveAdmin
from tests.support.config import ADMIN_TOKEN
from tests.support.fixture_types import MakeServer
from tests.support.gunicorn import ROOT, GunicornServer, http
from tests.support.ports import wait_for
from tests.support.promises import APPLE_PATHS as APPLE_PROFILE_PATHS
from tests.support.promises import CACHE_CONTROL, THUNDERBIRD_PATHS


def incoming_types(server: GunicornServer, address: str) -> list[str] | None:
    status, _, body = http("GET", f"{server.url}/mail/config-v1.1.xml?emailaddress={address}")
    if status == 404:
        return None
    assert status == 200
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    return [s.get("type", "") for s in root.iterfind("emailProvider/incomingServer")]


def test_switches_flipped_through_the_api_change_the_document(server: GunicornServer) -> None:
    assert incoming_types(server, "alice@example.net") is None
    LiveAdmin(server).set("alice@example.net", imap=True)
    assert incoming_types(server, "alice@example.net") == ["imap"]
    LiveAdmin(server).set("alice@example.net", imap=False, pop=True)
    assert incoming_types(server, "alice@example.net") == ["pop3"]
    LiveAdmin(server).set("alice@example.net", pop=False)
    assert incoming_types(server, "alice@example.net") is None


def test_unknown_and_disabled_are_identical_on_the_wire(server: GunicornServer) -> None:
    LiveAdmin(server).set("bob@example.net", imap=True)
    LiveAdmin(server).set("bob@example.net", imap=False)

    def answer(address: str) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = http("GET", f"{server.url}/mail/config-v1.1.xml?emailaddress={address}")
        headers.pop("Date")
        return status, headers, body

    assert answer("bob@example.net") == answer("zed@example.net")


def test_credentials_never_reach_the_log(server: GunicornServer) -> None:
    secret = "c2VjcmV0LXVzZXI6aHVudGVyMg=="
    http(
        "GET",
        f"{server.url}/mail/config-v1.1.xml?emailaddress=a@example.net",
        headers={"Authorization": f"Basic {secret}"},
    )
    http("GET", f"{server.url}/admin/v1/accounts/a@example.net", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    http(
        "GET",
        f"{server.url}/admin/v1/accounts/a@example.net",
        headers={"Authorization": "Bearer wrong-but-secret-xyz"},
    )
    # The access log is on: wait until gunicorn has written the last request's line.
    written = '"GET /admin/v1/accounts/a@example.net HTTP/1.1" 401'
    wait_for(lambda: written in server.log_text(), timeout=5, what="the access log line")
    log = server.log_text()
    for credential in (secret, ADMIN_TOKEN, "wrong-but-secret-xyz"):
        assert credential not in log


# Longer than gunicorn's default limit (4094 bytes), within the limit config/gunicorn.conf.py sets.
LONG_QUERY = "emailaddress=alice@example.net&x=" + "y" * 6000


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (THUNDERBIRD_PATHS[0], {"Cache-Control": CACHE_CONTROL}),
        (APPLE_PROFILE_PATHS[0], dict(HTML_HEADERS)),
        ("/setup", dict(HTML_HEADERS)),
    ],
)
def test_a_long_request_line_is_the_apps_414_with_the_usual_headers(
    server: GunicornServer, path: str, headers: dict[str, str]
) -> None:
    status, got, body = http("GET", f"{server.url}{path}?{LONG_QUERY}")
    assert status == 414
    for name, value in {**headers, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}.items():
        assert got[name] == value
    assert b"query string is longer than" in body


def test_healthz(server: GunicornServer) -> None:
    status, _, body = http("GET", f"{server.url}/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "checks": {"store": "ok"}}


def test_another_config_and_database_from_the_environment(
    config_path: Path, tmp_path: Path, make_server: MakeServer
) -> None:
    """The issue's 'done when': the CLI switches IMAP on, the server shows IMAP and SMTP only."""
    env = {
        **os.environ,
        "AUTOCONFIG_CONFIG": str(config_path),
        "AUTOCONFIG_DATABASE_URL": f"sqlite:///{tmp_path}/other.db",
    }
    subprocess.run(
        [sys.executable, "-m", "autoconfig", "accounts", "set", "a@example.net", "--imap", "on"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    server_env = {"AUTOCONFIG_DATABASE_URL": env["AUTOCONFIG_DATABASE_URL"]}
    server = make_server(config_path, env=server_env, log="other.log")
    status, _, body = http("GET", f"{server.url}/mail/config-v1.1.xml?emailaddress=a@example.net")
    assert status == 200
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert [s.get("type") for s in root.iterfind(".//incomingServer")] == ["imap"]
    assert {s.get("type") for s in root.iterfind(".//outgoingServer")} == {"smtp"}
    assert http("GET", f"{server.url}/mail/config-v1.1.xml?emailaddress=b@example.net")[0] == 404
    assert (tmp_path / "other.db").exists()
