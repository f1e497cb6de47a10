"""Several brands in one instance: every answer about a mailbox is written from its own brand.

The config here has the test ISP's brand (example.net, example.org) and a
second one, Brand Telecom (brand.example, brand-two.example), with servers,
webmail and MX hosts of its own and IMAP but no POP server.  The switches
and the login gate know no brands: one switch per mailbox, whatever the
brand.
"""

from __future__ import annotations

import copy
import plistlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree

from autoconfig import create_app
from autoconfig.config import ConfigError, load
from tests.support.admin import Admin, LiveAdmin
from tests.support.apple_schema import assert_valid_profile
from tests.support.brands import (
    BRAND_WEBMAIL,
    MAILBOXES,
    OTHER_WEBMAIL,
    get,
    login,
    outlook,
    signing,
    thunderbird,
    verified,
)
from tests.support.config import ADMIN_TOKEN, BASE_CONFIG, WEBMAIL_URL
from tests.support.dns_helpers import dns_settings
from tests.support.fixture_types import MakeServer
from tests.support.gunicorn import GunicornServer
from tests.support.knot import KnotServer
from tests.support.pki import make_pki
from tests.support.qr import scan_html

# -- every format, with the mailbox's own brand -------------------------------------


@pytest.mark.parametrize("address", MAILBOXES)
def test_thunderbird_gets_the_brand_of_the_mailbox(client: FlaskClient, admin: Admin, address: str) -> None:
    provider_id, name, host, webmail = MAILBOXES[address]
    admin.set(address, imap=True)
    document = etree.fromstring(thunderbird(client, address).data)
    provider = document.find("emailProvider")
    assert provider.get("id") == provider_id
    assert provider.findtext("displayName") == name
    assert address.split("@")[1] in [domain.text for domain in provider.findall("domain")]
    assert [server.findtext("hostname") for server in provider.iter("incomingServer")] == [host]
    assert provider.find("documentation").get("url") == webmail


@pytest.mark.parametrize("address", MAILBOXES)
def test_outlook_gets_the_servers_of_the_mailbox_brand(client: FlaskClient, admin: Admin, address: str) -> None:
    _, _, host, _ = MAILBOXES[address]
    admin.set(address, imap=True, pop=True)
    document = etree.fromstring(outlook(client, address).data)
    servers = [element.text for element in document.iter("{*}Server")]
    assert servers[0] == host
    domain = host.split(".", 1)[1]
    assert all(server.endswith(domain) for server in servers), servers


