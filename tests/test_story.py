"""The customer's story, end to end, with every real part.

A customer signs in to the ISP's webmail (which must always work, whatever
the switches say), turns IMAP on in Settings, then sets up a mail program,
which finds its settings and logs in; turned off again, the program is
refused and the webmail still works.

The parts, all started here on loopback:

- Debian's Roundcube 1.6 on PHP-FPM behind nginx, with this repository's
  plugin (roundcube-plugin/autoconfig_mail_programs);
- Dovecot, as installed (2.3 on Debian 12, 2.4 on Debian 13), with the
  shipped snippet for it (config/dovecot-2.3-auth-policy.conf or
  config/dovecot-2.4-auth-policy.conf) and ``login_trusted_networks`` set to
  the webmail's host, so Roundcube can forward its user's address through
  IMAP ID;
- this service under gunicorn, with ``[dovecot] webmail_networks``;
- Debian's Chromium, driven by Playwright, as the customer's browser.

On loopback any 127.x address stands for another host: the webmail talks to
Dovecot from 127.0.0.1, the customer's mail program from 127.0.0.3.  The
browser stands behind a front proxy that names the customer's address
(X-Forwarded-For: 198.51.100.23), which Roundcube forwards to Dovecot.

Screenshots of the settings page, before and after, land in the test's temp
dir (story-*.png).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from playwright.sync_api import Browser, BrowserContext, Page

from tests.support.config import ADMIN_TOKEN
from tests.support.gunicorn import GunicornServer
from tests.support.mail_clients import imap_login, pop3_login
from tests.support.roundcube import RoundcubeServer
from tests.support.story import (
    CLIENT_HOST,
    CUSTOMER_IP,
    DESKTOP,
    PASSWORD,
    TIMEOUT,
    WEBMAIL_HOST,
    Stack,
    assert_inbox_shows,
    flip,
    message,
    open_mail_programs,
    plugin_configured,
    sign_in,
    signed_in,
    silent_service,
    start_stack,
    switches_shown,
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("story"))


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """The customer's browser, behind a front proxy that names the customer's address."""
    context = browser.new_context(viewport=DESKTOP, extra_http_headers={"X-Forwarded-For": CUSTOMER_IP})
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


# -- what the rest of the world sees ---------------------------------------------------------


def thunderbird(service: GunicornServer, address: str) -> tuple[int, list[str]]:
    """The status of Thunderbird's autoconfig request and the incoming server types it lists."""
    url = f"{service.url}/mail/config-v1.1.xml?emailaddress={address}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            document = etree.fromstring(response.read())
            return response.status, [server.get("type") for server in document.iter("incomingServer")]
    except urllib.error.HTTPError as exc:
        return exc.code, []


def mail_program_login(stack: Stack, user: str, protocol: str = "imap") -> str:
    if protocol == "imap":
        return imap_login(stack.dovecot.imap_port, user, PASSWORD, source=CLIENT_HOST)
    return pop3_login(stack.dovecot.pop3_port, user, PASSWORD, source=CLIENT_HOST)


# -- the story ------------------------------------------------------------------------------------


def test_the_customers_story(stack: Stack, context: BrowserContext, tmp_path: Path) -> None:
    user = "nora@example.net"
    page = context.new_page()

    # 1. A new customer, with everything off, signs in to the webmail: it works.
    assert stack.admin.get(user)["imap_changed"] is None
    sign_in(page, stack.webmail, user)

    # 2. Settings -> Mail programs: both switches off, as the service has them.
    open_mail_programs(page)
    assert switches_shown(page) == {"imap": False, "pop": False}
    assert "Mail programs (IMAP and POP)" in page.inner_text("#mailprograms")
    assert "We recommend IMAP" in page.inner_text("#mailprograms")
    assert page.locator("#mailprograms-setup").count() == 0
    page.screenshot(path=str(tmp_path / "story-1-before.png"), full_page=True)
    assert mail_program_login(stack, user).startswith("[ALERT] IMAP is turned off")

    # They turn IMAP on and save.
    flip(page, imap=True)
    assert switches_shown(page) == {"imap": True, "pop": False}
    assert message(page).startswith("Saved.")
    setup = page.get_attribute("#mailprograms-setup", "href")
    assert setup == f"{stack.service.url}/setup?emailaddress=nora%40example.net"
    page.screenshot(path=str(tmp_path / "story-2-after.png"), full_page=True)
    change = stack.admin.get(user)
    assert (change["imap"], change["pop"]) == (True, False)
    assert change["imap_changed"]["by"] == "api:webmail/roundcube:nora%40example.net"

    # 3. The mail program's document now lists IMAP, and no POP.
    assert thunderbird(stack.service, user) == (200, ["imap"])

    # 4. The mail program logs in from the customer's computer.
    assert mail_program_login(stack, user) == "OK"
    assert mail_program_login(stack, user, "pop3").startswith("-ERR [AUTH] POP is turned off")

    # 5. IMAP off again: the document declines, the program is refused, the webmail works.
    flip(page, imap=False)
    assert switches_shown(page) == {"imap": False, "pop": False}
    page.screenshot(path=str(tmp_path / "story-3-off-again.png"), full_page=True)
    assert thunderbird(stack.service, user) == (404, [])
    assert mail_program_login(stack, user).startswith("[ALERT] IMAP is turned off")
    page.click("#taskmenu a.mail")
    assert_inbox_shows(page)
    sign_out_and_in(page, stack.webmail, user)

    # The webmail forwarded the customer's address; the gate still knew it was the webmail.
    stack.service.wait_for_log(
        f"webmail (imap login {user}, session=", f"remote={CUSTOMER_IP} real_remote={WEBMAIL_HOST}"
    )
    assert ADMIN_TOKEN not in page.content()


