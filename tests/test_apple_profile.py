"""Apple configuration profiles, checked against Apple's own schema
(tests/data/apple_schema, a copy of ../shared/schemas/apple) and against
what devices need to replace rather than duplicate an installed profile
(see ../shared/design/protocols.md, "Apple")."""

from __future__ import annotations

import plistlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from autoconfig import policy
from autoconfig.address import parse_address
from autoconfig.config import load
from autoconfig.formats import apple
from autoconfig.store import Switches
from tests.support.admin import Admin
from tests.support.apple_schema import assert_valid_profile
from tests.support.config import WEBMAIL_URL
from tests.support.fixture_types import MakeApp
from tests.support.promises import APPLE_CONTENT_TYPE, CACHE_CONTROL
from tests.support.promises import APPLE_PATHS as APPLE_PROFILE_PATHS

PASSWORD_KEYS = {"IncomingPassword", "OutgoingPassword"}


def fetch(client: FlaskClient, address: str, path: str = APPLE_PROFILE_PATHS[0]) -> tuple[int, dict[str, str], bytes]:
    response = client.get(path, query_string={"emailaddress": address})
    return response.status_code, dict(response.headers), response.data


def load_profile(body: bytes) -> dict[str, Any]:
    """Parse a profile as a device would, and hold it to Apple's schema."""
    profile: dict[str, Any] = plistlib.loads(body, fmt=plistlib.FMT_XML)
    assert_valid_profile(profile)
    assert len(profile["PayloadContent"]) == 1
    assert not PASSWORD_KEYS & set(profile["PayloadContent"][0]), "never a password"
    return profile


def mail_payload(client: FlaskClient, address: str) -> dict[str, Any]:
    status, _, body = fetch(client, address)
    assert status == 200, body
    payload: dict[str, Any] = load_profile(body)["PayloadContent"][0]
    return payload


def endpoint(payload: dict[str, Any], direction: str) -> tuple[str, int]:
    """(host, port) of the ``Incoming`` or ``Outgoing`` server."""
    return payload[f"{direction}MailServerHostName"], payload[f"{direction}MailServerPortNumber"]


def identifiers(client: FlaskClient, address: str) -> list[str]:
    profile = load_profile(fetch(client, address)[2])
    payload = profile["PayloadContent"][0]
    return [profile["PayloadIdentifier"], profile["PayloadUUID"], payload["PayloadIdentifier"], payload["PayloadUUID"]]


