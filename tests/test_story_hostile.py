"""The story's webmail plugin against a hostile or broken world.

The admin API the plugin calls may be compromised or broken (huge or
trickling answers, redirects, wrong JSON, any status), the service may die
mid-request, the plugin may be misconfigured, and the user's own browser
may send forged requests.  Whatever happens, the user sees a plain message
within a few seconds, nothing changes that the user did not ask for, no
switch is shown that was not just read, and the admin token never leaves
the Roundcube server.

The stack is test_story's (Roundcube, Dovecot, gunicorn, Chromium); the
hostile admin API is a small HTTP server on loopback that a test points the
plugin at (nothing real can be told to misbehave on cue).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.support.config import ADMIN_TOKEN
from tests.support.roundcube import RoundcubeServer
from tests.support.story import (
    DESKTOP,
    PASSWORD,
    TIMEOUT,
    Stack,
    message,
    open_mail_programs,
    plugin_configured,
    plugin_options,
    sign_in,
    signed_in,
    start_stack,
    switches_shown,
)

PAGE = "?_task=settings&_action=plugin.autoconfig_mail_programs"
SAVE = "?_task=settings&_action=plugin.autoconfig_mail_programs-save"
NOT_READ = "The settings for mail programs cannot be shown right now"
NOT_SAVED = "Your change was not saved"
NOT_CONFIRMED = "Your change could not be confirmed"
# What a page may cost the user when the service misbehaves: the plugin's timeout
# plus Roundcube's own work, far below nginx's 60 s and PHP's limits.
PATIENCE = TIMEOUT + 6
MIB = 1 << 20


# -- a hostile admin API ---------------------------------------------------------------------

Behaviour = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class HostileAPI:
    """Answers every request with ``behaviour``; remembers what it was sent."""

    behaviour: Behaviour
    requests: list[dict[str, Any]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    url: str = ""


def respond(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    return behave


def flood(total: int, chunked: bool) -> Behaviour:
    """A 200 whose body is ``total`` bytes of JSON whitespace, sent as fast as loopback goes."""
    block = b" " * MIB

    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(total))
        handler.end_headers()
        try:
            for _ in range(total // MIB):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            if chunked:
                handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client gave up: what it should do

    return behave


def _dribble(api: HostileAPI, handler: BaseHTTPRequestHandler, byte: bytes) -> None:
    """``byte`` every 0.2 s (1000 at most) until the test stops the API or the client hangs up:
    what the two trickling behaviours send after their start."""
    try:
        for _ in range(1000):
            if api.stopping.wait(0.2):
                return
            handler.wfile.write(byte)
            handler.wfile.flush()
    except OSError:
        pass


def trickle(api: HostileAPI) -> Behaviour:
    """A 200 that sends its body one byte at a time, for as long as the client listens."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        _dribble(api, handler, b" ")

    return behave


def trickle_headers(api: HostileAPI) -> Behaviour:
    """A 200 whose headers never end: one byte of an endless header at a time."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        _dribble(api, handler, b"a")

    return behave


def hang_up(handler: BaseHTTPRequestHandler) -> None:
    """The service dies after reading the request: the connection closes without an answer."""
    handler.close_connection = True
    handler.connection.shutdown(2)


def silence(api: HostileAPI) -> Behaviour:
    """The service accepts the request and never answers."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        api.stopping.wait(120)

    return behave


@pytest.fixture
def hostile() -> Iterator[HostileAPI]:
    api = HostileAPI(respond(500, b"{}"))

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            api.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
            )
            api.behaviour(self)

        do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.stopping.set()
        server.shutdown()
        server.server_close()


# -- the stack, the browser, a signed-in customer ------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(PATIENCE * 1000 + 5000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def customer(stack: Stack, context: BrowserContext) -> Page:
    """nora, signed in once for the module; each test starts from the plugin's page."""
    return signed_in(context, stack.webmail, "nora@example.net")


@pytest.fixture
def plugin_pointed_at(stack: Stack, hostile: HostileAPI) -> Iterator[HostileAPI]:
    with plugin_configured(stack, autoconfig_api_url=hostile.url):
        yield hostile


def visit(page: Page, stack: Stack) -> tuple[int, float]:
    """Open the plugin's page; its HTTP status and how long it took."""
    started = time.monotonic()
    response = page.goto(f"{stack.webmail.url}{PAGE}")
    assert response is not None
    page.wait_for_selector("#mailprograms")
    return response.status, time.monotonic() - started


