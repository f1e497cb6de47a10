"""The setup page's QR code for Thunderbird for Android (issue 23).

Thunderbird for Android asks for its settings without the address, so the
setup page gives it a QR code in Thunderbird's "Export for Mobile" format
instead.  Every code here is read the way a phone reads it: Chromium draws
the page the service answered, zbarimg decodes the picture, and
tests/support/export_for_mobile.py, written from the format's
specification, reads the payload as the app would.  The expected accounts
are literals: what a phone must import, not what the code computes.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Browser

from autoconfig import create_app
from autoconfig.config import load
from tests.support import export_for_mobile
from tests.support.admin import Admin
from tests.support.config import BASE_CONFIG
from tests.support.export_for_mobile import Identity, Server
from tests.support.qr import ScannedCode, scan_html, scan_png

ALICE = "alice@example.net"
SETUP = "/setup"

# The ISPs a code is checked for: the base config (IMAP, POP and two SMTP servers, implicit TLS
# listed first), one with no IMAP server at all, and one whose servers are listed STARTTLS first
# (so the code must still pick implicit TLS) and log in with the local part and CRAM-MD5-style
# "encrypted" passwords.
ISPS: dict[str, dict[str, Any]] = {
    "imap+pop3": BASE_CONFIG["servers"],
    "pop3-only": {key: value for key, value in BASE_CONFIG["servers"].items() if key != "imap"},
    "starttls first, local part": {
        "imap": [
            {"host": "mail.example.net", "port": 143, "socket": "STARTTLS", "username": "local-part"},
            {"host": "mail.example.net", "port": 993, "socket": "SSL", "username": "local-part"},
        ],
        "pop3": [{"host": "mail.example.net", "port": 110, "socket": "STARTTLS", "username": "local-part"}],
        "smtp": [
            {"host": "mail.example.net", "port": 587, "socket": "STARTTLS", "username": "local-part"},
            {
                "host": "mail.example.net",
                "port": 465,
                "socket": "SSL",
                "username": "local-part",
                "authentication": "password-encrypted",
            },
        ],
    },
}

# What the phone imports: (protocol, host, port, connection security, authentication, username).
IMAP = ("IMAP", "imap.example.net", 993, "Tls", "PasswordCleartext", ALICE)
POP3 = ("POP3", "pop.example.net", 995, "Tls", "PasswordCleartext", ALICE)
SMTP = ("SMTP", "smtp.example.net", 465, "Tls", "PasswordCleartext", ALICE)
IMAP_LOCAL = ("IMAP", "mail.example.net", 993, "Tls", "PasswordCleartext", "alice")
POP3_LOCAL = ("POP3", "mail.example.net", 110, "AlwaysStartTls", "PasswordCleartext", "alice")
SMTP_LOCAL = ("SMTP", "mail.example.net", 465, "Tls", "PasswordEncrypted", "alice")

# (ISP, IMAP switch, POP switch) -> the account in the code; None: no code at all.
EXPECTED: dict[tuple[str, bool, bool], tuple[tuple[Any, ...], tuple[Any, ...]] | None] = {
    ("imap+pop3", False, False): None,
    ("imap+pop3", True, False): (IMAP, SMTP),
    ("imap+pop3", False, True): (POP3, SMTP),
    ("imap+pop3", True, True): (IMAP, SMTP),  # IMAP, as the page recommends
    ("pop3-only", False, False): None,
    ("pop3-only", True, False): None,  # IMAP on, but this ISP has no IMAP server to show
    ("pop3-only", False, True): (POP3, SMTP),
    ("pop3-only", True, True): (POP3, SMTP),
    ("starttls first, local part", False, False): None,
    ("starttls first, local part", True, False): (IMAP_LOCAL, SMTP_LOCAL),
    ("starttls first, local part", False, True): (POP3_LOCAL, SMTP_LOCAL),
    ("starttls first, local part", True, True): (IMAP_LOCAL, SMTP_LOCAL),
}
HOSTS = ("imap.example.net", "pop.example.net", "mail.example.net")


@pytest.fixture
def client_for(tmp_path: Path, write_config: Callable[..., Path]) -> Iterator[Callable[..., FlaskClient]]:
    """A test client for an ISP of ``ISPS`` (and optionally other served domains), each on its own database."""
    apps = []

    def make(isp: str, domains: list[str] | None = None) -> FlaskClient:
        data = copy.deepcopy(BASE_CONFIG)
        data["servers"] = copy.deepcopy(ISPS[isp])
        if domains is not None:
            data["provider"]["domains"] = domains
        data["store"]["url"] = f"sqlite:///{tmp_path}/accounts-{len(apps)}.sqlite3"
        app = create_app(load(write_config(data, f"autoconfig-{len(apps)}.toml"), env={}))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["autoconfig"].store.close()


def setup_page(client: FlaskClient, address: str) -> str:
    response = client.get(SETUP, query_string={"emailaddress": address})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def android_codes(codes: list[ScannedCode]) -> list[ScannedCode]:
    return [code for code in codes if "Thunderbird for Android" in code.caption]


@pytest.mark.parametrize(("isp", "imap", "pop"), list(EXPECTED), ids=[f"{i} imap={m} pop={p}" for i, m, p in EXPECTED])
def test_a_phone_scanning_the_code_gets_exactly_the_enabled_protocol_and_no_password(
    client_for: Callable[..., FlaskClient], browser: Browser, isp: str, imap: bool, pop: bool
) -> None:
    client = client_for(isp)
    Admin(client).set(ALICE, imap=imap, pop=pop)
    html = setup_page(client, ALICE)
    codes = scan_html(browser, html)
    expected = EXPECTED[(isp, imap, pop)]
    if expected is None:
        assert codes == [] and 'class="android"' not in html
        return
    [android] = android_codes(codes)
    assert "iPhone" not in android.caption and "Thunderbird for Android" in android.alt
    export = export_for_mobile.read(android.payload)
    assert (export.sequence_number, export.sequence_end) == (1, 1)
    [account] = export.accounts
    incoming, outgoing = expected
    # Six elements each: nothing after the user name, so no account name and no password.
    assert account.incoming == Server(*incoming, password=None, elements=6)
    assert account.account_name is None  # the app names the account after the address
    [group] = account.outgoing
    assert group.server == Server(*outgoing, password=None, elements=6)
    assert group.identities == (Identity(ALICE, ""),)
    shown = {incoming[1], outgoing[1]}
    for host in HOSTS:
        assert (host.encode() in android.payload) == (host in shown), f"{host} in the code"


APPLE_CAPTION = "For iPhone and iPad: opens the Apple Mail profile."
ANDROID_CAPTION = "For Thunderbird for Android: your account's settings, without your password."


@pytest.mark.parametrize(("imap", "pop"), [(True, False), (False, True), (True, True)])
def test_each_code_says_which_device_it_is_for(
    client: FlaskClient, admin: Admin, browser: Browser, imap: bool, pop: bool
) -> None:
    admin.set(ALICE, imap=imap, pop=pop)
    html = setup_page(client, ALICE)
    codes = {code.caption: code for code in scan_html(browser, html)}
    assert list(codes) == [APPLE_CAPTION, ANDROID_CAPTION]
    apple, android = codes[APPLE_CAPTION], codes[ANDROID_CAPTION]
    assert apple.payload == b"https://autoconfig.example.net/apple/mail.mobileconfig?emailaddress=alice%40example.net"
    assert "Apple Mail" in apple.alt and "Thunderbird for Android" in android.alt
    export_for_mobile.read(android.payload)  # the Android code is an account, not a link
    # The one-line instruction names the app and the entry in it to scan with.
    assert "In <strong>Thunderbird for Android</strong>, tap <em>Import settings</em>" in html


@pytest.mark.parametrize("isp", list(ISPS))
def test_all_off_and_unknown_addresses_get_no_code_and_the_same_page(
    client_for: Callable[..., FlaskClient], browser: Browser, isp: str
) -> None:
    client = client_for(isp)
    admin = Admin(client)
    admin.set("bob@example.net", imap=True, pop=True)
    admin.set("bob@example.net", imap=False, pop=False)  # had both on once; off now
    bob, zed = setup_page(client, "bob@example.net"), setup_page(client, "zed@example.net")
    assert bob == zed.replace("zed@", "bob@"), "all-off and unknown: one page"
    assert scan_html(browser, bob) == []
    assert "<img" not in bob and "Thunderbird for Android" not in bob


def test_nothing_of_the_page_is_a_code_when_declined(client: FlaskClient, browser: Browser) -> None:
    """Not just no <img>: the whole declined page, photographed, holds no code for any camera."""
    html = setup_page(client, "never-seen@example.net")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        tab.set_content(html, wait_until="load")
        assert scan_png(tab.screenshot(full_page=True)) == []
    finally:
        context.close()


@pytest.mark.parametrize("local", ["jörg", "用户", "ÉMILE"])
def test_a_non_ascii_local_part_gets_an_explanation_instead_of_a_code(
    client: FlaskClient, admin: Admin, browser: Browser, local: str
) -> None:
    address = f"{local}@example.net"
    admin.set(quote(address, safe="@"), imap=True)
    html = setup_page(client, address)
    codes = scan_html(browser, html)
    assert android_codes(codes) == [], "Thunderbird's format allows ASCII addresses only"
    assert [code.caption for code in codes] == [APPLE_CAPTION]
    assert "there is no code for this address" in html and "add the account" in html
    assert "imap.example.net" in html, "the settings to type in are still on the page"


def test_an_idn_domain_goes_into_the_code_in_its_ascii_form(
    client_for: Callable[..., FlaskClient], browser: Browser
) -> None:
    client = client_for("imap+pop3", domains=["bücher.example"])
    Admin(client).set(quote("alice@bücher.example", safe="@"), imap=True)
    [android] = android_codes(scan_html(browser, setup_page(client, "alice@BÜCHER.example")))
    [account] = export_for_mobile.read(android.payload).accounts
    assert account.incoming.username == "alice@xn--bcher-kva.example"
    assert account.outgoing[0].identities == (Identity("alice@xn--bcher-kva.example", ""),)


# The longest address the service accepts (254 octets): the address is in the code three times.
LONG_DOMAIN = "b" * 63 + "." + "c" * 63 + "." + "d" * 53 + ".example"
LONG_ADDRESS = "a" * 64 + "@" + LONG_DOMAIN


def test_the_longest_address_still_makes_a_code_a_phone_reads(
    client_for: Callable[..., FlaskClient], browser: Browser
) -> None:
    assert len(LONG_ADDRESS) == 254
    client = client_for("imap+pop3", domains=[LONG_DOMAIN])
    Admin(client).set(LONG_ADDRESS, imap=True)
    html = setup_page(client, LONG_ADDRESS)
    [android] = android_codes(scan_html(browser, html))
    [account] = export_for_mobile.read(android.payload).accounts
    assert account.incoming.username == LONG_ADDRESS
    assert account.outgoing[0].identities == (Identity(LONG_ADDRESS, ""),)
    sizes = [int(size) for size in re.findall(r'<img class="qr" [^>]*width="([0-9]+)"', html)]
    assert max(sizes) > 400, "a denser code is drawn larger, not with smaller modules"


def test_local_part_case_is_kept_as_the_user_typed_it(client: FlaskClient, admin: Admin, browser: Browser) -> None:
    admin.set(ALICE, imap=True)
    [android] = android_codes(scan_html(browser, setup_page(client, "Alice@Example.NET")))
    [account] = export_for_mobile.read(android.payload).accounts
    assert account.incoming.username == "Alice@example.net"
    assert account.outgoing[0].identities == (Identity("Alice@example.net", ""),)


# -- break pass: hostile but valid addresses, and no page asks for a password ---------------------

# Accepted addresses whose characters mean something to HTML, JSON, Jinja or a URL, or that are
# not ASCII in ways a reader could mistake (decomposed accents, full-width letters, scripts
# written right to left, a character whose lower case is longer).
ODD_ASCII = [
    "o'neil&co@example.net",
    "{{7*7}}@example.net",
    "a+b=c/d?e@example.net",
    "x%3Cy@example.net",
    "a|b`c@x.example.net",
]
NON_ASCII = [
    "jo\u0308rg@example.net",
    "مستخدم@example.net",
    "ａｌｉｃｅ@example.net",
    "İstanbul@example.net",
    "😀@example.net",
]


@pytest.mark.parametrize("address", ODD_ASCII + NON_ASCII)
def test_odd_addresses_get_codes_that_hold_them_exactly(
    client_for: Callable[..., FlaskClient], browser: Browser, address: str
) -> None:
    client = client_for("imap+pop3", domains=["example.net", "x.example.net"])
    Admin(client).set(quote(address, safe="@"), imap=True)
    html = setup_page(client, address)
    codes = {code.caption: code.payload for code in scan_html(browser, html)}
    typed = unicodedata.normalize("NFC", address)  # the service keeps the local part as typed, in NFC
    apple = "https://autoconfig.example.net/apple/mail.mobileconfig?emailaddress=" + quote(typed, safe="")
    assert codes.pop(APPLE_CAPTION) == apple.encode()
    if address.isascii():
        [account] = export_for_mobile.read(codes.pop(ANDROID_CAPTION)).accounts
        assert account.incoming.username == address
        assert account.outgoing[0].identities == (Identity(address, ""),)
    assert codes == {}, "no other code, and none for Android where the format cannot carry the address"


@pytest.mark.parametrize("query", [None, "alice@example.net", "bob@example.net", "jörg@example.net", "not an address"])
def test_no_page_ever_asks_for_a_password(client: FlaskClient, admin: Admin, query: str | None) -> None:
    admin.set(ALICE, imap=True, pop=True)
    admin.set(quote("jörg@example.net", safe="@"), imap=True)
    response = client.get(SETUP, query_string={} if query is None else {"emailaddress": query})
    assert not re.search(r"<input[^>]*type\s*=\s*[\"']?password", response.get_data(as_text=True), re.IGNORECASE)
