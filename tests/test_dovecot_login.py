"""The switch enforced at login: a real Dovecot asks the real gunicorn service.

Dovecot runs the shipped config/dovecot-2.3-auth-policy.conf verbatim, except
for the URL, the secret, the nonce and auth_policy_reject_on_fail, so these
tests also prove the snippet an admin copies.  Users log in with Python's
imaplib and poplib; switches change through the admin API, as the webmail
changes them.
"""

from __future__ import annotations

import copy
import imaplib
import json
import poplib
import re
import secrets
import tomllib
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import ADMIN_TOKEN, BASE_CONFIG, WEBMAIL_URL
from tests.support.dovecot import DovecotServer
from tests.support.gunicorn import ROOT, GunicornServer
from tests.support.ports import free_port

SNIPPET = ROOT / "config" / "dovecot-2.3-auth-policy.conf"
HEADER = "X-Autoconfig-Policy-Key"
SECRET = "e2e-dovecot-policy-secret-0123456789"
PASSWORD = "correct horse"
USERS = {f"{name}@example.net": PASSWORD for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace")}
AUTH_FAILED_IMAP = "[AUTHENTICATIONFAILED] Authentication failed."
AUTH_FAILED_POP3 = "-ERR [AUTH] Authentication failed."


def dovecot_settings(url: str, api_header: str, reject_on_fail: bool) -> str:
    """The shipped snippet with this test's URL, secret, nonce and fail choice."""
    text = SNIPPET.read_text()
    for name, value in (
        ("auth_policy_server_url", url),
        ("auth_policy_server_api_header", api_header),
        ("auth_policy_hash_nonce", secrets.token_hex(16)),
        ("auth_policy_reject_on_fail", "yes" if reject_on_fail else "no"),
    ):
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.MULTILINE)
        assert count == 1, f"the snippet must set {name} exactly once"
    assert not [line for line in text.splitlines() if "replace-with" in line and not line.startswith("#")]
    return text


def imap_login(dovecot: DovecotServer, user: str, password: str = PASSWORD) -> str:
    """'OK', or the server's answer to LOGIN as the user's mail program shows it."""
    client = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10)
    try:
        client.login(user, password)
        return "OK"
    except imaplib.IMAP4.error as exc:
        reason = exc.args[0]
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    finally:
        client.shutdown()


def pop3_login(dovecot: DovecotServer, user: str, password: str = PASSWORD) -> str:
    client = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=10)
    try:
        client.user(user)
        client.pass_(password)
        return "OK"
    except poplib.error_proto as exc:
        reason = exc.args[0]
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    finally:
        client.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    workdir = tmp_path_factory.mktemp("autoconfig")
    data = copy.deepcopy(BASE_CONFIG)
    data["store"]["url"] = f"sqlite:///{workdir}/accounts.sqlite3"
    data["dovecot"] = {"api_header": f"{HEADER}: {SECRET}"}
    config = workdir / "autoconfig.toml"
    config.write_bytes(tomli_w.dumps(data).encode())
    with GunicornServer(config, workdir / "gunicorn.log") as server:
        yield server