@pytest.mark.parametrize("address", MAILBOXES)
def test_the_apple_profile_is_the_brand_s(client: FlaskClient, admin: Admin, address: str) -> None:
    provider_id, name, host, _ = MAILBOXES[address]
    admin.set(address, imap=True)
    response = client.get(f"/apple/mail.mobileconfig?emailaddress={quote(address)}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="{provider_id}-mail.mobileconfig"'
    profile = plistlib.loads(response.data)
    assert_valid_profile(profile)
    assert profile["PayloadOrganization"] == name
    assert profile["PayloadContent"][0]["IncomingMailServerHostName"] == host
    assert profile["PayloadIdentifier"].startswith(".".join(reversed(provider_id.split("."))) + ".")


def test_a_brand_without_pop_servers_offers_a_pop_only_mailbox_nothing(client: FlaskClient, admin: Admin) -> None:
    """The switch is the mailbox's; what it can show is the brand's."""
    admin.set("carol@brand.example", pop=True)
    admin.set("alice@example.net", pop=True)
    assert thunderbird(client, "carol@brand.example").status_code == 404
    assert b'type="pop3"' in thunderbird(client, "alice@example.net").data
    assert login(client, "carol@brand.example", "pop3")["status"] == -1
    assert login(client, "alice@example.net", "pop3")["status"] == 0


@pytest.mark.parametrize("address", [*MAILBOXES, "nobody@brand.example", "nobody@example.org"])
def test_nothing_enabled_answers_point_to_the_brand_s_webmail(client: FlaskClient, address: str) -> None:
    """All-off and unknown mailboxes alike: every format names the webmail of their own brand, and only it."""
    domain = address.split("@")[1]
    webmail = BRAND_WEBMAIL if "brand" in domain else WEBMAIL_URL
    answers = {
        "thunderbird": thunderbird(client, address),
        "outlook": outlook(client, address),
        "apple": client.get(f"/apple/mail.mobileconfig?emailaddress={quote(address)}"),
        "setup": client.get(f"/setup?emailaddress={quote(address)}"),
    }
    for family, response in answers.items():
        text = response.data.decode()
        assert webmail in text.replace("&amp;", "&"), family
        assert OTHER_WEBMAIL[webmail] not in text.replace("&amp;", "&"), family
    refusal = login(client, address)
    assert refusal["status"] == -1
    assert webmail in refusal["msg"]


def test_unknown_and_all_off_mailboxes_of_a_brand_get_the_same_bytes(client: FlaskClient, admin: Admin) -> None:
    admin.set("carol@brand.example", imap=False)
    known, unknown = thunderbird(client, "carol@brand.example"), thunderbird(client, "zed@brand.example")
    assert (known.status_code, known.data) == (unknown.status_code, unknown.data)


@pytest.mark.parametrize(
    ("host", "webmail"),
    [
        ("autoconfig.brand-two.example", BRAND_WEBMAIL),
        ("brand.example", BRAND_WEBMAIL),
        ("autoconfig.example.org", WEBMAIL_URL),
        ("autoconfig.unrelated.example", WEBMAIL_URL),  # no brand's domain: the first brand
    ],
)
def test_a_request_without_an_address_is_declined_in_the_brand_of_its_host(
    client: FlaskClient, host: str, webmail: str
) -> None:
    response = client.get("/mail/config-v1.1.xml", headers={"Host": host})
    assert response.status_code == 404
    assert webmail in response.data.decode()
    form = client.get("/setup", headers={"Host": host}).data.decode().replace("&amp;", "&")
    assert webmail in form


def test_the_setup_page_and_its_qr_codes_are_the_brand_s(client: FlaskClient, admin: Admin, browser: Any) -> None:
    admin.set("carol@brand.example", imap=True)
    page = client.get("/setup?emailaddress=carol@brand.example").data.decode()
    assert "Brand Telecom Mail" in page and "Example Networks" not in page
    assert "imap.brand.example" in page and "imap.example.net" not in page
    codes = {code.caption: code.payload for code in scan_html(browser, page)}
    android = next(payload for caption, payload in codes.items() if "Android" in caption)
    assert b'"imap.brand.example",143,2' in android
    assert b'"smtp.brand.example",587,2' in android
    apple = next(payload for caption, payload in codes.items() if "iPhone" in caption)
    assert apple.startswith(b"https://autoconfig.example.net/apple/mail.mobileconfig?")


# -- the switches and the gate know no brands ---------------------------------------------


def test_one_switch_per_mailbox_whatever_the_brand(client: FlaskClient, admin: Admin) -> None:
    admin.set("carol@brand.example", imap=True)
    assert login(client, "carol@brand.example") == {"status": 0}
    assert login(client, "carol@example.net")["status"] == -1  # another mailbox: its own switch, off
    admin.set("carol@brand.example", imap=False)
    assert login(client, "carol@brand.example")["status"] == -1


def test_switches_are_stored_for_every_brand_s_domains_and_no_other(client: FlaskClient) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for address in ("dave@brand-two.example", "alice@example.org"):
        assert client.patch(f"/admin/v1/accounts/{address}", json={"imap": True}, headers=headers).status_code == 200
    refused = client.patch("/admin/v1/accounts/eve@shop.invalid", json={"imap": True}, headers=headers)
    assert refused.status_code == 404
    assert "brand.example" in refused.get_json()["message"]


# -- signing: each brand its own identity, or the shared one --------------------------------


def test_each_brand_signs_with_its_own_identity_or_the_shared_one(
    tmp_path: Path, config_data: dict[str, Any], make_app: Callable[..., Flask]
) -> None:
    """A brand's [providers.apple] is its own; a brand without one signs with the shared [apple]."""
    own, shared = make_pki(tmp_path / "own"), make_pki(tmp_path / "shared")
    config_data["providers"][1]["apple"] = {
        **signing(own),
        "profile_identifier_prefix": "example.brand.profiles",
    }
    config_data["apple"] = signing(shared)
    client = make_app(config_data).test_client()
    admin = Admin(client)
    for address, pki, other, prefix in (
        ("carol@brand.example", own, shared, "example.brand.profiles."),
        ("alice@example.net", shared, own, "net.example."),
    ):
        admin.set(address, imap=True)
        signed = client.get(f"/apple/mail.mobileconfig?emailaddress={address}").data
        assert signed[:1] == b"\x30", "DER SignedData"
        embedded = verified(signed, pki.root_cert)
        assert embedded is not None, f"{address}: signed by its brand's identity"
        assert plistlib.loads(embedded)["PayloadIdentifier"].startswith(prefix)
        assert verified(signed, other.root_cert) is None, f"{address}: not by the other brand's"


# -- hosted customer domains belong to the brand whose MX they use -----------------------------


@pytest.fixture
def hosted_server(config_data: dict[str, Any], make_server: MakeServer, knot: KnotServer) -> GunicornServer:
    settings = dns_settings(knot.port)
    del settings["mx_hosts"]  # each brand has its own
    config_data["dns"] = settings
    return make_server(config_data)


@pytest.mark.parametrize(
    ("address", "provider_id", "host"),
    [
        ("shopper@brandshop.example", "brand.example", "imap.brand.example"),
        ("owner@shop.example", "example.net", "imap.example.net"),
    ],
)
def test_a_hosted_customer_domain_answers_with_the_brand_of_its_mx(
    hosted_server: GunicornServer, address: str, provider_id: str, host: str
) -> None:
    LiveAdmin(hosted_server).set(address, imap=True)
    status, body = get(hosted_server, f"/mail/config-v1.1.xml?emailaddress={address}")
    assert status == 200, body
    provider = etree.fromstring(body).find("emailProvider")
    assert provider.get("id") == provider_id
    assert provider.findtext("incomingServer/hostname") == host


def test_a_customer_domain_whose_mx_is_no_brand_s_is_not_served(hosted_server: GunicornServer) -> None:
    status, _ = get(hosted_server, "/mail/config-v1.1.xml?emailaddress=someone@elsewhere.example")
    assert status == 404


# -- DNS: records and checks for every brand -------------------------------------------------


def test_dns_records_cover_every_brand_with_its_own_servers(
    config_data: dict[str, Any], write_config: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    config_data["dns"] = {"addresses": ["192.0.2.80"], "own_domains": ["example.net"]}
    write_config(config_data)
    result = cli("dns", "records")
    assert result.exit_code == 0, result.output
    sections = {part.split(" ", 1)[0]: part for part in result.output.split("; ")[1:]}
    assert set(sections) == {"example.net", "example.org", "brand.example", "brand-two.example"}
    # Names inside the zone are printed relative to it, as a zone file has them.
    for domain, imap, mx in (("brand.example", "imap", "mx"), ("brand-two.example", "imap.brand.example.", None)):
        assert f"_imap._tcp 3600 IN SRV 10 1 143 {imap}\n" in sections[domain]
        assert f"@ 3600 IN MX 10 {mx or 'mx.brand.example.'}\n" in sections[domain]
        assert "example.net." not in sections[domain].replace("autoconfig.example.net.", "")
    assert "_imaps._tcp 3600 IN SRV 0 1 993 imap.example.net." in sections["example.org"]


def test_dns_records_for_a_domain_no_brand_lists_need_the_brand_named(cli: Callable[..., Any]) -> None:
    refused = cli("dns", "records", "brandshop.example")
    assert refused.exit_code != 0
    assert "--brand" in refused.output and "brand.example" in refused.output
    named = cli("dns", "records", "--brand", "brand.example", "brandshop.example")
    assert named.exit_code == 0, named.output
    assert "10 1 143 imap.brand.example." in named.output
    unknown = cli("dns", "records", "--brand", "nosuch.example", "brandshop.example")
    assert unknown.exit_code == 2 and "nosuch.example" in unknown.output


def test_dns_check_compares_a_hosted_domain_with_its_brand_s_records(cli: Callable[..., Any], knot: KnotServer) -> None:
    args = ("--nameserver", "127.0.0.1", "--port", str(knot.port))
    assert (
        cli("dns", "check", *args, "--brand", "brand.example", "brandshop.example").output == "brandshop.example: ok\n"
    )
    wrong = cli("dns", "check", *args, "--brand", "example.net", "brandshop.example")
    assert wrong.exit_code == 1
    assert "mx-not-isp" in wrong.output


def test_check_config_lists_every_brand(cli: Callable[..., Any]) -> None:
    result = cli("check-config")
    assert result.exit_code == 0, result.output
    assert "provider: example.net (Example Networks Mail)" in result.output
    assert "provider: brand.example (Brand Telecom Mail)" in result.output
    assert f"webmail:  {BRAND_WEBMAIL}" in result.output


# -- config errors name the file and the key --------------------------------------------------


def _two_claims(data: dict[str, Any]) -> None:
    data["providers"][1]["domains"].append("example.org")


def _no_smtp(data: dict[str, Any]) -> None:
    del data["providers"][1]["servers"]["smtp"]


def _same_id(data: dict[str, Any]) -> None:
    data["providers"][1]["id"] = "example.net"


def _shared_mx(data: dict[str, Any]) -> None:
    data["providers"][1]["mx_hosts"].append("mx2.example.net")


def _both_forms(data: dict[str, Any]) -> None:
    data["provider"] = copy.deepcopy(BASE_CONFIG["provider"])


def _global_mx(data: dict[str, Any]) -> None:
    data["dns"] = {"mx_hosts": ["mx1.example.net"]}


def _no_webmail(data: dict[str, Any]) -> None:
    del data["service"]["webmail_url"]


def _no_brands(data: dict[str, Any]) -> None:
    data["providers"] = []


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (_two_claims, "providers[1].domains[2]", "example.org is already in providers[0].domains"),
        (_no_smtp, "providers[1].servers.smtp", "at least one SMTP (submission) server is required"),
        (_same_id, "providers[1].id", "example.net is already the id of providers[0]"),
        (_shared_mx, "providers[1].mx_hosts[1]", "mx2.example.net is already in providers[0].mx_hosts"),
        (_both_forms, "provider", "one-brand form"),
        (_global_mx, "dns.mx_hosts", "providers[N].mx_hosts"),
        (_no_webmail, "providers[0].webmail_url", "is required"),
        (_no_brands, "providers", "at least one brand"),
    ],
)
def test_a_config_error_in_a_brand_names_the_file_and_the_key(
    config_data: dict[str, Any], write_config: Callable[..., Path], change: Any, key: str, message: str
) -> None:
    change(config_data)
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: {key}: "), error.value
    assert message in str(error.value)


