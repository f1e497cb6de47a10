"""Break pass on "several brands in one instance": each test states the correct behaviour, so a
failing test is a bug found.  The config is test_brands's: the ISP (example.net, example.org;
IMAP, POP, SMTP; mx1/mx2.example.net) and Brand Telecom (brand.example, brand-two.example; IMAP
and SMTP, no POP; mx.brand.example; its own webmail)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree

from autoconfig.cli import main
from autoconfig.config import ConfigError, load
from autoconfig.store import StoreUnavailable
from tests.support.admin import Admin, LiveAdmin
from tests.support.brands import (
    BRAND_WEBMAIL,
    POLICY_HEADER,
    POLICY_SECRET,
    get,
    login,
    outlook,
    signing,
    thunderbird,
    verified,
)
from tests.support.config import WEBMAIL_URL, base_config
from tests.support.dns_helpers import SilentDnsServer, dns_settings
from tests.support.fixture_types import MakeServer
from tests.support.gunicorn import GunicornServer, gunicorn_on
from tests.support.knot import KnotServer
from tests.support.pki import make_pki
from tests.support.ports import free_port

ISP_NAMES = ("Example Networks Mail", "imap.example.net", "pop.example.net", "smtp.example.net", WEBMAIL_URL)
BRAND_NAMES = ("Brand Telecom Mail", "imap.brand.example", "smtp.brand.example", BRAND_WEBMAIL)


def _text(response: Any) -> str:
    return response.data.decode("utf-8", "replace").replace("&amp;", "&")


def _config_error(data: dict[str, Any], write_config: Callable[..., Path]) -> str:
    path = write_config(data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    return message


# -- config: one domain / MX host, one brand ---------------------------------------------------


def test_a_domain_that_is_also_its_brand_s_mx_host_cannot_be_listed_by_a_second_brand(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    """A brand whose MX host is also one of its mail domains (mail.example.com is both) must still own
    the domain alone: _read_brands overwrote the domain's claim with the MX claim, so a second
    brand listing the same domain passed and took every mailbox of it (Config._by_domain: last wins)."""
    isp = config_data["providers"][0]
    isp["domains"].append("mx1.example.net")  # a mail domain and the ISP's MX host
    config_data["providers"][1]["domains"].append("mx1.example.net")
    message = _config_error(config_data, write_config)
    assert "providers[1].domains[2]: mx1.example.net is already in providers[0].domains" in message


def test_an_mx_host_cannot_be_in_two_brands_because_one_of_them_lists_it_as_a_domain(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    """The MX claim of providers[0] was overwritten by providers[1]'s domain claim, so providers[1]
    could then list the same MX host: a customer domain on it matched both brands (first one won)."""
    brand = config_data["providers"][1]
    brand["domains"].append("mx1.example.net")
    brand["mx_hosts"].append("mx1.example.net")
    message = _config_error(config_data, write_config)
    assert "providers[1].mx_hosts[1]: mx1.example.net is already in providers[0].mx_hosts" in message


@pytest.mark.parametrize(
    ("what", "value", "key"),
    [
        ("domains", "EXAMPLE.ORG", "providers[1].domains[2]"),
        ("domains", "Example.Net", "providers[1].domains[2]"),
        ("mx_hosts", "MX2.Example.NET.", "providers[1].mx_hosts[1]"),
        ("mx_hosts", "mx1.example.net.", "providers[1].mx_hosts[1]"),
    ],
)
def test_spelling_variants_of_another_brand_s_domain_or_mx_host_are_refused(
    config_data: dict[str, Any], write_config: Callable[..., Path], what: str, value: str, key: str
) -> None:
    config_data["providers"][1][what].append(value)
    message = _config_error(config_data, write_config)
    assert f": {key}: " in message and "is already in providers[0]" in message, message


def test_idn_spellings_of_one_domain_in_two_brands_are_refused(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    config_data["providers"][0]["domains"].append("bücher.example")
    config_data["providers"][1]["domains"].append("XN--BCHER-KVA.example")
    message = _config_error(config_data, write_config)
    assert "providers[1].domains[2]: xn--bcher-kva.example is already in providers[0].domains" in message


def test_a_domain_with_a_trailing_dot_is_refused_naming_the_key(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    config_data["providers"][1]["domains"].append("example.org.")
    assert ": providers[1].domains[2]: " in _config_error(config_data, write_config)


def test_an_unused_shared_apple_table_with_half_a_signing_setup_is_refused(
    tmp_path: Path, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    """Every brand has its own [providers.apple]; the shared [apple] names a certificate but no key.
    It was never read (only copies of it are, for brands without their own), so the half setup, and
    any misspelt key in it, passed silently; a config error must name apple.signing_key."""
    pki = make_pki(tmp_path / "pki")
    for brand in config_data["providers"]:
        brand["apple"] = signing(pki)
    config_data["apple"] = {"signing_certificate": str(pki.signer_cert)}
    message = _config_error(config_data, write_config)
    assert ": apple.signing_key: " in message, message


def test_a_misspelt_key_in_an_unused_shared_apple_table_is_refused(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    for brand in config_data["providers"]:
        brand["apple"] = {"profile_identifier_prefix": f"example.{brand['short_name'].lower()}"}
    config_data["apple"] = {"signing_certifcate": "/etc/autoconfig/signer.pem"}
    message = _config_error(config_data, write_config)
    assert ": apple.signing_certifcate: unknown option" in message, message


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            lambda d: d.__setitem__(
                "servers", {"smtp": [{"host": "smtp.x.example", "port": 587, "socket": "STARTTLS"}]}
            ),
            "servers",
        ),
        (lambda d: d["providers"].append({}), "providers[2].domains"),
        (lambda d: d["providers"][1].__setitem__("servers", {}), "providers[1].servers.smtp"),
        (lambda d: d["providers"][1].__setitem__("webmail_url", ""), "providers[1].webmail_url"),
        (lambda d: d["providers"][1].__setitem__("webmail_url", "javascript:alert(1)"), "providers[1].webmail_url"),
        (
            lambda d: d["providers"][1].__setitem__("apple", {"signing_key": "/k.pem"}),
            "providers[1].apple.signing_certificate",
        ),
    ],
)
def test_broken_brand_tables_are_refused_naming_the_key(
    config_data: dict[str, Any], write_config: Callable[..., Path], change: Any, key: str
) -> None:
    change(config_data)
    assert f": {key}: " in _config_error(config_data, write_config)


# -- a brand with POP only, and the switches --------------------------------------------------


@pytest.fixture
def pop_only(make_app: Callable[..., Flask], config_data: dict[str, Any]) -> FlaskClient:
    brand = config_data["providers"][1]
    brand["servers"] = {
        "pop3": [{"host": "pop.brand.example", "port": 995, "socket": "SSL"}],
        "smtp": [{"host": "smtp.brand.example", "port": 465, "socket": "SSL"}],
    }
    return make_app(config_data).test_client()


def test_a_pop_only_brand_never_shows_an_imap_mailbox_anything(pop_only: FlaskClient) -> None:
    admin = Admin(pop_only)
    admin.set("carol@brand.example", imap=True)
    admin.set("zed@brand.example", imap=False)
    for address in ("carol@brand.example",):
        assert thunderbird(pop_only, address).status_code == 404
        assert b"<Server>" not in outlook(pop_only, address).data
        assert pop_only.get(f"/apple/mail.mobileconfig?emailaddress={address}").status_code == 404
        page = _text(pop_only.get(f"/setup?emailaddress={address}"))
        assert "pop.brand.example" not in page and "imap.example.net" not in page
        assert login(pop_only, address, "imap")["status"] == -1
        assert login(pop_only, address, "pop3")["status"] == -1
    # imap-only on a POP-only brand is an all-off mailbox: the same bytes as an unknown one
    assert thunderbird(pop_only, "carol@brand.example").data == thunderbird(pop_only, "zed@brand.example").data
    admin.set("carol@brand.example", imap=False, pop=True)
    document = _text(thunderbird(pop_only, "carol@brand.example"))
    assert 'type="pop3"' in document and "imap" not in document.replace("imap.", "")
    assert "example.net" not in document


# -- Host headers: never a 500, never another brand ---------------------------------------------


LONG_BRAND_HOST = ".".join(["a"] * 120) + ".brand.example"  # 253 octets, 122 labels

GOOD_HOSTS = [
    ("AUTOCONFIG.BRAND-TWO.EXAMPLE", BRAND_WEBMAIL),
    ("brand.example.", BRAND_WEBMAIL),
    ("autoconfig.brand.example.:8443", BRAND_WEBMAIL),
    ("AutoConfig.Brand.Example:443", BRAND_WEBMAIL),
    (LONG_BRAND_HOST, BRAND_WEBMAIL),
    ("autoconfig.xn--brand-example.test", WEBMAIL_URL),  # not valid punycode
    ("xn--bcher-kva.brand.example", BRAND_WEBMAIL),
    ("brand.example.attacker.test", WEBMAIL_URL),  # not in brand.example
    ("notbrand.example", WEBMAIL_URL),
    ("192.0.2.1", WEBMAIL_URL),
    ("192.0.2.1:8080", WEBMAIL_URL),
    ("[2001:db8::1]:443", WEBMAIL_URL),
    ("[::ffff:192.0.2.1]", WEBMAIL_URL),
]
BAD_HOSTS = [
    b"a" * 300 + b".brand.example",
    "autoconfig.bränd.example".encode(),
    "autoconfig.bränd.example".encode("latin-1"),
    b"brand.example:999999",
    b"brand.example:",
    b":443",
    b"brand.example\\x",
    b"[brand.example]",
    b"brand.example:80:80",
]


def _raw_get(server: GunicornServer, path: str, host: bytes) -> tuple[int, str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace").replace("&amp;", "&")
    finally:
        connection.close()


def test_hostile_host_headers_get_the_brand_of_their_domain_the_first_brand_or_a_400(
    server: GunicornServer,
) -> None:
    """Through gunicorn, so werkzeug's own parsing of the Host header is exercised too."""
    paths = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml", "/setup")
    for host, expected in GOOD_HOSTS:
        other = WEBMAIL_URL if expected == BRAND_WEBMAIL else BRAND_WEBMAIL
        for path in paths:
            status, text = _raw_get(server, path, host.encode())
            assert status in (200, 404), (host, path, status, text)
            assert expected in text and other not in text, (host, path, text)
    for raw in BAD_HOSTS:
        for path in (*paths, "/apple/mail.mobileconfig?emailaddress=carol@brand.example"):
            status, text = _raw_get(server, path, raw)
            assert status == 400, (raw, path, status, text)


