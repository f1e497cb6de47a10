"""The switch enforced at login: a real Dovecot asks the real gunicorn service.

Dovecot runs the shipped snippet for the installed version verbatim
(config/dovecot-2.3-auth-policy.conf on Debian 12's Dovecot 2.3,
config/dovecot-2.4-auth-policy.conf on Debian 13's 2.4), except for the URL,
the secret, the nonce and auth_policy_reject_on_fail, so these tests also
prove the snippet an admin copies.  Between Dovecot and the service sits a
recorder that keeps each request body, so the tests see what Dovecot really
sends (never a password hash).  Users log in with Python's imaplib and
poplib; switches change through the admin API, as the webmail changes them.
"""

from __future__ import annotations

import imaplib
import json
import poplib
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.admin import LiveAdmin
from tests.support.config import POLICY_HEADER, WEBMAIL_URL, base_config
from tests.support.dovecot import (
    SNIPPET_NEVER_SENDS,
    SNIPPET_SENDS,
    SNIPPETS,
    DovecotServer,
    dovecot_settings,
    installed_series,
    version_preamble,
)
from tests.support.gunicorn import ROOT, GunicornServer, gunicorn_on
from tests.support.policy_recorder import PolicyRecorder
from tests.support.ports import free_port, wait_for
from tests.support.tls import self_signed

SERIES = installed_series()
SNIPPET = ROOT / "config" / SNIPPETS[SERIES]
SECRET = "e2e-dovecot-policy-secret-0123456789"
PASSWORD = "correct horse"
USERS = {
    f"{name}@example.net": PASSWORD for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
}
# Mailboxes Dovecot's default auth_username_chars accepts and this service cannot key.
UNKEYABLE = ["john..smith@example.net", "ivan.@example.net", "a@b@example.net"]
USERS |= dict.fromkeys(UNKEYABLE, PASSWORD)
AUTH_FAILED_IMAP = "[AUTHENTICATIONFAILED] Authentication failed."
AUTH_FAILED_POP3 = "-ERR [AUTH] Authentication failed."


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
    with gunicorn_on(workdir, base_config(workdir, dovecot={"api_header": f"{POLICY_HEADER}: {SECRET}"})) as server:
        yield server


@pytest.fixture(scope="module")
def recorder(service: GunicornServer) -> Iterator[PolicyRecorder]:
    """Dovecot's policy requests, kept on their way to the service."""
    with PolicyRecorder(service.url) as hop:
        yield hop