def test_an_app_on_two_brands_starts_and_one_brand_configs_read_as_one(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    config = load(write_config(config_data), env={})
    assert [provider.id for provider in config.providers] == ["example.net", "brand.example"]
    assert config.providers[0].webmail_url == WEBMAIL_URL  # the [service] default
    single = copy.deepcopy(BASE_CONFIG)
    single["store"] = config_data["store"]
    (only,) = load(write_config(single, "single.toml"), env={}).providers
    assert only.domains == ("example.net", "example.org") and only.webmail_url == WEBMAIL_URL
    create_app(config).extensions["autoconfig"].store.close()


def test_the_shipped_two_brand_example_answers_each_brand(tmp_path: Path, make_app: Callable[..., Flask]) -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "config" / "examples" / "brands.toml").read_text())
    data["store"]["url"] = f"sqlite:///{tmp_path}/accounts.sqlite3"
    data["admin"] = {"tokens": [{"name": "webmail", "token": ADMIN_TOKEN}]}
    client = make_app(data).test_client()
    for address, provider_id in (("alice@example.net", "example.net"), ("bob@brand-two.example", "brand.example")):
        Admin(client).set(address, imap=True)
        provider = etree.fromstring(thunderbird(client, address).data).find("emailProvider")
        assert provider.get("id") == provider_id