# -- addresses: case, IDN, trailing dots, subdomains -----------------------------------------------


@pytest.fixture
def idn_client(make_app: Callable[..., Flask], config_data: dict[str, Any]) -> FlaskClient:
    config_data["providers"][1]["domains"].append("bücher.example")
    return make_app(config_data).test_client()


@pytest.mark.parametrize(
    "address",
    ["Carol@BRAND.Example", "carol@Brand-Two.EXAMPLE", "CAROL@bücher.example", "carol@XN--BCHER-KVA.example"],
)
def test_address_spellings_reach_their_own_brand(idn_client: FlaskClient, address: str) -> None:
    Admin(idn_client).set(address, imap=True)
    document = etree.fromstring(thunderbird(idn_client, address).data)
    provider = document.find("emailProvider")
    assert provider.get("id") == "brand.example"
    assert provider.findtext("incomingServer/hostname") == "imap.brand.example"
    assert login(idn_client, address) == {"status": 0}


def test_john_dot_dot_smith_in_an_idn_brand_domain_is_refused_with_the_brand_s_webmail(idn_client: FlaskClient) -> None:
    for name in ("john..smith@bücher.example", "a@b@XN--BCHER-KVA.example", "john..smith@BÜCHER.example."):
        refusal = login(idn_client, name)
        assert refusal["status"] == -1 and BRAND_WEBMAIL in refusal["msg"], (name, refusal)
        assert WEBMAIL_URL not in refusal["msg"]


