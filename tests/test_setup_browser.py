"""The setup page in a real browser (Debian's chromium driven by Playwright)
against the real gunicorn server, on a phone-sized screen.

Screenshots land in each test's temp dir (setup-*.png) for a human to look at.
"""

from __future__ import annotations

import plistlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from tests.support import export_for_mobile
from tests.support.admin import LiveAdmin
from tests.support.apple_schema import assert_valid_profile
from tests.support.config import WEBMAIL_URL
from tests.support.gunicorn import GunicornServer
from tests.support.qr import SCREEN, scan_page

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A fresh phone-sized page, and the console messages it logs (a CSP violation shows up there)."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    messages: list[str] = []

    def record(message: ConsoleMessage) -> None:
        messages.append(f"{message.type}: {message.text}")

    page.on("console", record)
    try:
        yield page, messages
    finally:
        context.close()


def look_up(page: Page, server: GunicornServer, address: str) -> None:
    """What a person does: open the page, type the address, press the button."""
    page.goto(f"{server.url}/setup")
    assert page.locator("h1").inner_text() == "Set up your mail"
    page.get_by_label("Your email address").fill(address)
    with page.expect_navigation():
        page.get_by_role("button", name="Show my settings").click()


def assert_reads_well_on_a_phone(page: Page, messages: list[str]) -> None:
    # The stylesheet loaded under the CSP (the button is styled) and nothing scrolls sideways.
    assert page.evaluate("getComputedStyle(document.querySelector('.button')).backgroundColor") == "rgb(11, 87, 208)"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert not [m for m in messages if "Content Security Policy" in m or m.startswith("error")], messages


def test_an_enabled_account_sees_its_settings_and_gets_the_profile(
    server: GunicornServer, phone: tuple[Page, list[str]], tmp_path: Path
) -> None:
    page, messages = phone
    LiveAdmin(server).set("alice@example.net", imap=True)
    look_up(page, server, "alice@example.net")

    assert page.locator("h1").inner_text() == "Mail settings"
    assert "alice@example.net" in page.locator(".lead").inner_text()
    captions = page.locator("table.server caption").all_inner_texts()
    assert captions == ["Incoming mail (IMAP)", "Outgoing mail (SMTP)", "Outgoing mail (SMTP), alternative"]
    first = page.locator("table.server").first.inner_text()
    assert "imap.example.net" in first and "993" in first and "SSL/TLS" in first
    assert "pop.example.net" not in page.content()
    assert page.get_by_text("find these settings by themselves").is_visible()
    codes = page.locator("figure.qr")
    assert codes.count() == 2 and all(code.is_visible() for code in codes.all())
    assert page.evaluate("[...document.querySelectorAll('img.qr')].every(i => i.naturalWidth > 0)")
    assert_reads_well_on_a_phone(page, messages)
    page.screenshot(path=tmp_path / "setup-enabled.png", full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the profile for Apple Mail").click()
    download = download_info.value
    assert download.suggested_filename == "example.net-mail.mobileconfig"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    profile = plistlib.loads(saved.read_bytes())
    assert_valid_profile(profile)
    assert profile["PayloadContent"][0]["EmailAccountType"] == "EmailTypeIMAP"


@pytest.mark.parametrize("address", ["bob@example.net", "nobody-at-all@example.net"])
def test_a_disabled_or_unknown_account_is_told_to_enable_imap_in_webmail(
    server: GunicornServer, phone: tuple[Page, list[str]], tmp_path: Path, address: str
) -> None:
    page, messages = phone
    LiveAdmin(server).set("bob@example.net", imap=False, pop=False)
    look_up(page, server, address)

    assert page.locator("h1").inner_text() == "Enable IMAP or POP first"
    assert "turned off for every mailbox" in page.locator("main").inner_text()
    webmail = page.get_by_role("link", name="Open webmail settings")
    assert webmail.is_visible() and webmail.get_attribute("href") == WEBMAIL_URL
    assert page.get_by_role("heading", name="IMAP or POP?").is_visible()
    assert "IMAP (recommended)" in page.locator("#imap-or-pop").inner_text()
    assert page.locator("table.server").count() == 0 and page.locator("img, figure.qr").count() == 0
    assert page.get_by_label("Check again, or try another address").input_value() == address
    assert_reads_well_on_a_phone(page, messages)
    page.screenshot(path=tmp_path / "setup-disabled.png", full_page=True)


def test_a_phone_scans_the_android_code_off_a_laptop_screen(
    server: GunicornServer, browser: Browser, tmp_path: Path
) -> None:
    """The whole way: the real server, the page in Chromium at laptop size, the code photographed and decoded."""
    LiveAdmin(server).set("alice@example.net", pop=True)
    context = browser.new_context(viewport=SCREEN)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/setup?emailaddress=alice%40example.net")
        page.screenshot(path=tmp_path / "setup-laptop.png", full_page=True)
        codes = {code.caption: code.payload for code in scan_page(page)}
    finally:
        context.close()
    android = next(payload for caption, payload in codes.items() if "Thunderbird for Android" in caption)
    [account] = export_for_mobile.read(android).accounts
    assert (account.incoming.protocol, account.incoming.hostname, account.incoming.password) == (
        "POP3",
        "pop.example.net",
        None,
    )
    assert account.outgoing[0].identities[0].email == "alice@example.net"
    assert b"imap.example.net" not in android


def test_a_mistyped_address_gets_the_reason_and_the_form_again(
    server: GunicornServer, phone: tuple[Page, list[str]], tmp_path: Path
) -> None:
    page, _ = phone
    look_up(page, server, "alice at example.net")
    assert page.locator(".problem").inner_text().startswith("invalid email address")
    assert page.get_by_label("Your email address").is_visible()
    page.screenshot(path=tmp_path / "setup-mistyped.png", full_page=True)