def assert_nothing_leaked(page: Page, stack: Stack) -> None:
    assert ADMIN_TOKEN not in page.content()
    assert ADMIN_TOKEN not in page.evaluate("() => JSON.stringify(window.rcmail ? rcmail.env : {})")
    assert ADMIN_TOKEN not in stack.webmail.log_text()
    assert ADMIN_TOKEN not in stack.service.log_text()


# -- a hostile or broken admin API, when the page is opened --------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (respond(200, b"<html>It works!</html>", "text/html"), NOT_READ),
        (respond(200, b'{"imap": "true", "pop": 1}'), NOT_READ),
        (respond(200, b"[true, false]"), NOT_READ),
        (respond(200, b'{"imap": true}'), NOT_READ),
        (respond(500, b"Internal Server Error", "text/plain"), NOT_READ),
        (respond(503, b'{"error": "unavailable"}', Retry_After="1"), NOT_READ),
        (respond(401, b'{"error": "unauthorized"}'), NOT_READ),
        (respond(404, b'{"error": "not_found"}'), NOT_READ),
        (respond(409, b'{"error": "read_only"}'), "IMAP and POP for your mailbox are managed by your provider"),
        (respond(400, b'{"error": "bad_request"}'), "IMAP and POP cannot be set for this mailbox here"),
        (respond(400, b'{"message": "<script>alert(document.domain)</script>"}'), "IMAP and POP cannot be set"),
        (hang_up, NOT_READ),
        (flood(192 * MIB, chunked=False), NOT_READ),
        (flood(192 * MIB, chunked=True), NOT_READ),
    ],
    ids=[
        "200-html",
        "200-strings-for-booleans",
        "200-list",
        "200-no-pop",
        "500-text",
        "503",
        "401",
        "404",
        "409-read-only",
        "400-not-served",
        "400-script-in-message",
        "hang-up",
        "huge-with-length",
        "huge-chunked",
    ],
)
def test_a_broken_admin_api_costs_a_plain_message_and_shows_no_switch(
    stack: Stack, customer: Page, plugin_pointed_at: HostileAPI, behaviour: Behaviour, expected: str
) -> None:
    plugin_pointed_at.behaviour = behaviour
    status, elapsed = visit(customer, stack)
    assert status == 200
    assert message(customer).startswith(expected)
    assert switches_shown(customer) is None
    assert "<script>alert" not in customer.content()
    assert elapsed < PATIENCE
    assert_nothing_leaked(customer, stack)


FORGED = "[01-Jan-2030 00:00:00 +0000]: <forged> PHP Error: the admin approved this"


@pytest.mark.parametrize(
    "body",
    [
        (f"busy\n{FORGED}\n").encode(),
        json.dumps({"error": "server_error", "message": f"busy\r\n{FORGED}"}).encode(),
        json.dumps({"error": "server_error", "message": "x" * 60000}).encode(),
    ],
    ids=["text", "json-message", "long-message"],
)
def test_what_the_service_says_reaches_roundcubes_log_as_one_short_line(
    stack: Stack, customer: Page, plugin_pointed_at: HostileAPI, body: bytes
) -> None:
    """A compromised service must not write lines of its own into the webmail's logs."""
    plugin_pointed_at.behaviour = respond(500, body, "text/plain")
    visit(customer, stack)
    assert message(customer).startswith(NOT_READ)
    log = stack.webmail.log_text()
    assert not [line for line in log.splitlines() if line.startswith(FORGED[:20])]
    assert "x" * 1000 not in log


def test_a_redirect_never_takes_the_token_elsewhere(
    stack: Stack, customer: Page, plugin_pointed_at: HostileAPI, hostile: HostileAPI
) -> None:
    plugin_pointed_at.behaviour = respond(307, b"", Location=f"{hostile.url}/elsewhere")
    visit(customer, stack)
    assert message(customer).startswith(NOT_READ)
    assert [request["path"] for request in hostile.requests] == ["/admin/v1/accounts/nora%40example.net"]


@pytest.mark.parametrize("slow", [trickle, trickle_headers], ids=["body", "headers"])
def test_a_trickling_answer_is_given_up_on_within_the_timeout(
    stack: Stack, customer: Page, plugin_pointed_at: HostileAPI, slow: Callable[[HostileAPI], Behaviour]
) -> None:
    """Each byte comes well within the timeout, so only a limit on the whole call helps."""
    plugin_pointed_at.behaviour = slow(plugin_pointed_at)
    status, elapsed = visit(customer, stack)
    assert (status, message(customer)[: len(NOT_READ)]) == (200, NOT_READ)
    assert TIMEOUT <= elapsed < PATIENCE