@pytest.fixture(scope="module")
def dovecot(recorder: PolicyRecorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    settings = dovecot_settings(
        f"{recorder.url}/dovecot/auth-policy", f"{POLICY_HEADER}: {SECRET}", reject_on_fail=False
    )
    with DovecotServer(tmp_path_factory.mktemp("dovecot"), USERS, extra_config=settings) as server:
        yield server


def test_nothing_enabled_means_no_login_and_the_way_forward(service: GunicornServer, dovecot: DovecotServer) -> None:
    imap = imap_login(dovecot, "alice@example.net")
    assert imap.startswith("[ALERT] IMAP is turned off")
    assert WEBMAIL_URL in imap and "enable IMAP" in imap
    pop3 = pop3_login(dovecot, "alice@example.net")
    assert pop3.startswith("-ERR [AUTH] POP is turned off") and WEBMAIL_URL in pop3
    service.wait_for_log("auth-policy: reject (imap login alice@example.net")


def test_enabling_imap_lets_imap_in_at_once_and_pop3_stays_out(service: GunicornServer, dovecot: DovecotServer) -> None:
    LiveAdmin(service).set("bob@example.net", imap=True)
    assert imap_login(dovecot, "bob@example.net") == "OK"
    assert pop3_login(dovecot, "bob@example.net").startswith("-ERR [AUTH] POP is turned off")

    LiveAdmin(service).set("bob@example.net", imap=False)
    assert imap_login(dovecot, "bob@example.net").startswith("[ALERT] IMAP is turned off")


def test_enabling_pop_lets_pop3_in(service: GunicornServer, dovecot: DovecotServer) -> None:
    LiveAdmin(service).set("carol@example.net", pop=True)
    assert pop3_login(dovecot, "carol@example.net") == "OK"
    assert imap_login(dovecot, "carol@example.net").startswith("[ALERT]")


def test_both_switches_on_let_both_in_and_turning_one_off_shuts_only_it(
    service: GunicornServer, dovecot: DovecotServer
) -> None:
    LiveAdmin(service).set("grace@example.net", imap=True, pop=True)
    assert imap_login(dovecot, "grace@example.net") == "OK"
    assert pop3_login(dovecot, "grace@example.net") == "OK"

    LiveAdmin(service).set("grace@example.net", pop=False)
    assert imap_login(dovecot, "grace@example.net") == "OK"
    assert pop3_login(dovecot, "grace@example.net").startswith("-ERR [AUTH] POP is turned off")


@pytest.mark.parametrize("login", UNKEYABLE)
def test_a_mailbox_whose_name_the_service_cannot_key_stays_out(
    service: GunicornServer, dovecot: DovecotServer, login: str
) -> None:
    """Dovecot logs these names in; the service answered "no opinion" and Dovecot let them in
    with IMAP and POP never turned on (2.3 and 2.4 alike)."""
    assert imap_login(dovecot, login).startswith("[ALERT] IMAP is turned off")
    assert pop3_login(dovecot, login).startswith("-ERR [AUTH] POP is turned off")
    service.wait_for_log(f"auth-policy: reject (imap login {login}")


def test_a_wrong_password_fails_the_same_way_whatever_is_enabled(
    service: GunicornServer, dovecot: DovecotServer
) -> None:
    """No answer before the password is checked: a guesser learns nothing about the switches."""
    LiveAdmin(service).set("dave@example.net", imap=True, pop=True)
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
        # A service that takes the request and never answers costs the login the snippet's 2 s, no more.
        ("silent", False, "OK"),
    ],
    ids=["unreachable-fail-open", "unreachable-fail-closed", "wrong-secret-fail-open", "silent-fail-open"],
)
def test_when_the_service_fails_dovecot_does_what_its_setting_says(
    service: GunicornServer, tmp_path: Path, failure: str, reject_on_fail: bool, login: str
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog and are never answered
        url, header = f"{service.url}/dovecot/auth-policy", f"{POLICY_HEADER}: {SECRET}"
        if failure == "unreachable":
            url = f"http://127.0.0.1:{free_port()}/dovecot/auth-policy"
        elif failure == "wrong-secret":
            header = f"{POLICY_HEADER}: not-the-{SECRET}"
        elif failure == "silent":
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/dovecot/auth-policy"
        settings = dovecot_settings(url, header, reject_on_fail)
        with DovecotServer(tmp_path / "dovecot", USERS, extra_config=settings) as dovecot:
            started = time.monotonic()
            assert imap_login(dovecot, "frank@example.net") == login
            elapsed = time.monotonic() - started
            # Dovecot's log process writes the auth process's line a moment after the login's answer.
            wait_for(lambda: "Policy server HTTP error" in dovecot.log_text(), 5, "Dovecot's line on the failure")
    if failure == "silent":
        assert 2 <= elapsed < 8, elapsed  # the client's own timeout is 10 s


@pytest.fixture
def refusing_https() -> Iterator[tuple[str, Path]]:
    """A policy server on https:// with a self-signed certificate that refuses every login; its URL
    and certificate (in a directory of its own that Dovecot's auth process, another user, may read:
    pytest's temp dirs are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="autoconfig-policy-tls-"))
    directory.chmod(0o755)
    cert, key = self_signed(directory, ["localhost"])
    cert.chmod(0o644)

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"status": -1, "msg": "refused over https"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/dovecot/auth-policy", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("trusted", [False, True], ids=["certificate-unknown", "ca-given"])
def test_an_https_policy_server_needs_a_certificate_dovecot_can_verify(
    refusing_https: tuple[str, Path], tmp_path: Path, trusted: bool
) -> None:
    """Dovecot checks the policy server's certificate (2.3.19 and 2.4.1 alike): one it cannot verify
    fails every request, which the shipped fail-open choice turns into a gate that is off."""
    url, cert = refusing_https
    settings = dovecot_settings(url, f"{POLICY_HEADER}: {SECRET}", reject_on_fail=False)
    if trusted:
        settings += f"ssl_client_ca_file = {cert}\n"
    with DovecotServer(tmp_path / "dovecot", USERS, extra_config=settings) as dovecot:
        if trusted:
            assert imap_login(dovecot, "frank@example.net") == "[ALERT] refused over https"
        else:
            assert imap_login(dovecot, "frank@example.net") == "OK"
            # 2.3: "... SSL handshake to 127.0.0.1:N failed: Received invalid SSL certificate: ...",
            # 2.4: "... SSL handshaking with 127.0.0.1:N failed: read(...) failed: Received invalid ..."
            error = re.compile(r"Policy server HTTP error: SSL handshak.*Received invalid SSL certificate: self-signed")
            wait_for(lambda: bool(error.search(dovecot.log_text())), 5, "Dovecot to log the certificate it refused")


@pytest.mark.parametrize("series", sorted(SNIPPETS))
def test_each_snippet_and_the_reference_config_share_one_secret_line(series: str) -> None:
    text = (ROOT / "config" / SNIPPETS[series]).read_text()
    snippet = re.search(r"^auth_policy_server_api_header = (.*)$", text, re.MULTILINE)
    reference = tomllib.loads((ROOT / "config" / "reference.toml").read_text())
    assert snippet is not None and snippet.group(1) == reference["dovecot"]["api_header"]


# -- what Dovecot sends --------------------------------------------------------------------


def test_dovecot_sends_the_snippets_attributes_and_never_a_password_hash(
    service: GunicornServer, dovecot: DovecotServer, recorder: PolicyRecorder
) -> None:
    """On 2.4 too, whose defaults (pwhash, device_id, fail_type) are merged in unless cleared."""
    since = len(recorder.recorded())
    LiveAdmin(service).set("heidi@example.net", imap=True)
    assert imap_login(dovecot, "heidi@example.net") == "OK"
    assert pop3_login(dovecot, "heidi@example.net").startswith("-ERR [AUTH] POP is turned off")
    assert imap_login(dovecot, "heidi@example.net", "wrong") == AUTH_FAILED_IMAP  # asked nothing: no report either
    asked = recorder.recorded(since)
    assert [request.path for request in asked] == ["/dovecot/auth-policy?command=allow"] * 2
    bodies = [request.json() for request in asked]
    assert [(body["login"], body["protocol"]) for body in bodies] == [
        ("heidi@example.net", "imap"),
        ("heidi@example.net", "pop3"),
    ]
    for body in bodies:
        assert set(body) == SNIPPET_SENDS, body
        assert body["remote"] == body["real_remote"] == "127.0.0.1"
        assert body["session_id"] and body["tls"] is False
    for request in recorder.recorded():  # and in every request this module's Dovecot made
        assert not SNIPPET_NEVER_SENDS & set(request.json()), request
        assert request.headers[POLICY_HEADER].strip() == SECRET


# -- the wrong snippet for the version -------------------------------------------------------

OTHER_SERIES = {"2.3": "2.4", "2.4": "2.3"}
INSTALLED_AS = "/etc/dovecot/conf.d/95-autoconfig-policy.conf"  # where docs/dovecot.md's quotes put the file


def refusal(series: str, snippet: str) -> tuple[int, str]:
    """The first line of the other series' ``snippet`` that Dovecot ``series`` cannot read, and why."""
    lines = snippet.splitlines()
    if series == "2.4":  # 2.3's one-line list
        number = next(i for i, line in enumerate(lines, 1) if line.startswith("auth_policy_request_attributes = "))
        return (
            number,
            "auth_policy_request_attributes: Setting is a string list, use 'auth_policy_request_attributes {'",
        )
    # 2.4's block: 2.3 names it with its first setting, on that setting's line.
    number = next(i for i, line in enumerate(lines, 1) if line == "auth_policy_request_attributes {") + 1
    return number, f"Unknown setting: auth_policy_request_attributes {{ {lines[number - 1].split()[0]}"


def fatal(path: str, number: int, why: str) -> str:
    return f"doveconf: Fatal: Error in configuration file {path} line {number}: {why}"


def test_the_other_versions_snippet_stops_dovecot_with_the_error_the_docs_quote(tmp_path: Path) -> None:
    """Each snippet in the other version: doveconf (which dovecot, ``doveadm reload`` and systemd
    run first) and dovecot itself refuse it, naming the file and line; docs/dovecot.md quotes that line
    as it reads for the file installed as that page says (each platform checks its own)."""
    other = OTHER_SERIES[SERIES]
    shipped = {series: (ROOT / "config" / name).read_text() for series, name in SNIPPETS.items()}
    # Debian's layout: dovecot.conf (2.4's starts with its version) includes conf.d/*.conf.
    etc = tmp_path / "etc-dovecot"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "dovecot.conf").write_text(f"{version_preamble()}!include conf.d/*.conf\n")
    installed = etc / "conf.d" / "95-autoconfig-policy.conf"

    def doveconf() -> subprocess.CompletedProcess[str]:
        command = ["doveconf", "-n", "-c", str(etc / "dovecot.conf")]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    installed.write_text(shipped[SERIES])  # the right file is read
    right = doveconf()
    assert right.returncode == 0, right.stderr

    installed.write_text(shipped[other])
    wrong = doveconf()
    assert wrong.returncode != 0
    number, why = refusal(SERIES, shipped[other])
    assert fatal(str(installed), number, why) in wrong.stderr.splitlines(), wrong.stderr
    page = (ROOT / "docs" / "dovecot.md").read_text()
    assert fatal(INSTALLED_AS, number, why) in page, "docs/dovecot.md must quote Dovecot's refusal as it is"

    # dovecot itself does not start with it either.
    settings = dovecot_settings(
        "http://127.0.0.1:1/dovecot/auth-policy", f"{POLICY_HEADER}: {SECRET}", False, series=other
    )
    with pytest.raises(RuntimeError) as failure:
        DovecotServer(tmp_path / "dovecot", USERS, extra_config=settings).start()
    assert "Fatal: Error in configuration file" in str(failure.value)
    assert f": {why}\n" in str(failure.value)