UNKNOWN_DOMAIN_ADDRESSES = (
    "zed@sub.brand.example",
    "zed@sub.example.net",
    "zed@brand.example.example.org.test",
    "zed@nowhere.example",
    "zed@brand-three.example",
)


def _normalised(text: str, address: str) -> str:
    domain = address.split("@")[1]
    text = text.replace(address, "ADDRESS").replace(quote(address), "ADDRESS").replace(domain, "DOMAIN")
    return re.sub(r'Time="[0-9:]+"', 'Time=""', text)


def test_an_unknown_domain_gets_the_same_answer_whichever_brand_it_looks_like(client: FlaskClient) -> None:
    """Nothing in the answer to a domain of no brand may tell which brand it is under (sub.brand.example)."""
    answers: dict[str, set[str]] = {}
    for address in UNKNOWN_DOMAIN_ADDRESSES:
        for family, response in (
            ("thunderbird", thunderbird(client, address)),
            ("outlook", outlook(client, address)),
            ("apple", client.get(f"/apple/mail.mobileconfig?emailaddress={quote(address)}")),
            ("setup", client.get(f"/setup?emailaddress={quote(address)}")),
            ("json", client.get(f"/autodiscover/autodiscover.json?Email={quote(address)}&Protocol=AutodiscoverV1")),
        ):
            assert 400 <= response.status_code < 500, (family, address, response.status_code)
            text = _text(response)
            assert BRAND_WEBMAIL not in text and "Brand Telecom" not in text, (family, address)
            answers.setdefault(family, set()).add(f"{response.status_code} {_normalised(text, address)}")
        assert login(client, address) == {"status": 0}
        assert login(client, "john..smith@" + address.split("@")[1]) == {"status": 0}
    for family, distinct in answers.items():
        assert len(distinct) == 1, (family, distinct)