# -- the plugin's own timeout, as an admin may misconfigure it -----------------------------------


@pytest.mark.parametrize(
    ("timeout", "bound"),
    [(0, 3 + 6), (600, 10 + 6)],
    ids=["zero", "ten-minutes"],
)
def test_a_misconfigured_timeout_still_gives_up_in_seconds(
    stack: Stack, customer: Page, plugin_pointed_at: HostileAPI, timeout: Any, bound: float
) -> None:
    """Guzzle reads 0 as "wait for ever"; nginx gives up after 60 s with a gateway error."""
    plugin_pointed_at.behaviour = silence(plugin_pointed_at)
    with plugin_configured(stack, autoconfig_timeout=timeout):
        status, elapsed = visit(customer, stack)
    assert (status, message(customer)[: len(NOT_READ)]) == (200, NOT_READ)
    assert elapsed < bound


# -- the service failing between reading the switches and saving them ---------------------------


@pytest.fixture
def own_page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    try:
        yield page
    finally:
        page.close()


def open_then_break(page: Page, stack: Stack, user: str, hostile: HostileAPI, behaviour: Behaviour) -> None:
    """The user opens the page while the service works, ticks IMAP; then the service breaks
    (the caller points the plugin at ``hostile`` for the save: ``plugin_configured``)."""
    page.context.clear_cookies()
    sign_in(page, stack.webmail, user)
    open_mail_programs(page)
    assert switches_shown(page) == {"imap": False, "pop": False}
    page.locator("#mailprograms-imap").set_checked(True, force=True)
    hostile.behaviour = behaviour


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (hang_up, NOT_CONFIRMED),  # the request had reached the service: it may have saved it
        (flood(192 * MIB, chunked=True), NOT_CONFIRMED),
        (respond(409, b'{"error": "read_only"}'), "IMAP and POP for your mailbox are managed by your provider"),
    ],
    ids=["hang-up", "huge", "409"],
)
def test_a_save_the_service_fails_shows_the_failure_and_no_switch(
    stack: Stack, own_page: Page, hostile: HostileAPI, behaviour: Behaviour, expected: str
) -> None:
    user = "oscar@example.net"
    open_then_break(own_page, stack, user, hostile, behaviour)
    with plugin_configured(stack, autoconfig_api_url=hostile.url):
        own_page.click("#mailprograms-save")
        own_page.wait_for_selector("#mailprograms-error")
    assert message(own_page).startswith(expected)
    assert switches_shown(own_page) is None
    assert stack.admin.get(user)["imap_changed"] is None
    assert_nothing_leaked(own_page, stack)


def test_a_service_that_dies_after_making_the_change_is_not_said_to_have_failed(
    stack: Stack, own_page: Page, hostile: HostileAPI
) -> None:
    """The request reached the service, which stored the change and died before answering:
    "not saved" would be a lie.  Only a connection that never opened proves nothing changed."""
    user = "quinn@example.net"

    def store_then_die(handler: BaseHTTPRequestHandler) -> None:
        sent = hostile.requests[-1]
        request = urllib.request.Request(
            f"{stack.service.url}{sent['path']}",
            data=sent["body"],
            method=sent["method"],
            headers={name: sent["headers"][name] for name in ("Authorization", "Content-Type", "X-Autoconfig-Actor")},
        )
        urllib.request.urlopen(request, timeout=10).close()
        hang_up(handler)

    open_then_break(own_page, stack, user, hostile, store_then_die)
    with plugin_configured(stack, autoconfig_api_url=hostile.url):
        own_page.click("#mailprograms-save")
        own_page.wait_for_selector("#mailprograms-error")
    assert stack.admin.get(user)["imap"] is True
    assert message(own_page).startswith(NOT_CONFIRMED)
    assert switches_shown(own_page) is None


# -- the plugin on a Roundcube without php-curl ---------------------------------------------------


def test_without_php_curl_the_plugin_never_calls_and_says_why_in_the_log(
    stack: Stack, browser: Browser, hostile: HostileAPI, tmp_path: Path
) -> None:
    """Without curl, Guzzle's timeout bounds each read only: a trickling service would hold
    the webmail's PHP workers for ever.  Debian's roundcube-core does not pull php-curl in."""
    options = plugin_options(stack.service) | {"autoconfig_api_url": hostile.url}
    no_curl = {"disable_functions": "curl_exec,curl_multi_exec"}
    with RoundcubeServer(tmp_path / "roundcube", stack.dovecot.imap_port, options, php_admin=no_curl) as webmail:
        context = browser.new_context(viewport=DESKTOP)
        try:
            page = context.new_page()
            sign_in(page, webmail, "quinn@example.net")
            open_mail_programs(page)
            assert message(page).startswith(NOT_READ)
            assert switches_shown(page) is None
        finally:
            context.close()
        assert "install php-curl" in webmail.log_text()
    assert hostile.requests == []