def sign_out_and_in(page: Page, webmail: RoundcubeServer, user: str) -> None:
    page.click("#taskmenu a.logout")
    page.wait_for_selector("#rcmloginuser")
    sign_in(page, webmail, user)


def test_pop_works_the_same_way(stack: Stack, context: BrowserContext) -> None:
    user = "oscar@example.net"
    page = signed_in(context, stack.webmail, user)
    open_mail_programs(page)
    flip(page, pop=True)
    assert switches_shown(page) == {"imap": False, "pop": True}
    assert thunderbird(stack.service, user) == (200, ["pop3"])
    assert mail_program_login(stack, user, "pop3") == "OK"
    assert mail_program_login(stack, user, "imap").startswith("[ALERT] IMAP is turned off")
    flip(page, imap=True, pop=True)
    assert thunderbird(stack.service, user) == (200, ["imap", "pop3"])
    assert mail_program_login(stack, user) == "OK"


def test_the_page_shows_what_the_service_has_not_what_it_showed_before(stack: Stack, context: BrowserContext) -> None:
    """A switch changed elsewhere (another tab, the helpdesk) shows at the next visit."""
    user = "petra@example.net"
    page = signed_in(context, stack.webmail, user)
    open_mail_programs(page)
    assert switches_shown(page) == {"imap": False, "pop": False}
    stack.admin.put(user, imap=True, pop=True)
    page.reload()
    assert switches_shown(page) == {"imap": True, "pop": True}


# -- forged and broken requests change nothing ---------------------------------------------------


def save_request(page: Page, webmail: RoundcubeServer, form: dict[str, str]) -> str:
    """POST to the plugin's save action with the browser's own cookies, as a forged form would;
    the text of the page that comes back."""
    response = page.request.post(
        f"{webmail.url}?_task=settings&_action=plugin.autoconfig_mail_programs-save", form=form
    )
    assert response.status == 200
    return response.text()


def test_a_request_naming_another_address_changes_only_the_users_own(stack: Stack, context: BrowserContext) -> None:
    user, victim = "quinn@example.net", "rosa@example.net"
    page = signed_in(context, stack.webmail, user)
    open_mail_programs(page)
    token = page.get_attribute("#mailprograms-form input[name=_token]", "value")
    assert token
    forged = {"_token": token, "_imap": "1", "_pop": "1"}
    forged |= {"_address": victim, "_email": victim, "_user": victim, "emailaddress": victim, "_username": victim}
    assert "Saved." in save_request(page, stack.webmail, forged)
    assert stack.admin.get(victim)["imap_changed"] is None
    assert (stack.admin.get(victim)["imap"], stack.admin.get(victim)["pop"]) == (False, False)
    assert (stack.admin.get(user)["imap"], stack.admin.get(user)["pop"]) == (True, True)