# -- unknown and all-off: the same bytes, in every format -------------------------------------------


def test_unknown_and_all_off_mailboxes_of_a_brand_are_alike_in_every_format(
    client: FlaskClient, admin: Admin, config_path: Path
) -> None:
    known, unknown = "carol@brand.example", "zed@brand.example"
    admin.set(known, imap=True)
    admin.set(known, imap=False, pop=True)  # a POP switch on a brand without POP: still nothing to show
    for name, request in (
        ("thunderbird", lambda a: thunderbird(client, a)),
        ("outlook", lambda a: outlook(client, a)),
        ("apple", lambda a: client.get(f"/apple/mail.mobileconfig?emailaddress={quote(a)}")),
        ("setup", lambda a: client.get(f"/setup?emailaddress={quote(a)}")),
    ):
        one, two = request(known), request(unknown)
        assert one.status_code == two.status_code, name
        assert _normalised(_text(one), known) == _normalised(_text(two), unknown), name
        headers = [sorted((k, v) for k, v in r.headers.items() if k != "Content-Length") for r in (one, two)]
        assert headers[0] == headers[1], name
    for protocol in ("imap", "pop3"):
        assert login(client, known, protocol) == login(client, unknown, protocol)
    runner = CliRunner()
    for family in ("thunderbird", "outlook", "apple"):
        outputs = [
            runner.invoke(main, ["--config", str(config_path), "render", family, address], env={})
            for address in (known, unknown)
        ]
        assert [result.exit_code for result in outputs] == [1, 1], family
        texts = [_normalised(result.output, address) for result, address in zip(outputs, (known, unknown), strict=True)]
        assert texts[0] == texts[1], family
        assert BRAND_WEBMAIL in outputs[1].output and WEBMAIL_URL not in outputs[1].output, family


# -- faults: a mailbox of a known brand is never answered in another brand ---------------------------------


