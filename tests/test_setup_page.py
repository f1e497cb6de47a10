"""The /setup page and the HTML the profile endpoints show people: the
settings or the way forward, security headers, and nothing from the request
coming back unescaped.  The browser tests are in test_setup_browser.py."""

from __future__ import annotations

import plistlib
import re
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from markupsafe import escape
from playwright.sync_api import Browser

from tests.support.admin import Admin
from tests.support.apple_schema import assert_valid_profile
from tests.support.config import WEBMAIL_URL
from tests.support.promises import APPLE_PATHS as APPLE_PROFILE_PATHS
from tests.support.qr import scan_html

SETUP = "/setup"
HTML_PATHS = [SETUP, *APPLE_PROFILE_PATHS]
PUBLIC_PROFILE_URL = "https://autoconfig.example.net/apple/mail.mobileconfig?emailaddress="


def page(client: FlaskClient, address: str | None = None, **kwargs: object) -> tuple[int, str]:
    query = {} if address is None else {"emailaddress": address}
    response = client.get(SETUP, query_string=query, **kwargs)  # type: ignore[arg-type]
    return response.status_code, response.get_data(as_text=True)


def enable(admin: Admin, address: str, imap: bool = True) -> None:
    """Set switches for an address whose characters would change the admin URL's meaning."""
    admin.set(quote(address, safe="@"), imap=imap)


def test_the_form(client: FlaskClient) -> None:
    status, text = page(client)
    assert status == 200
    assert '<form class="lookup" method="get" action="/setup">' in text
    assert 'name="emailaddress"' in text
    assert "IMAP or POP?" in text and WEBMAIL_URL in text


@pytest.mark.parametrize(
    ("imap", "pop", "shown", "hidden"),
    [
        (True, False, ["Incoming mail (IMAP)", "imap.example.net", "993"], ["pop.example.net", "(POP)"]),
        (False, True, ["Incoming mail (POP)", "pop.example.net", "995", "IMAP is turned off"], ["imap.example.net"]),
        (True, True, ["Incoming mail (IMAP)", "Incoming mail (POP)"], ["IMAP is turned off"]),
    ],
)
def test_enabled_account_sees_exactly_its_settings(
    client: FlaskClient, admin: Admin, imap: bool, pop: bool, shown: list[str], hidden: list[str]
) -> None:
    admin.set("alice@example.net", imap=imap, pop=pop)
    status, text = page(client, "alice@example.net")
    assert status == 200
    for fragment in [*shown, "Outgoing mail (SMTP)", "smtp.example.net", "465", "587", "SSL/TLS", "STARTTLS"]:
        assert fragment in text
    for fragment in hidden:
        assert fragment not in text
    assert 'href="/apple/mail.mobileconfig?emailaddress=alice%40example.net"' in text
    assert "find these settings by themselves" in text  # the Thunderbird / Outlook note
    assert "Enable IMAP or POP first" not in text


def test_the_apple_code_opens_the_public_profile_url_whatever_the_host_header(
    client: FlaskClient, admin: Admin, browser: Browser
) -> None:
    admin.set("alice@example.net", imap=True)
    _, text = page(client, "alice@example.net", headers={"Host": "evil.example"})
    apple = [code for code in scan_html(browser, text) if "iPhone" in code.caption]
    assert [code.payload for code in apple] == [(PUBLIC_PROFILE_URL + "alice%40example.net").encode()]
    assert "evil.example" not in text


@pytest.mark.parametrize("address", ["bob@example.net", "never-seen@example.net"])
def test_nothing_enabled_or_unknown_gets_the_way_forward(client: FlaskClient, admin: Admin, address: str) -> None:
    admin.set("bob@example.net", imap=False, pop=False)
    status, text = page(client, address)
    assert status == 200
    assert "Enable IMAP or POP first" in text
    assert "POP and IMAP are turned off for every mailbox" in text
    assert f'<a class="button" href="{WEBMAIL_URL}">' in text
    assert "IMAP (recommended)" in text and "IMAP or POP?" in text
    for secret in ("imap.example.net", "pop.example.net", "smtp.example.net", "mobileconfig"):
        assert secret not in text


def test_disabled_and_unknown_pages_are_identical(client: FlaskClient, admin: Admin) -> None:
    admin.set("bob@example.net", imap=True)
    admin.set("bob@example.net", imap=False)
    bob = client.get(SETUP, query_string={"emailaddress": "bob@example.net"})
    zed = client.get(SETUP, query_string={"emailaddress": "zed@example.net"})
    assert (bob.status_code, dict(bob.headers)) == (zed.status_code, dict(zed.headers))
    assert bob.data == zed.data.replace(b"zed@", b"bob@")