@pytest.mark.parametrize(
    ("form", "refusal"),
    [
        ({"_imap": "1", "_pop": "1"}, '"server_error":403'),
        ({"_token": "", "_imap": "1"}, '"server_error":403'),
        ({"_token": "not-the-request-token", "_pop": "1"}, '"server_error":403'),
        # Roundcube lets an empty POST through its own check; to the plugin it would
        # read as "both off", so the plugin refuses it itself.
        ({}, "Nothing was changed: the request was not valid."),
    ],
    ids=["no-token", "empty-token", "wrong-token", "empty-post"],
)
def test_a_save_without_the_request_token_changes_nothing(
    stack: Stack, context: BrowserContext, form: dict[str, str], refusal: str
) -> None:
    user = "sam@example.net"
    page = signed_in(context, stack.webmail, user)
    open_mail_programs(page)
    flip(page, imap=True, pop=True)
    before = stack.admin.get(user)
    assert refusal in save_request(page, stack.webmail, form)
    assert stack.admin.get(user) == before
    # A GET to the save action is no save either.
    page.goto(f"{stack.webmail.url}?_task=settings&_action=plugin.autoconfig_mail_programs-save&_imap=0&_pop=0")
    assert message(page).startswith("Nothing was changed")
    assert stack.admin.get(user) == before


# -- the service down, slow or refusing --------------------------------------------------------


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """A platform of its own, for a test that stops its service."""
    yield from start_stack(tmp_path)


def test_with_the_service_stopped_a_save_fails_plainly_and_the_webmail_still_works(
    own_stack: Stack, context: BrowserContext, tmp_path: Path
) -> None:
    user = "tess@example.net"
    page = signed_in(context, own_stack.webmail, user)
    open_mail_programs(page)
    assert switches_shown(page) == {"imap": False, "pop": False}
    page.locator("#mailprograms-imap").set_checked(True, force=True)

    own_stack.service.stop()
    page.click("#mailprograms-save")
    page.wait_for_selector("#mailprograms-error")
    assert message(page).startswith("Your change was not saved")
    assert switches_shown(page) is None  # it could not read them, so it shows none
    page.screenshot(path=str(tmp_path / "story-service-down.png"), full_page=True)
    assert "could not save the switches of tess@example.net" in own_stack.webmail.log_text()

    # The webmail still works, and a new sign-in too (Dovecot lets logins through when the service is down).
    page.click("#taskmenu a.mail")
    assert_inbox_shows(page)
    sign_out_and_in(page, own_stack.webmail, user)
    open_mail_programs(page)
    assert message(page).startswith("The settings for mail programs cannot be shown right now")
    assert switches_shown(page) is None


def test_a_slow_service_is_given_up_on_within_the_timeout(stack: Stack, context: BrowserContext) -> None:
    """A service that accepts the connection and never answers costs the user a few seconds, no more."""
    user = "nora@example.net"
    page = signed_in(context, stack.webmail, user)
    with silent_service(stack):
        started = time.monotonic()
        open_mail_programs(page)
        elapsed = time.monotonic() - started
    assert message(page).startswith("The settings for mail programs cannot be shown right now")
    assert switches_shown(page) is None
    assert TIMEOUT <= elapsed < TIMEOUT + 8


def test_a_save_the_service_never_answers_is_not_called_saved(stack: Stack, context: BrowserContext) -> None:
    """Past the timeout the change may or may not have been made: the user is told so, and shown no switch."""
    user = "nora@example.net"
    page = signed_in(context, stack.webmail, user)
    open_mail_programs(page)
    before = stack.admin.get(user)
    page.locator("#mailprograms-pop").set_checked(not before["pop"], force=True)
    with silent_service(stack):
        started = time.monotonic()
        page.click("#mailprograms-save")
        page.wait_for_selector("#mailprograms-error")
        elapsed = time.monotonic() - started
    assert message(page).startswith("Your change could not be confirmed")
    assert switches_shown(page) is None
    assert TIMEOUT <= elapsed < TIMEOUT + 8  # one wait, not a second one for a read
    assert stack.admin.get(user) == before


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"autoconfig_api_token": "not-the-admin-token-0123"}, "The settings for mail programs cannot be shown"),
        ({"autoconfig_api_url": "http://127.0.0.1:1"}, "The settings for mail programs cannot be shown"),
    ],
    ids=["wrong-token", "nothing-listening"],
)
def test_a_refusing_service_shows_a_plain_message_and_no_switches(
    stack: Stack, context: BrowserContext, options: dict[str, str], expected: str
) -> None:
    user = "oscar@example.net"
    page = signed_in(context, stack.webmail, user)
    with plugin_configured(stack, **options):
        open_mail_programs(page)
    assert message(page).startswith(expected)
    assert switches_shown(page) is None
    assert "not-the-admin-token" not in page.content()
