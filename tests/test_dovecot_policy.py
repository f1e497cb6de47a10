"""Dovecot's auth-policy endpoint, spoken to as Dovecot speaks (Flask test client).

The login decision is the autoconfig decision: for every combination of
switches and servers, a protocol may be logged in to exactly when the
settings documents would advertise it.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from autoconfig import create_app, policy
from autoconfig.config import ConfigError, load
from autoconfig.login_policy import refusal
from autoconfig.spec import MAX_POLICY_BODY
from autoconfig.store import StoreUnavailable, Switches
from tests.support.admin import Admin
from tests.support.config import POLICY_HEADER, WEBMAIL_URL

SECRET = "dovecot-policy-secret-0123456789"
URL = "/dovecot/auth-policy"
PWHASH = "5e88489ab1c0"


@pytest.fixture
def config_data(config_data: dict[str, Any]) -> dict[str, Any]:
    config_data["dovecot"] = {"api_header": f"{POLICY_HEADER}: {SECRET}"}
    return config_data


def ask(
    client: FlaskClient,
    login: str = "alice@example.net",
    protocol: str = "imap",
    command: str = "allow",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> TestResponse:
    """One request the way Dovecot 2.3 sends it (attributes of the shipped snippet, plus pwhash)."""
    body = {"login": login, "protocol": protocol, "remote": "192.0.2.7", "session_id": "Zq3z/Sph1JJ/AAAB"}
    body |= {"pwhash": PWHASH, "tls": False, **extra}
    return client.post(
        f"{URL}?command={command}", json=body, headers={POLICY_HEADER: SECRET} if headers is None else headers
    )


def decisions(app: Flask, **labels: str) -> float:
    registry = app.extensions["autoconfig_metrics"]
    registry.flush()  # decisions are tallied in memory and written once a second
    value = registry.registry.get_sample_value("autoconfig_dovecot_policy_decisions_total", labels)
    return float(value or 0)


# -- the decision ------------------------------------------------------------


def test_nothing_enabled_refuses_imap_and_pop3_with_the_way_forward(client: FlaskClient) -> None:
    for protocol, name in (("imap", "IMAP"), ("pop3", "POP")):
        response = ask(client, protocol=protocol)
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == -1
        assert f"enable {name}" in body["msg"] and WEBMAIL_URL in body["msg"]


def test_enabling_imap_allows_imap_at_once_and_pop3_stays_refused(client: FlaskClient, admin: Admin) -> None:
    admin.set("alice@example.net", imap=True)
    assert ask(client, protocol="imap").get_json() == {"status": 0}
    assert ask(client, protocol="pop3").get_json()["status"] == -1
    admin.set("alice@example.net", imap=False)
    assert ask(client, protocol="imap").get_json()["status"] == -1


def test_the_login_is_normalised_like_every_other_address(client: FlaskClient, admin: Admin) -> None:
    admin.set("alice@example.net", pop=True)
    assert ask(client, login="Alice@EXAMPLE.NET", protocol="pop3").get_json() == {"status": 0}


@pytest.mark.parametrize("protocol", ["submission", "smtp", "sieve", "lmtp", "doveadm", "IMAP", ""])
def test_other_protocols_are_never_gated(client: FlaskClient, protocol: str) -> None:
    assert ask(client, protocol=protocol).get_json() == {"status": 0}


@pytest.mark.parametrize(
    "login",
    ["alice", "alice@customer.example", "", "a@b@customer.example", "alice@[192.0.2.1]", "alice@example.net@"],
    ids=["no-domain", "not-served", "empty", "two-at-elsewhere", "ip-literal", "at-the-end"],
)
def test_logins_that_are_not_our_addresses_get_no_opinion(client: FlaskClient, app: Flask, login: str) -> None:
    assert ask(client, login=login).get_json() == {"status": 0}
    assert decisions(app, command="allow", protocol="imap", decision="not_ours") == 1


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize(
    "login",
    [
        "john..smith@example.net",
        "alice.@example.net",
        ".bob@example.org",
        "a@b@example.net",
        "@example.net",
        "x" * 300 + "@example.net",
        "alice@EXAMPLE.net.",
    ],
    ids=["double-dot", "trailing-dot", "leading-dot", "two-at", "no-local-part", "too-long", "domain-dot"],
)
def test_a_login_of_our_domains_that_is_no_address_we_can_key_is_refused(
    client: FlaskClient, app: Flask, caplog: pytest.LogCaptureFixture, login: str, protocol: str
) -> None:
    """Dovecot's default auth_username_chars allows dots anywhere, and a real Dovecot logs such
    mailboxes in (tests/test_dovecot_login.py). They got "no opinion", so they were let in with
    every switch off; no switch can ever be on for them (the admin API refuses the address)."""
    with caplog.at_level(logging.WARNING, logger="autoconfig.web.dovecot"):
        body = ask(client, login=login, protocol=protocol).get_json()
    assert body == {"status": -1, "msg": refusal(protocol, WEBMAIL_URL)}
    assert decisions(app, command="allow", protocol=protocol, decision="reject") == 1
    assert "is in a served domain but not an address this service can hold switches for" in caplog.text


@pytest.mark.parametrize("protocol", ["submission", "sieve"])
def test_such_a_login_to_another_protocol_gets_no_opinion_like_every_login_there(
    client: FlaskClient, protocol: str
) -> None:
    assert ask(client, login="john..smith@example.net", protocol=protocol).get_json() == {"status": 0}


def test_other_protocols_never_wait_for_the_store(client: FlaskClient, app: Flask, monkeypatch: Any) -> None:
    def down(key: str) -> Switches:
        raise StoreUnavailable("database is gone")

    monkeypatch.setattr(app.extensions["autoconfig"].store, "switches", down)
    assert ask(client, protocol="submission").get_json() == {"status": 0}
    response = ask(client, protocol="imap")
    # 503: Dovecot then applies auth_policy_reject_on_fail, as documented.
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"] == "unavailable"
    assert decisions(app, command="allow", protocol="imap", decision="unavailable") == 1


SWITCHES = [Switches(imap=i, pop=p) for i, p in itertools.product((False, True), repeat=2)]
SERVER_SETS = {"imap+pop3": ("imap", "pop3"), "imap-only": ("imap",), "pop3-only": ("pop3",)}


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: f"imap={s.imap},pop={s.pop}")
@pytest.mark.parametrize("server_set", SERVER_SETS)
@pytest.mark.parametrize("protocol", ["imap", "pop3", "submission"])
def test_login_decision_equals_what_autoconfig_advertises(
    config_data: dict[str, Any],
    write_config: Callable[..., Path],
    switches: Switches,
    server_set: str,
    protocol: str,
) -> None:
    for kind in ("imap", "pop3"):
        if kind not in SERVER_SETS[server_set]:
            del config_data["servers"][kind]
    app = create_app(load(write_config(config_data), env={}))
    try:
        svc = app.extensions["autoconfig"]
        svc.store.update("alice@example.net", {"imap": switches.imap, "pop": switches.pop}, "test")
        advertised = policy.offer(switches, svc.config.providers[0].servers).protocols
        document = app.test_client().get("/mail/config-v1.1.xml?emailaddress=alice@example.net")
        assert (document.status_code == 200) == bool(advertised)
        for kind in ("imap", "pop3"):
            assert (f'type="{kind}"'.encode() in document.data) == (kind in advertised)

        status = ask(app.test_client(), protocol=protocol).get_json()["status"]

        if protocol == "submission":
            assert status == 0
        else:
            assert (status == 0) == (protocol in advertised)
    finally:
        svc.store.close()


def test_the_refusal_names_the_protocol_and_the_page() -> None:
    assert refusal("imap", "https://mail.example/x") == (
        "IMAP is turned off for this mailbox. Sign in to webmail at https://mail.example/x and enable IMAP, "
        "then try again."
    )
    assert "\n" not in refusal("pop3", "https://mail.example/\r\nx")


def test_reports_are_answered_and_counted(client: FlaskClient, app: Flask) -> None:
    for success, policy_reject in ((True, False), (False, False), (False, True)):
        response = ask(client, command="report", success=success, policy_reject=policy_reject)
        assert response.status_code == 200 and response.get_json() == {"status": 0}
    for outcome in ("success", "failure", "policy_reject"):
        assert decisions(app, command="report", protocol="imap", decision=outcome) == 1


def test_every_decision_is_counted(client: FlaskClient, app: Flask, admin: Admin) -> None:
    admin.set("alice@example.net", imap=True)
    ask(client, protocol="imap")
    ask(client, protocol="pop3")
    ask(client, protocol="pop3")
    ask(client, protocol="sieve")
    assert decisions(app, command="allow", protocol="imap", decision="allow") == 1
    assert decisions(app, command="allow", protocol="pop3", decision="reject") == 2
    assert decisions(app, command="allow", protocol="other", decision="other_protocol") == 1


def test_decisions_are_logged_without_the_password_hash_or_the_secret(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="autoconfig"):
        ask(client)
        ask(client, command="report", success=False)
        ask(client, headers={POLICY_HEADER: SECRET + "x"})
    decision = [r.getMessage() for r in caplog.records if "reject" in r.getMessage()]
    assert decision and "alice@example.net" in decision[0] and "imap" in decision[0]
    assert all(r.levelno == logging.INFO for r in caplog.records if "reject (" in r.getMessage())
    assert PWHASH not in caplog.text and SECRET not in caplog.text


def test_log_lines_never_carry_control_characters(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autoconfig"):
        ask(client, login="mallory\n2026-01-01 [INFO] forged@example.net", session_id="a\r\nb", remote="\x1b[2J")
    assert "\n2026" not in caplog.text and "\x1b" not in caplog.text and "a\r\nb" not in caplog.text


# -- the shared secret ---------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {POLICY_HEADER: ""},
        {POLICY_HEADER: SECRET + "x"},
        {POLICY_HEADER: SECRET[:-1]},
        {"X-API-Key": SECRET},
        {"Authorization": SECRET},
    ],
    ids=["missing", "empty", "longer", "shorter", "other-header", "authorization"],
)
def test_without_the_secret_the_answer_is_401_and_nothing_is_decided(
    client: FlaskClient, app: Flask, headers: dict[str, str]
) -> None:
    response = ask(client, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert "status" not in response.get_json()
    assert SECRET not in response.get_data(as_text=True)
    assert decisions(app, command="allow", protocol="unknown", decision="unauthorized") == 1


def test_the_secret_may_arrive_with_surrounding_spaces(client: FlaskClient) -> None:
    """Dovecot sends everything after the colon of its setting, leading space included."""
    assert ask(client, headers={POLICY_HEADER: f" {SECRET} "}).status_code == 200


def test_without_a_dovecot_section_the_endpoint_does_not_exist(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    del config_data["dovecot"]
    app = create_app(load(write_config(config_data), env={}))
    response = ask(app.test_client())
    assert response.status_code == 404
    app.extensions["autoconfig"].store.close()


def test_client_endpoints_still_never_send_401(client: FlaskClient) -> None:
    response = client.get("/mail/config-v1.1.xml?emailaddress=alice@example.net", headers={POLICY_HEADER: "wrong"})
    assert response.status_code == 404 and "WWW-Authenticate" not in response.headers


# -- hostile or broken requests -------------------------------------------------


def post(client: FlaskClient, data: bytes | str, command: str = "allow", content_type: str = "application/json") -> Any:
    return client.post(
        f"{URL}?command={command}", data=data, content_type=content_type, headers={POLICY_HEADER: SECRET}
    )


GOOD = {"login": "alice@example.net", "protocol": "imap"}

BAD_REQUESTS = [
    ("not-json", "{login: alice", "application/json", 400, "not valid JSON"),
    ("not-utf8", b'{"login": "\xff"}', "application/json", 400, "not valid JSON"),
    ("array", "[]", "application/json", 400, "JSON object"),
    ("string", '"allow"', "application/json", 400, "JSON object"),
    ("deep", "[" * 50_000, "application/json", 400, "deeper than"),
    ("huge-int", '{"login": ' + "9" * 6000 + "}", "application/json", 400, "not valid JSON"),
    ("no-login", json.dumps({"protocol": "imap"}), "application/json", 400, "login"),
    ("no-protocol", json.dumps({"login": "a@example.net"}), "application/json", 400, "protocol"),
    ("login-number", json.dumps({**GOOD, "login": 1}), "application/json", 400, "login"),
    ("protocol-list", json.dumps({**GOOD, "protocol": ["imap"]}), "application/json", 400, "protocol"),
    ("form", "login=alice", "application/x-www-form-urlencoded", 415, "application/json"),
    ("oversize", json.dumps({**GOOD, "pad": "x" * MAX_POLICY_BODY}), "application/json", 413, "larger"),
]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_broken_bodies_get_a_clear_4xx(
    client: FlaskClient, data: str | bytes, content_type: str, status: int, message: str
) -> None:
    response = post(client, data, content_type=content_type)
    assert response.status_code == status
    assert message in response.get_json()["message"]


def test_report_success_must_be_a_boolean(client: FlaskClient) -> None:
    response = post(client, json.dumps({**GOOD, "success": "yes"}), command="report")
    assert response.status_code == 400 and "success" in response.get_json()["message"]


@pytest.mark.parametrize("query", ["", "?command=deny", "?command=ALLOW", "?command=allow&command=report"])
def test_unknown_commands_are_refused(client: FlaskClient, app: Flask, query: str) -> None:
    response = client.post(URL + query, json=GOOD, headers={POLICY_HEADER: SECRET})
    assert response.status_code == 400
    assert "command" in response.get_json()["message"]
    assert decisions(app, command="unknown", protocol="unknown", decision="bad_request") == 1


def test_unknown_fields_are_ignored(client: FlaskClient) -> None:
    """Admins may send more attributes (device_id, nested attrs/...); they change nothing."""
    response = post(client, json.dumps({**GOOD, "device_id": {"name": "x"}, "attrs": {"cos": [1]}}))
    assert response.get_json()["status"] == -1


def test_get_is_not_allowed(client: FlaskClient) -> None:
    assert client.get(f"{URL}?command=allow", headers={POLICY_HEADER: SECRET}).status_code == 405


# -- configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("X-Key secret-0123456789abcdef", "Header-Name: secret"),
        (": secret-0123456789abcdef", "Header-Name: secret"),
        ("X Key: secret-0123456789abcdef", "Header-Name: secret"),
        ("X-Key: short", "at least 16"),
        ("X-Key: sécret-0123456789abcdef", "printable ASCII"),
        ("Content-Type: secret-0123456789abcdef", "Dovecot's HTTP client"),
    ],
)
def test_a_bad_api_header_names_file_and_key(
    config_data: dict[str, Any], write_config: Callable[..., Path], value: str, message: str
) -> None:
    config_data["dovecot"] = {"api_header": value}
    with pytest.raises(ConfigError) as error:
        load(write_config(config_data), env={})
    assert "dovecot.api_header: " in str(error.value) and message in str(error.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [({}, "dovecot.api_header: is required"), ({"api_header": "X-K: 0123456789abcdef", "url": "x"}, "dovecot.url")],
)
def test_the_dovecot_section_is_checked_like_the_rest(
    config_data: dict[str, Any], write_config: Callable[..., Path], section: dict[str, str], message: str
) -> None:
    config_data["dovecot"] = section
    with pytest.raises(ConfigError) as error:
        load(write_config(config_data), env={})
    assert message in str(error.value)
