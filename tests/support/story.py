"""The customer's platform as the story tests start it (tests/test_story.py,
tests/test_story_hostile.py), and what the customer does in Roundcube.

This service under gunicorn, Dovecot with the shipped snippet, and Roundcube
with this repository's plugin, all on loopback: on loopback any 127.x address
stands for another host, so the webmail talks to Dovecot from 127.0.0.1 and
the customer's mail program from 127.0.0.3.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page

from .admin import LiveAdmin
from .config import ADMIN_TOKEN, POLICY_HEADER, base_config
from .dovecot import DovecotServer, dovecot_settings
from .gunicorn import GunicornServer, gunicorn_on
from .mail_clients import deliver
from .roundcube import RoundcubeServer

SECRET = "story-dovecot-policy-secret-0123456789"
PASSWORD = "customer's password 1"
WEBMAIL_HOST = "127.0.0.1"
CLIENT_HOST = "127.0.0.3"
CUSTOMER_IP = "198.51.100.23"
DESKTOP = {"width": 1280, "height": 860}
TIMEOUT = 2  # seconds the plugin waits for the service (autoconfig_timeout)
CUSTOMERS = ("nora", "oscar", "petra", "quinn", "rosa", "sam", "tess")
USERS = {f"{name}@example.net": PASSWORD for name in CUSTOMERS}
WELCOME = (
    b"From: Example Networks <support@example.net>\r\nTo: {to}\r\n"
    b"Subject: Welcome to Example Networks\r\nMessage-ID: <welcome@example.net>\r\n\r\nHello!\r\n"
)


@dataclass
class Stack:
    service: GunicornServer
    dovecot: DovecotServer
    webmail: RoundcubeServer

    @property
    def admin(self) -> LiveAdmin:
        """The service's admin API, as the webmail's plugin calls it."""
        return LiveAdmin(self.service)


def plugin_options(service: GunicornServer) -> dict[str, Any]:
    return {
        "autoconfig_api_url": service.url,
        "autoconfig_api_token": ADMIN_TOKEN,
        "autoconfig_setup_url": f"{service.url}/setup",
        "autoconfig_timeout": TIMEOUT,
        "autoconfig_forward_client_ip": True,
    }


def start_stack(workdir: Path) -> Iterator[Stack]:
    """The whole platform, as an ISP deploys it, on loopback."""
    dovecot_section = {"api_header": f"{POLICY_HEADER}: {SECRET}", "webmail_networks": [f"{WEBMAIL_HOST}/32"]}
    with gunicorn_on(workdir, base_config(workdir, dovecot=dovecot_section)) as service:
        settings = dovecot_settings(
            f"{service.url}/dovecot/auth-policy", f"{POLICY_HEADER}: {SECRET}", reject_on_fail=False
        )
        with DovecotServer(
            workdir / "dovecot", USERS, extra_config=settings, login_trusted_networks=[f"{WEBMAIL_HOST}/32"]
        ) as dovecot:
            for user in USERS:  # from the webmail's host: delivery is not a mail program
                deliver(dovecot.imap_port, user, PASSWORD, WELCOME.replace(b"{to}", user.encode()))
            with RoundcubeServer(workdir / "roundcube", dovecot.imap_port, plugin_options(service)) as webmail:
                yield Stack(service, dovecot, webmail)


@contextlib.contextmanager
def plugin_configured(stack: Stack, **options: Any) -> Iterator[None]:
    """The webmail's plugin with ``options`` for the ``with`` block, then set up as ``start_stack``
    set it (``plugin_options``) whatever the block raised: the module's next test shares the stack."""
    stack.webmail.configure(**options)
    try:
        yield
    finally:
        stack.webmail.configure(**plugin_options(stack.service))


@contextlib.contextmanager
def silent_service(stack: Stack) -> Iterator[None]:
    """The plugin pointed, for the ``with`` block, at a port that accepts connections and never
    answers: how a hung service looks to the plugin, which must give up after its timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        with plugin_configured(stack, autoconfig_api_url=f"http://127.0.0.1:{silent.getsockname()[1]}"):
            yield


# -- what the customer does ---------------------------------------------------------------


def signed_in(context: BrowserContext, webmail: RoundcubeServer, user: str) -> Page:
    """A new tab of ``context`` with ``user`` signed in to the webmail: where the story tests start."""
    page = context.new_page()
    sign_in(page, webmail, user)
    return page


def sign_in(page: Page, webmail: RoundcubeServer, user: str) -> None:
    """Sign in to Roundcube; return once the inbox and its welcome message show."""
    page.goto(webmail.url)
    page.fill("#rcmloginuser", user)
    page.fill("#rcmloginpwd", PASSWORD)
    page.click("#rcmloginsubmit")
    assert_inbox_shows(page)


def assert_inbox_shows(page: Page) -> None:
    page.wait_for_selector("#messagelist tbody tr")
    assert "Welcome to Example Networks" in page.inner_text("#messagelist")
    assert page.locator("#mailboxlist li.inbox.selected").count() == 1


def open_mail_programs(page: Page) -> None:
    """Settings, then "Mail programs" in its menu: the way a customer gets there."""
    page.click("#taskmenu a.settings")
    page.click("#settings-menu li.mailprograms a")
    page.wait_for_selector("#mailprograms")


def switches_shown(page: Page) -> dict[str, bool] | None:
    """The switches on the page, or None when the page shows none."""
    if page.locator("#mailprograms-form").count() == 0:
        return None
    return {name: page.is_checked(f"#mailprograms-{name}") for name in ("imap", "pop")}


def flip(page: Page, **switches: bool) -> None:
    """Set the switches on the page (Elastic draws them as toggles) and save."""
    for name, on in switches.items():
        page.locator(f"#mailprograms-{name}").set_checked(on, force=True)
    page.click("#mailprograms-save")
    page.wait_for_selector("#mailprograms")


def message(page: Page) -> str:
    for selector in ("#mailprograms-error", "#mailprograms-notice"):
        if page.locator(selector).count():
            return page.inner_text(selector)
    return ""