# -- forged requests from the user's own browser ------------------------------------------------


def save_form(page: Page, stack: Stack, **kwargs: Any) -> str:
    response = page.request.post(f"{stack.webmail.url}{SAVE}", **kwargs)
    return response.text()


@pytest.mark.parametrize(
    "forge",
    [
        # Roundcube's own check accepts its ajax header instead of _token; the plugin does not.
        lambda token: {"form": {"_imap": "1", "_pop": "1"}, "headers": {"X-Roundcube-Request": token}},
        # A JSON body leaves PHP's $_POST empty, which Roundcube lets through.
        lambda token: {"data": {"_token": token, "_imap": "1"}},
        lambda token: {"form": {"_token[]": token, "_imap": "1"}},
    ],
    ids=["ajax-header-only", "json", "token-as-array"],
)
def test_a_save_without_the_token_in_the_form_changes_nothing(
    stack: Stack, own_page: Page, forge: Callable[[str], dict[str, Any]]
) -> None:
    user = "rosa@example.net"
    own_page.context.clear_cookies()
    sign_in(own_page, stack.webmail, user)
    open_mail_programs(own_page)
    token = own_page.get_attribute("#mailprograms-form input[name=_token]", "value")
    assert token
    before = stack.admin.get(user)
    answer = save_form(own_page, stack, **forge(token))
    assert "Saved." not in answer
    assert stack.admin.get(user) == before


def test_a_save_after_the_session_ended_changes_nothing(stack: Stack, own_page: Page) -> None:
    """The session expires (or is ended elsewhere) between opening the page and saving."""
    user = "sam@example.net"
    own_page.context.clear_cookies()
    sign_in(own_page, stack.webmail, user)
    open_mail_programs(own_page)
    own_page.locator("#mailprograms-imap").set_checked(True, force=True)
    assert stack.webmail.root is not None
    with closing(sqlite3.connect(stack.webmail.root / "db" / "roundcube.sqlite")) as database, database:
        database.execute("DELETE FROM session")
    own_page.click("#mailprograms-save")
    own_page.wait_for_selector("#rcmloginuser")
    assert stack.admin.get(user)["imap_changed"] is None
    # Signed in again, Roundcube returns to the save action, now a GET with a fresh
    # _token in the URL: the plugin reads the token from the form only, so still no save.
    own_page.fill("#rcmloginuser", user)
    own_page.fill("#rcmloginpwd", PASSWORD)
    own_page.click("#rcmloginsubmit")
    own_page.wait_for_selector("#mailprograms")
    assert "_token=" in own_page.url
    assert message(own_page).startswith("Nothing was changed")
    assert stack.admin.get(user)["imap_changed"] is None


def test_the_webmail_url_of_a_refusal_leads_to_the_plugin_after_signing_in(stack: Stack, own_page: Page) -> None:
    """README and reference.toml point webmail_url at the plugin's page: Roundcube shows its
    login first and must then open that page, not the inbox."""
    own_page.context.clear_cookies()
    own_page.goto(f"{stack.webmail.url}{PAGE}")
    own_page.fill("#rcmloginuser", "tess@example.net")
    own_page.fill("#rcmloginpwd", PASSWORD)
    own_page.click("#rcmloginsubmit")
    own_page.wait_for_selector("#mailprograms-form")
    assert switches_shown(own_page) == {"imap": False, "pop": False}


@pytest.mark.parametrize(
    "options",
    [
        {"autoconfig_api_token": ""},
        {"autoconfig_api_url": ""},
        {"autoconfig_api_url": "not a url"},
        {"autoconfig_api_url": "file:///etc/passwd#"},
        {"autoconfig_api_url": None, "autoconfig_api_token": None, "autoconfig_timeout": None},
    ],
    ids=["no-token", "no-url", "not-a-url", "file-url", "all-null"],
)
def test_a_misconfigured_plugin_shows_a_plain_message(stack: Stack, customer: Page, options: dict[str, Any]) -> None:
    with plugin_configured(stack, **options):
        status, _elapsed = visit(customer, stack)
    assert (status, message(customer)[: len(NOT_READ)]) == (200, NOT_READ)
    assert switches_shown(customer) is None
    assert "root:" not in customer.content()