def _store_down(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(key: str) -> Any:
        raise StoreUnavailable("database is gone")

    monkeypatch.setattr(app.extensions["autoconfig"].store, "switches", down)


@pytest.mark.parametrize("path", ["/setup", "/apple/mail.mobileconfig"])
def test_a_store_outage_page_for_a_brand_mailbox_is_not_the_other_brand_s(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """carol@brand.example is Brand Telecom's (its domain is listed), but the 503 page came out under the
    Host's brand: the public_url host autoconfig.example.net, where every link and QR code points,
    so Brand Telecom's users read "Example Networks Mail" and were offered "you@example.net"."""
    _store_down(app, monkeypatch)
    response = client.get(f"{path}?emailaddress=carol@brand.example", headers={"Host": "autoconfig.example.net"})
    assert response.status_code == 503
    text = _text(response)
    for name in ("Example Networks Mail", "you@example.net", WEBMAIL_URL):
        assert name not in text, name


@pytest.mark.parametrize("address", ["carol@brand.example.", "CAROL@BRAND-TWO.EXAMPLE."])
def test_a_refused_brand_address_is_not_answered_in_another_brand(client: FlaskClient, address: str) -> None:
    """A clear 4xx, yes; but the setup page for a Brand Telecom address with a trailing dot came out
    as Example Networks' page (Host: the public_url's host)."""
    response = client.get(f"/setup?emailaddress={quote(address)}", headers={"Host": "autoconfig.example.net"})
    assert response.status_code == 400
    text = _text(response)
    assert "Example Networks Mail" not in text and "you@example.net" not in text
    for other in (thunderbird(client, address), outlook(client, address)):
        assert other.status_code < 500
        assert WEBMAIL_URL not in _text(other)


# -- hosted customer domains: MX of two brands, spellings ---------------------------------------------


def _hosted(
    tmp_path: Path,
    data: dict[str, Any],
    write_config: Callable[..., Path],
    port: int,
    isp_mx: list[str],
    brand_mx: list[str],
    **dns_extra: Any,
) -> GunicornServer:
    data = copy.deepcopy(data)
    settings = dns_settings(port, **dns_extra)
    del settings["mx_hosts"]
    data["dns"] = settings
    data["providers"][0]["mx_hosts"] = isp_mx
    data["providers"][1]["mx_hosts"] = brand_mx
    return gunicorn_on(tmp_path, data)


def _post_login(server: GunicornServer, address: str, protocol: str = "imap") -> tuple[int, bytes]:
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"login": address, "protocol": protocol, "remote": "192.0.2.7", "tls": True}).encode()
    request = urllib.request.Request(
        f"{server.url}/dovecot/auth-policy?command=allow",
        data=body,
        method="POST",
        headers={POLICY_HEADER: POLICY_SECRET, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_hosted_domains_whose_best_mx_mix_two_brands_are_no_brand_s(
    tmp_path: Path, config_data: dict[str, Any], write_config: Callable[..., Path], knot: KnotServer
) -> None:
    """shop.example's best MX are mx1.example.net and mx2.example.net; here they are two brands' hosts.
    mixed.example: mx1.example.net (ISP) and mx.other.example (here Brand Telecom's)."""
    server = _hosted(
        tmp_path,
        config_data,
        write_config,
        knot.port,
        isp_mx=["MX1.Example.Net."],
        brand_mx=["mx2.example.net.", "MX.BRAND.EXAMPLE", "mx.other.example"],
    )
    with server:
        for address in ("owner@shop.example", "owner@mixed.example", "owner@pacc.example"):
            LiveAdmin(server).set(address, imap=True)
            status, body = get(server, f"/mail/config-v1.1.xml?emailaddress={address}")
            assert status == 404, (address, body)
            assert b"Brand Telecom" not in body and b"Example Networks" not in body
            assert _post_login(server, address) == (200, b'{"status":0}\n'), address
        # best MX mx1 (pref 10) is the ISP's alone; the mx.other.example backup at 20 is ignored
        LiveAdmin(server).set("owner@backup.example", imap=True)
        status, body = get(server, "/mail/config-v1.1.xml?emailaddress=owner@backup.example")
        assert status == 200 and b'id="example.net"' in body and b"brand" not in body, body
        # elsewhere.example's only MX is mx.other.example: Brand Telecom's here; brandshop's MX, spelt
        # mx.brand.example in DNS and MX.BRAND.EXAMPLE in the config, is Brand Telecom's too
        for address in ("owner@elsewhere.example", "Shopper@BRANDSHOP.Example"):
            LiveAdmin(server).set(address, imap=True)
            status, body = get(server, f"/mail/config-v1.1.xml?emailaddress={quote(address)}")
            assert status == 200, (address, body)
            assert b'id="brand.example"' in body and b"example.net" not in body, body
        for name in ("shopper@brandshop.example", "john..smith@brandshop.example", "a@b@BrandShop.Example."):
            status, body = _post_login(server, name, "pop3")
            assert status == 200 and b'"status":-1' in body, (name, body)
            assert BRAND_WEBMAIL.encode() in body and WEBMAIL_URL.encode() not in body, (name, body)
        for name in ("john..smith@mixed.example", "a@b@shop.example"):
            assert _post_login(server, name) == (200, b'{"status":0}\n'), name


@pytest.mark.parametrize("dead", ["closed-port", "silent"])
def test_a_dead_resolver_gives_503_for_hosted_domains_and_serves_every_brand_s_listed_ones(
    tmp_path: Path, config_data: dict[str, Any], write_config: Callable[..., Path], dead: str
) -> None:
    silent = SilentDnsServer()
    with silent:
        port = free_port() if dead == "closed-port" else silent.port
        server = _hosted(
            tmp_path,
            config_data,
            write_config,
            port,
            isp_mx=["mx1.example.net"],
            brand_mx=["mx.brand.example"],
            timeout=0.2,
            lifetime=0.5,
        )
        with server:
            for address, brand_id in (
                ("alice@example.org", "example.net"),
                ("carol@brand-two.example", "brand.example"),
            ):
                LiveAdmin(server).set(address, imap=True)
                status, body = get(server, f"/mail/config-v1.1.xml?emailaddress={address}")
                assert status == 200 and f'id="{brand_id}"'.encode() in body, (address, status, body)
                status, body = get(server, f"/setup?emailaddress={address}")
                assert status == 200, (address, status)
                assert _post_login(server, address) == (200, b'{"status":0}\n')
            for path in (
                "/mail/config-v1.1.xml?emailaddress=shopper@brandshop.example",
                "/setup?emailaddress=shopper@brandshop.example",
                "/apple/mail.mobileconfig?emailaddress=shopper@brandshop.example",
            ):
                status, body = get(server, path)
                assert status == 503, (path, status, body)
            status, _ = _post_login(server, "shopper@brandshop.example")
            assert status == 503
            # a name that is never looked up is still "not ours", resolver or not
            assert _post_login(server, "x@sub.brand.example") == (200, b'{"status":0}\n')
            assert _post_login(server, "john..smith@brand.example")[0] == 200


# -- the Dovecot gate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login_name", "webmail"),
    [
        ("john..smith@brand.example", BRAND_WEBMAIL),
        ("a@b@brand-two.example", BRAND_WEBMAIL),
        (".carol@BRAND.EXAMPLE", BRAND_WEBMAIL),
        ("carol.@brand.example.", BRAND_WEBMAIL),
        ('"carol"@brand.example', BRAND_WEBMAIL),
        ("x" * 65 + "@brand-two.example", BRAND_WEBMAIL),
        ("john..smith@example.org", WEBMAIL_URL),
        ("a@brand.example@example.net", WEBMAIL_URL),
    ],
)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_unkeyable_logins_are_refused_with_their_own_brand_s_webmail(
    client: FlaskClient, login_name: str, webmail: str, protocol: str
) -> None:
    refusal = login(client, login_name, protocol)
    assert refusal["status"] == -1, refusal
    assert webmail in refusal["msg"]
    other = WEBMAIL_URL if webmail == BRAND_WEBMAIL else BRAND_WEBMAIL
    assert other not in refusal["msg"]


@pytest.mark.parametrize(
    "login_name",
    ["john..smith@nobrand.example", "a@b@nobrand.example", "john..smith@sub.brand.example", "carol", "carol@"],
)
def test_logins_in_no_brand_s_domain_get_no_opinion(client: FlaskClient, login_name: str) -> None:
    assert login(client, login_name) == {"status": 0}


# -- the CLI: dns records/check with --brand, render -------------------------------------------------


def test_dns_records_with_brand_does_not_give_a_listed_domain_another_brand_s_servers(
    config_data: dict[str, Any], write_config: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    """--brand is for a domain no brand lists; for example.net (the ISP's) it printed Brand Telecom's
    SRV and MX records, which an admin would paste into the ISP's zone."""
    config_data["dns"] = {"addresses": ["192.0.2.80"], "own_domains": ["example.net"]}
    write_config(config_data)
    result = cli("dns", "records", "--brand", "brand.example", "example.net")
    if result.exit_code == 0:
        assert "imap.brand.example" not in result.output and "mx.brand.example" not in result.output, result.output
        assert "IN SRV 0 1 993 imap\n" in result.output  # example.net's own server, relative to its zone
    else:
        assert "example.net" in result.output and "--brand" in result.output


def test_dns_records_with_brand_and_no_domain_keeps_every_listed_domain_in_its_brand(
    config_data: dict[str, Any], write_config: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    config_data["dns"] = {"addresses": ["192.0.2.80"], "own_domains": ["example.net"]}
    write_config(config_data)
    result = cli("dns", "records", "--brand", "brand.example")
    if result.exit_code != 0:
        return  # refusing is fine
    sections = {part.split(" ", 1)[0]: part for part in result.output.split("; ")[1:]}
    for domain in ("example.net", "example.org"):
        assert "imap.brand.example" not in sections[domain], sections[domain]
        assert "mx.brand.example" not in sections[domain], sections[domain]


def test_dns_check_with_brand_does_not_judge_a_listed_domain_by_another_brand(
    cli: Callable[..., Any], knot: KnotServer
) -> None:
    """example.net publishes the ISP's records; checked "as" Brand Telecom it must not be reported
    as wrong for lacking Brand Telecom's servers (refusing the --brand is fine too)."""
    args = ("--nameserver", "127.0.0.1", "--port", str(knot.port))
    plain = cli("dns", "check", *args, "example.net")
    branded = cli("dns", "check", *args, "--brand", "brand.example", "example.net")
    refused = branded.exit_code != 0 and "--brand" in branded.output and "expected" not in branded.output
    assert refused or branded.output == plain.output, (plain.output, branded.output)


def test_cli_render_is_written_in_the_mailbox_s_brand_and_signed_by_its_signer(
    tmp_path: Path, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    own, shared = make_pki(tmp_path / "own"), make_pki(tmp_path / "shared")
    config_data["providers"][1]["apple"] = signing(own)
    config_data["apple"] = signing(shared)
    path = write_config(config_data)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(main, ["--config", str(path), *args], env={})

    from autoconfig import create_app

    app = create_app(load(path, env={}))
    try:
        Admin(app.test_client()).set("carol@brand.example", imap=True)
    finally:
        app.extensions["autoconfig"].store.close()
    result = run("render", "thunderbird", "Carol@Brand.Example")
    assert result.exit_code == 0, result.output
    assert 'id="brand.example"' in result.output and "example.net" not in result.output
    out = tmp_path / "carol.mobileconfig"
    result = run("render", "apple", "carol@brand.example", "--out", str(out))
    assert result.exit_code == 0, result.output

    assert verified(out.read_bytes(), own.root_cert) is not None
    assert verified(out.read_bytes(), shared.root_cert) is None


def test_the_one_brand_form_still_detects_hosted_domains_by_dns_mx_hosts(
    tmp_path: Path, make_server: MakeServer, knot: KnotServer
) -> None:
    server = make_server(base_config(tmp_path, dns=dns_settings(knot.port)))
    LiveAdmin(server).set("owner@shop.example", imap=True)
    status, body = get(server, "/mail/config-v1.1.xml?emailaddress=owner@shop.example")
    assert status == 200 and b'id="example.net"' in body
    status, _ = get(server, "/mail/config-v1.1.xml?emailaddress=owner@brandshop.example")
    assert status == 404
