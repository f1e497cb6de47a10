"""Thunderbird autoconfig, checked against what Thunderbird's parser requires
(see ../shared/design/protocols.md, "Thunderbird")."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from lxml import etree

from tests.support.admin import Admin
from tests.support.config import WEBMAIL_URL
from tests.support.fixture_types import MakeApp
from tests.support.promises import CACHE_CONTROL, THUNDERBIRD_PATHS

REQUIRED_SERVER_CHILDREN = ["hostname", "port", "socketType", "authentication", "username"]
SWITCH_CASES = [
    # imap,  pop,   incoming server types in document order
    (True, False, ["imap"]),
    (False, True, ["pop3"]),
    (True, True, ["imap", "pop3"]),
]


def fetch(client: FlaskClient, address: str, path: str = THUNDERBIRD_PATHS[0]) -> tuple[int, dict[str, str], bytes]:
    response = client.get(path, query_string={"emailaddress": address})
    return response.status_code, dict(response.headers), response.data


def parse_client_config(body: bytes) -> etree._Element:
    """Parse as Thunderbird does and check every element it requires."""
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id")
    assert provider.findall("domain"), "at least one <domain>"
    for server in provider.findall("incomingServer") + provider.findall("outgoingServer"):
        assert [child.tag for child in server][:5] == REQUIRED_SERVER_CHILDREN
        assert 1 <= int(server.findtext("port", "0")) <= 65535
        assert server.findtext("socketType") in ("SSL", "STARTTLS")
    assert [s.get("type") for s in provider.findall("outgoingServer")] == ["smtp", "smtp"]
    return provider


@pytest.mark.parametrize("path", THUNDERBIRD_PATHS)
@pytest.mark.parametrize(("imap", "pop", "types"), SWITCH_CASES)
def test_document_shows_exactly_the_enabled_incoming_servers(
    client: FlaskClient, admin: Admin, path: str, imap: bool, pop: bool, types: list[str]
) -> None:
    admin.set("alice@example.net", imap=imap, pop=pop)
    status, headers, body = fetch(client, "alice@example.net", path)
    assert status == 200
    assert headers["Content-Type"].startswith("application/xml")
    assert headers["Cache-Control"] == CACHE_CONTROL
    provider = parse_client_config(body)
    assert [s.get("type") for s in provider.findall("incomingServer")] == types
    assert provider.findtext("incomingServer/username") == "%EMAILADDRESS%"


def test_servers_carry_the_configured_endpoints(client: FlaskClient, admin: Admin) -> None:
    admin.set("alice@example.net", imap=True, pop=True)
    provider = parse_client_config(fetch(client, "alice@example.net")[2])
    endpoints = [
        (s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in provider.findall("incomingServer") + provider.findall("outgoingServer")
    ]
    assert endpoints == [
        ("imap.example.net", "993", "SSL"),
        ("pop.example.net", "995", "SSL"),
        ("smtp.example.net", "465", "SSL"),
        ("smtp.example.net", "587", "STARTTLS"),
    ]
    assert [d.text for d in provider.findall("domain")] == ["example.net", "example.org"]


@pytest.mark.parametrize("path", THUNDERBIRD_PATHS)
def test_nothing_enabled_gets_404_with_the_way_forward(client: FlaskClient, admin: Admin, path: str) -> None:
    admin.set("bob@example.net", imap=False, pop=False)
    status, headers, body = fetch(client, "bob@example.net", path)
    assert status == 404
    assert headers["Content-Type"].startswith("text/plain")
    assert WEBMAIL_URL.encode() in body and b"enable IMAP" in body


@pytest.mark.parametrize("path", THUNDERBIRD_PATHS)
def test_unknown_and_disabled_addresses_are_byte_identical(client: FlaskClient, admin: Admin, path: str) -> None:
    admin.set("bob@example.net", imap=True, pop=True)
    admin.set("bob@example.net", imap=False, pop=False)  # existed, had things on, now off
    assert fetch(client, "bob@example.net", path) == fetch(client, "never-seen@example.net", path)


def test_the_same_account_however_it_is_spelled(client: FlaskClient, admin: Admin) -> None:
    admin.set("Alice@Example.NET", imap=True)
    assert fetch(client, "ALICE@example.net")[0] == 200


def test_idn_domain_is_served_in_its_ascii_form(config_data: dict[str, Any], make_app: MakeApp) -> None:
    config_data["provider"]["domains"] = ["bücher.example"]
    app = make_app(config_data)
    client = app.test_client()
    Admin(client).set("user@BÜCHER.example", imap=True)
    provider = parse_client_config(fetch(client, "user@xn--bcher-kva.example")[2])
    assert [d.text for d in provider.findall("domain")] == ["xn--bcher-kva.example"]
    assert fetch(client, "user@bücher.example")[0] == 200
    assert fetch(client, "user@b\u00fccher.invalid-\u2665.example")[0] == 400


def test_a_switch_flip_shows_on_the_very_next_request(client: FlaskClient, admin: Admin) -> None:
    assert fetch(client, "carol@example.net")[0] == 404
    admin.set("carol@example.net", pop=True)
    assert fetch(client, "carol@example.net")[0] == 200
    admin.set("carol@example.net", pop=False)
    assert fetch(client, "carol@example.net")[0] == 404


def test_document_never_echoes_the_address(client: FlaskClient, admin: Admin) -> None:
    admin.set("dave+x@example.net", imap=True)
    assert b"dave" not in fetch(client, "dave+x@example.net")[2]


# -- requests without an address (Thunderbird for Android leaves it out by default) -------------

SETUP_URL = b"https://autoconfig.example.net/setup"


def fetch_without_address(client: FlaskClient, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    response = client.get(path, **kwargs)
    return response.status_code, dict(response.headers), response.data


@pytest.mark.parametrize("path", THUNDERBIRD_PATHS)
def test_a_request_without_an_address_is_declined_like_an_unknown_address(
    client: FlaskClient, admin: Admin, path: str
) -> None:
    admin.set("bob@example.net", imap=True, pop=True)
    admin.set("bob@example.net", imap=False, pop=False)
    addressless = fetch_without_address(client, path)
    assert addressless == fetch(client, "never-seen@example.net", path) == fetch(client, "bob@example.net", path)
    status, headers, _ = addressless
    assert status == 404 and headers["Content-Type"].startswith("text/plain")
    assert headers["Cache-Control"] == CACHE_CONTROL


@pytest.mark.parametrize("path", THUNDERBIRD_PATHS)
def test_the_decline_points_to_the_setup_page_and_names_no_account(
    client: FlaskClient, admin: Admin, path: str
) -> None:
    admin.set("alice@example.net", imap=True, pop=True)  # someone has settings; the answer must not hint at it
    _, _, body = fetch_without_address(client, path, headers={"Host": "evil.example"})
    assert SETUP_URL + b"\n" in body and WEBMAIL_URL.encode() in body
    for specific in (b"@", b"emailaddress", b"alice", b"imap.example.net", b"smtp.example.net", b"evil"):
        assert specific not in body


@pytest.mark.parametrize("query", ["emailaddress=", "emailaddress=alice@example.net&emailaddress="])
def test_an_empty_or_repeated_address_is_still_malformed(client: FlaskClient, query: str) -> None:
    """Only an absent parameter is "no address": an empty one is a client bug, and says so."""
    assert client.get(THUNDERBIRD_PATHS[0], query_string=query).status_code == 400