@pytest.fixture(scope="module")
def dovecot(service: GunicornServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    settings = dovecot_settings(f"{service.url}/dovecot/auth-policy", f"{HEADER}: {SECRET}", reject_on_fail=False)
    with DovecotServer(tmp_path_factory.mktemp("dovecot"), USERS, extra_config=settings) as server:
        yield server


def switch(service: GunicornServer, address: str, **switches: bool) -> None:
    """What the webmail does when the user flips a switch."""
    request = urllib.request.Request(
        f"{service.url}/admin/v1/accounts/{address}",
        data=json.dumps(switches).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_nothing_enabled_means_no_login_and_the_way_forward(service: GunicornServer, dovecot: DovecotServer) -> None:
    imap = imap_login(dovecot, "alice@example.net")
    assert imap.startswith("[ALERT] IMAP is turned off")
    assert WEBMAIL_URL in imap and "enable IMAP" in imap
    pop3 = pop3_login(dovecot, "alice@example.net")
    assert pop3.startswith("-ERR [AUTH] POP is turned off") and WEBMAIL_URL in pop3
    service.wait_for_log("auth-policy: reject (imap login alice@example.net")


def test_enabling_imap_lets_imap_in_at_once_and_pop3_stays_out(service: GunicornServer, dovecot: DovecotServer) -> None:
    switch(service, "bob@example.net", imap=True)
    assert imap_login(dovecot, "bob@example.net") == "OK"
    assert pop3_login(dovecot, "bob@example.net").startswith("-ERR [AUTH] POP is turned off")

    switch(service, "bob@example.net", imap=False)
    assert imap_login(dovecot, "bob@example.net").startswith("[ALERT] IMAP is turned off")


def test_enabling_pop_lets_pop3_in(service: GunicornServer, dovecot: DovecotServer) -> None:
    switch(service, "carol@example.net", pop=True)
    assert pop3_login(dovecot, "carol@example.net") == "OK"
    assert imap_login(dovecot, "carol@example.net").startswith("[ALERT]")


def test_both_switches_on_let_both_in_and_turning_one_off_shuts_only_it(
    service: GunicornServer, dovecot: DovecotServer
) -> None:
    switch(service, "grace@example.net", imap=True, pop=True)
    assert imap_login(dovecot, "grace@example.net") == "OK"
    assert pop3_login(dovecot, "grace@example.net") == "OK"

    switch(service, "grace@example.net", pop=False)
    assert imap_login(dovecot, "grace@example.net") == "OK"
    assert pop3_login(dovecot, "grace@example.net").startswith("-ERR [AUTH] POP is turned off")


def test_a_wrong_password_fails_the_same_way_whatever_is_enabled(
    service: GunicornServer, dovecot: DovecotServer
) -> None:
    """No answer before the password is checked: a guesser learns nothing about the switches."""
    switch(service, "dave@example.net", imap=True, pop=True)
    accounts = ["dave@example.net", "erin@example.net", "nobody@example.net"]  # enabled, all off, unknown
    with ThreadPoolExecutor(max_workers=len(accounts)) as pool:  # each failure takes Dovecot ~0.5 s
        imap = set(pool.map(lambda user: imap_login(dovecot, user, "wrong"), accounts))
        pop3 = set(pool.map(lambda user: pop3_login(dovecot, user, "wrong"), accounts))
    assert imap == {AUTH_FAILED_IMAP}
    assert pop3 == {AUTH_FAILED_POP3}


@pytest.mark.parametrize(
    ("failure", "reject_on_fail", "login"),
    [
        # The shipped choice: the password still decides; the switch is not enforced meanwhile.
        ("unreachable", False, "OK"),
        # The strict choice: nobody logs in, whatever they have enabled.
        ("unreachable", True, AUTH_FAILED_IMAP),
        # A secret that differs on the two sides is a failure like any other (401, logged by both).
        ("wrong-secret", False, "OK"),
    ],
    ids=["unreachable-fail-open", "unreachable-fail-closed", "wrong-secret-fail-open"],
)
def test_when_the_service_fails_dovecot_does_what_its_setting_says(
    service: GunicornServer, tmp_path: Path, failure: str, reject_on_fail: bool, login: str
) -> None:
    if failure == "unreachable":
        url, header = f"http://127.0.0.1:{free_port()}/dovecot/auth-policy", f"{HEADER}: {SECRET}"
    else:
        url, header = f"{service.url}/dovecot/auth-policy", f"{HEADER}: not-the-{SECRET}"
    settings = dovecot_settings(url, header, reject_on_fail)
    with DovecotServer(tmp_path / "dovecot", USERS, extra_config=settings) as dovecot:
        assert imap_login(dovecot, "frank@example.net") == login
        assert "Policy server HTTP error" in dovecot.log_text()


def test_the_snippet_and_the_reference_config_share_one_secret_line() -> None:
    snippet = re.search(r"^auth_policy_server_api_header = (.*)$", SNIPPET.read_text(), re.MULTILINE)
    reference = tomllib.loads((ROOT / "config" / "reference.toml").read_text())
    assert snippet is not None and snippet.group(1) == reference["dovecot"]["api_header"]