@pytest.mark.parametrize("path", [SETUP, *APPLE_PROFILE_PATHS, "/setup/static/setup.css"])
def test_security_headers(client: FlaskClient, admin: Admin, path: str) -> None:
    admin.set("alice@example.net", imap=True)
    with client.get(path, query_string={"emailaddress": "alice@example.net"}) as response:
        assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("address", [None, "alice@example.net", "bob@example.net", "not an address"])
def test_pages_hold_no_script_and_no_inline_style(client: FlaskClient, admin: Admin, address: str | None) -> None:
    admin.set("alice@example.net", imap=True)
    _, text = page(client, address)
    lowered = text.lower()
    assert "<script" not in lowered and "javascript:" not in lowered
    assert not re.search(r"\son[a-z]+\s*=", lowered), "no event handler attributes"
    assert "<style" not in lowered and " style=" not in lowered, "the CSP allows the stylesheet only"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text


# Every hostile address on the profile endpoints and on the page: a clear 4xx, no trace of it in the answer.
HOSTILE_QUERIES = {
    "quotes": ("emailaddress=%22alice%22@example.net", 400),
    "quote inside": ("emailaddress=ali%22ce@example.net", 400),
    "script": ("emailaddress=%3Cscript%3Ealert(1)%3C/script%3E@example.net", 400),
    "script in domain": ("emailaddress=a@%3Cscript%3E.example.net", 400),
    "NUL": ("emailaddress=a%00@example.net", 400),
    "CRLF": ("emailaddress=a%0d%0aSet-Cookie:%20x=1@example.net", 400),
    "bell": ("emailaddress=a%07@example.net", 400),
    "escape": ("emailaddress=a%1b%5b31m@example.net", 400),
    "bidi override": ("emailaddress=a%E2%80%AE@example.net", 400),
    "5000 characters": ("emailaddress=" + "a" * 5000 + "@example.net", 414),
    "1500 characters": ("emailaddress=" + "a" * 1500 + "@example.net", 400),
    "given twice": ("emailaddress=alice@example.net&emailaddress=bob@example.net", 400),
    "given twice, once empty": ("emailaddress=alice@example.net&emailaddress=", 400),
    "empty": ("emailaddress=", 400),
    "missing (profile only; the page shows the form)": ("", 400),
}


@pytest.mark.parametrize("path", HTML_PATHS)
@pytest.mark.parametrize(("query", "status"), list(HOSTILE_QUERIES.values()), ids=list(HOSTILE_QUERIES))
def test_hostile_addresses_get_a_clear_4xx_page(
    client: FlaskClient, admin: Admin, path: str, query: str, status: int
) -> None:
    admin.set("alice@example.net", imap=True)
    if path == SETUP and query == "":
        status = 200
    response = client.get(path, query_string=query)
    assert response.status_code == status
    assert response.content_type == "text/html; charset=utf-8"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    if status != 200:
        assert 'class="problem"' in text, "the reason is stated"
    for fragment in ("<script", "alert(", "Set-Cookie", "\x00", "\x1b", "\u202e", "aaaaaaaaaa", "alice@"):
        assert fragment not in text
    assert "Set-Cookie" not in response.headers
    assert "Content-Security-Policy" in response.headers


# Valid addresses whose characters mean something in HTML, XML or Jinja: escaped, never interpreted.
ODD_ADDRESSES = ["o'neil&co@example.net", "{{7*7}}@example.net", "a+b=c/d?e@example.net", "x%3Cy@example.net"]


@pytest.mark.parametrize("address", ODD_ADDRESSES)
def test_odd_but_valid_addresses_are_escaped_on_the_page(client: FlaskClient, admin: Admin, address: str) -> None:
    for enabled in (True, False):
        enable(admin, address, imap=enabled)
        status, text = page(client, address)
        assert status == 200
        assert escape(address) in text
        if "'" in address or "&" in address:
            assert address not in text, "quotes and ampersands are escaped"
        assert "49@" not in text, "templates do not evaluate input"
        if enabled:
            assert escape(f"emailaddress={quote(address, safe='')}") in text


@pytest.mark.parametrize("path", APPLE_PROFILE_PATHS)
@pytest.mark.parametrize("address", ODD_ADDRESSES)
def test_odd_but_valid_addresses_make_a_well_formed_profile(
    client: FlaskClient, admin: Admin, path: str, address: str
) -> None:
    enable(admin, address)
    response = client.get(path, query_string={"emailaddress": address})
    assert response.status_code == 200
    profile = plistlib.loads(response.data, fmt=plistlib.FMT_XML)
    assert_valid_profile(profile)
    payload = profile["PayloadContent"][0]
    assert payload["EmailAddress"] == payload["IncomingMailServerUsername"] == address
    assert re.fullmatch(r"[a-z.]+\.[0-9A-F-]{36}", payload["PayloadIdentifier"]), "the address never enters an id"