@pytest.mark.parametrize("path", APPLE_PROFILE_PATHS)
@pytest.mark.parametrize(
    ("imap", "pop", "account_type", "host", "port"),
    [
        (True, False, "EmailTypeIMAP", "imap.example.net", 993),
        (False, True, "EmailTypePOP", "pop.example.net", 995),
        (True, True, "EmailTypeIMAP", "imap.example.net", 993),  # one incoming server per payload: IMAP wins
    ],
)
def test_profile_has_one_mail_payload_for_the_enabled_protocol(
    client: FlaskClient, admin: Admin, path: str, imap: bool, pop: bool, account_type: str, host: str, port: int
) -> None:
    admin.set("alice@example.net", imap=imap, pop=pop)
    status, headers, body = fetch(client, "alice@example.net", path)
    assert status == 200
    assert headers["Content-Type"] == APPLE_CONTENT_TYPE
    assert headers["Content-Disposition"] == 'attachment; filename="example.net-mail.mobileconfig"'
    assert headers["Cache-Control"] == CACHE_CONTROL
    profile = load_profile(body)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    payload = profile["PayloadContent"][0]
    assert payload["PayloadType"] == "com.apple.mail.managed"
    assert payload["EmailAccountType"] == account_type
    assert endpoint(payload, "Incoming") == (host, port)
    assert payload["IncomingMailServerUseSSL"] is True
    assert payload["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    assert payload["IncomingMailServerUsername"] == "alice@example.net"
    # SMTP: the implicit-TLS submission server is preferred over the STARTTLS one.
    assert endpoint(payload, "Outgoing") == ("smtp.example.net", 465)
    assert payload["OutgoingMailServerUseSSL"] is True
    assert payload["OutgoingMailServerUsername"] == "alice@example.net"
    assert payload["OutgoingPasswordSameAsIncomingPassword"] is True
    assert payload["EmailAddress"] == "alice@example.net"


def test_config_choices_reach_the_profile(config_data: dict[str, Any], make_app: MakeApp) -> None:
    config_data["servers"]["imap"] = [
        {"host": "imap.example.net", "port": 143, "socket": "STARTTLS", "username": "local-part"},
        {"host": "imap2.example.net", "port": 993, "socket": "SSL", "authentication": "password-encrypted"},
    ]
    config_data["servers"]["smtp"] = [{"host": "submit.example.net", "port": 587, "socket": "STARTTLS"}]
    config_data["apple"] = {"profile_identifier_prefix": "com.example.mail"}
    client = make_app(config_data).test_client()
    Admin(client).set("Bob@example.net", imap=True)
    profile = load_profile(fetch(client, "Bob@example.net")[2])
    payload = profile["PayloadContent"][0]
    assert endpoint(payload, "Incoming") == ("imap2.example.net", 993)
    assert payload["IncomingMailServerAuthentication"] == "EmailAuthCRAMMD5"
    assert endpoint(payload, "Outgoing") == ("submit.example.net", 587)
    assert payload["OutgoingMailServerUseSSL"] is True  # STARTTLS is still TLS, required
    assert profile["PayloadIdentifier"].startswith("com.example.mail.")
    assert payload["PayloadIdentifier"].startswith("com.example.mail.")


def test_local_part_user_names(config_data: dict[str, Any], make_app: MakeApp) -> None:
    config_data["servers"]["imap"][0]["username"] = "local-part"
    client = make_app(config_data).test_client()
    Admin(client).set("Carol.Jones@example.net", imap=True)
    payload = mail_payload(client, "Carol.Jones@example.net")
    assert payload["IncomingMailServerUsername"] == "Carol.Jones"
    assert payload["OutgoingMailServerUsername"] == "Carol.Jones@example.net"


@pytest.mark.parametrize("username", ["address", "local-part"])
@pytest.mark.parametrize(
    "switches", [Switches(imap=True, pop=False), Switches(imap=False, pop=True), Switches(True, True)]
)
@pytest.mark.parametrize(
    "address",
    [
        "alice@example.net",
        "O'Brien&Sons@example.net",
        "{x}+y@example.net",
        "Jörg.Müller@bücher.example",
        "δοκιμή@παράδειγμα.δοκιμή",
    ],
)
def test_rendered_bytes_are_plistlibs_own(
    config_data: dict[str, Any],
    write_config: Callable[[dict[str, Any]], Path],
    username: str,
    switches: Switches,
    address: str,
) -> None:
    """The fast renderer fills a plistlib template; its bytes must be exactly what plistlib writes."""
    config_data["servers"]["imap"][0]["username"] = username
    config_data["provider"]["display_name"] = "Example & <Sons> Mail"
    (provider,) = load(write_config(config_data), env={}).providers
    offer = policy.offer(switches, provider.servers)
    decision = policy.Decision(parse_address(address), offer, provider)
    other = policy.Decision(parse_address("someone.else@example.org"), offer, provider)
    for _ in range(2):  # the second time from the cached template, after another address used it
        assert apple.render(decision) == plistlib.dumps(apple.profile(decision), sort_keys=True)
        apple.render(other)


# Identifiers devices already hold, pinned: a changed one makes every device add a second account.
# Each UUID is uuid5(6f1c3f0e-6f4b-5b1e-9d0a-2b7c1e4a9d31, "<provider id>\n<address key>\n<purpose>"),
# upper case, under the default prefix "net.example" (the provider id reversed).
PINNED_IDENTIFIERS = {
    ("alice@example.net", "imap"): [
        "net.example.profile.5A6BA0BC-B4C7-55C9-93E0-C95AA2DAF3EC",
        "5A6BA0BC-B4C7-55C9-93E0-C95AA2DAF3EC",
        "net.example.mail.imap.D00CAD8D-A94F-567E-89BA-1B37699F20F7",
        "D00CAD8D-A94F-567E-89BA-1B37699F20F7",
    ],
    ("alice@example.net", "pop"): [
        "net.example.profile.5A6BA0BC-B4C7-55C9-93E0-C95AA2DAF3EC",
        "5A6BA0BC-B4C7-55C9-93E0-C95AA2DAF3EC",
        "net.example.mail.pop3.90077D5E-45D2-5EDA-B105-D1576955BC0C",
        "90077D5E-45D2-5EDA-B105-D1576955BC0C",
    ],
    # Spelled differently, the same mailbox: the key is what is hashed.
    ("Zoë.Müller@EXAMPLE.ORG", "imap"): [
        "net.example.profile.AD74ADDB-DD75-5D0E-832C-E8565462CF1B",
        "AD74ADDB-DD75-5D0E-832C-E8565462CF1B",
        "net.example.mail.imap.77CAFC29-7B5D-5AD8-BB2E-C84512A0E41E",
        "77CAFC29-7B5D-5AD8-BB2E-C84512A0E41E",
    ],
}


@pytest.mark.parametrize(("address", "switch"), list(PINNED_IDENTIFIERS))
def test_identifiers_and_uuids_never_change(client: FlaskClient, admin: Admin, address: str, switch: str) -> None:
    admin.set(address, **{switch: True})
    assert identifiers(client, address) == PINNED_IDENTIFIERS[address, switch]


@given(st.text())
def test_identifiers_are_uuid5_of_the_fixed_namespace(name: str) -> None:
    """Identifiers must never change (a changed one duplicates accounts on devices): exactly uuid.uuid5's."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates never reach here: addresses are validated first
    assert apple.uuid5_text(name) == str(uuid.uuid5(apple._NAMESPACE, name)).upper()


def test_same_address_twice_gives_the_same_profile(client: FlaskClient, admin: Admin) -> None:
    admin.set("alice@example.net", imap=True)
    first, second = fetch(client, "alice@example.net"), fetch(client, "alice@example.net")
    assert first == second
    assert identifiers(client, "alice@example.net") == identifiers(client, "ALICE@Example.NET")


def test_two_addresses_get_different_identifiers_and_uuids(client: FlaskClient, admin: Admin) -> None:
    admin.set("alice@example.net", imap=True)
    admin.set("alice@example.org", imap=True)
    admin.set("bob@example.net", imap=True)
    seen = [identifiers(client, a) for a in ("alice@example.net", "alice@example.org", "bob@example.net")]
    every_value = [value for ids in seen for value in ids]
    assert len(set(every_value)) == len(every_value)


def test_another_provider_gets_other_uuids(
    client: FlaskClient, admin: Admin, config_data: dict[str, Any], make_app: MakeApp
) -> None:
    admin.set("alice@example.net", imap=True)
    config_data["provider"]["id"] = "mail.example.com"
    other = make_app(config_data, "other.toml").test_client()
    assert identifiers(other, "alice@example.net")[1] != identifiers(client, "alice@example.net")[1]


def test_switching_protocol_keeps_the_profile_and_replaces_the_account(client: FlaskClient, admin: Admin) -> None:
    admin.set("alice@example.net", pop=True)
    as_pop = identifiers(client, "alice@example.net")
    admin.set("alice@example.net", imap=True)
    as_imap = identifiers(client, "alice@example.net")
    assert as_pop[:2] == as_imap[:2], "same profile identifier and UUID: the download replaces the installed one"
    assert as_pop[2:] != as_imap[2:], "a POP account is not mutated into an IMAP one"


@pytest.mark.parametrize("path", APPLE_PROFILE_PATHS)
def test_nothing_enabled_gets_404_and_the_way_forward(client: FlaskClient, admin: Admin, path: str) -> None:
    admin.set("bob@example.net", imap=False, pop=False)
    status, headers, body = fetch(client, "bob@example.net", path)
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert "Content-Disposition" not in headers
    text = body.decode()
    assert WEBMAIL_URL in text and "IMAP or POP?" in text
    assert "imap.example.net" not in text and "<plist" not in text


@pytest.mark.parametrize("path", APPLE_PROFILE_PATHS)
def test_unknown_and_disabled_addresses_are_identical(client: FlaskClient, admin: Admin, path: str) -> None:
    admin.set("bob@example.net", imap=True, pop=True)
    admin.set("bob@example.net", imap=False, pop=False)
    disabled, unknown = fetch(client, "bob@example.net", path), fetch(client, "zed@example.net", path)
    assert disabled[:2] == unknown[:2]
    assert disabled[2] == unknown[2].replace(b"zed@", b"bob@")  # the page names the address it was asked about


def test_a_switch_turned_off_stops_the_profile(client: FlaskClient, admin: Admin) -> None:
    admin.set("carol@example.net", imap=True)
    assert fetch(client, "carol@example.net")[0] == 200
    admin.set("carol@example.net", imap=False)
    assert fetch(client, "carol@example.net")[0] == 404


def test_cli_renders_the_profile_the_client_gets(
    cli: Callable[..., Result], client: FlaskClient, admin: Admin, tmp_path: Path
) -> None:
    assert cli("render", "apple", "alice@example.net").exit_code == 1
    admin.set("alice@example.net", imap=True)
    served = fetch(client, "alice@example.net")[2]
    printed = cli("render", "apple", "alice@example.net")
    assert printed.exit_code == 0 and printed.stdout_bytes == served
    out = tmp_path / "alice.mobileconfig"
    written = cli("render", "apple", "alice@example.net", "--out", str(out))
    assert written.exit_code == 0 and written.stdout_bytes == b""
    assert out.read_bytes() == served
    load_profile(out.read_bytes())
