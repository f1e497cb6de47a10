"""The webmail is never locked out: ``[dovecot] webmail_networks``.

The webmail logs in to IMAP as the user, and it is where the user turns IMAP
and POP on.  A login whose *connection* comes from the webmail's networks is
let through whatever the switches say; every other login follows the
switches.  Only Dovecot's ``%{real_rip}`` (2.4: ``%{real_remote_ip}``), sent
as ``real_remote``, counts: ``remote`` (``%{rip}``, 2.4: ``%{remote_ip}``) is
what a webmail in ``login_trusted_networks`` forwards through IMAP ID, and it
must neither grant nor take away the exemption.  These tests speak to the
endpoint as Dovecot does, then to the real Dovecot installed (2.3 or 2.4)
with its shipped snippet; test_dovecot_login.py and test_story.py have more.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from autoconfig.config import ConfigError, load
from autoconfig.store import StoreUnavailable, Switches
from tests.support.admin import Admin, LiveAdmin
from tests.support.config import POLICY_HEADER, base_config
from tests.support.dovecot import MASTER_SEPARATOR, SNIPPET_SENDS, DovecotServer, dovecot_settings
from tests.support.gunicorn import GunicornServer, gunicorn_on
from tests.support.mail_clients import imap_login, pop3_login
from tests.support.policy_recorder import PolicyRecorder

SECRET = "dovecot-policy-secret-0123456789"
PASSWORD = "correct horse"
URL = "/dovecot/auth-policy?command=allow"
WEBMAIL_NETWORKS = ["192.0.2.10/32", "2001:db8:0:1::/64"]
WEBMAIL = "192.0.2.10"
ELSEWHERE = "198.51.100.7"
REFUSED = -1


@pytest.fixture
def config_data(config_data: dict[str, Any]) -> dict[str, Any]:
    config_data["dovecot"] = {"api_header": f"{POLICY_HEADER}: {SECRET}", "webmail_networks": WEBMAIL_NETWORKS}
    return config_data


def ask(
    client: FlaskClient, protocol: str = "imap", login: str = "alice@example.net", **addresses: Any
) -> TestResponse:
    """A request with the shipped snippet's attributes; ``addresses`` sets remote and real_remote."""
    body = {"login": login, "protocol": protocol, "session_id": "Zq3z/Sph1JJ/AAAB"} | addresses
    return client.post(URL, json=body, headers={POLICY_HEADER: SECRET})


def status(response: TestResponse) -> int:
    assert response.status_code == 200, response.data
    return int(response.get_json()["status"])


def decisions(app: Flask, decision: str, protocol: str = "imap") -> float:
    registry = app.extensions["autoconfig_metrics"]
    registry.flush()  # decisions are tallied in memory and written once a second
    value = registry.registry.get_sample_value(
        "autoconfig_dovecot_policy_decisions_total", {"command": "allow", "protocol": protocol, "decision": decision}
    )
    return float(value or 0)


# -- the decision -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize(
    "peer",
    [WEBMAIL, "2001:db8:0:1::25", f"::ffff:{WEBMAIL}", "2001:db8:0:1::25%eth0", "2001:DB8:0:1:0:0:0:25"],
    ids=["v4", "v6", "v4-mapped", "v6-with-zone", "v6-long-form"],
)
def test_a_login_from_the_webmail_is_let_through_with_everything_off(
    client: FlaskClient, app: Flask, protocol: str, peer: str
) -> None:
    assert ask(client, protocol, remote=peer, real_remote=peer).get_json() == {"status": 0}
    assert decisions(app, "webmail", protocol) == 1
    assert decisions(app, "reject", protocol) == 0


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_login_from_anywhere_else_follows_the_switch(client: FlaskClient, admin: Admin, protocol: str) -> None:
    assert status(ask(client, protocol, remote=ELSEWHERE, real_remote=ELSEWHERE)) == REFUSED
    admin.set("alice@example.net", imap=True, pop=True)
    assert status(ask(client, protocol, remote=ELSEWHERE, real_remote=ELSEWHERE)) == 0


@pytest.mark.parametrize(
    ("remote", "real_remote", "expected"),
    [
        # The webmail forwards its user's browser address through IMAP ID: still the webmail.
        (ELSEWHERE, WEBMAIL, 0),
        # A client that forwards the webmail's address is not the webmail.
        (WEBMAIL, ELSEWHERE, REFUSED),
    ],
    ids=["forwarded-by-webmail", "forged-webmail-address"],
)
def test_a_forwarded_address_neither_grants_nor_takes_away_the_exemption(
    client: FlaskClient, remote: str, real_remote: str, expected: int
) -> None:
    assert status(ask(client, remote=remote, real_remote=real_remote)) == expected


def test_a_login_with_no_ip_connection_is_not_the_webmail(client: FlaskClient) -> None:
    """Dovecot sends an empty %{real_rip} for a login that came over no IP connection."""
    assert status(ask(client, remote="", real_remote="")) == REFUSED


def test_the_webmail_logs_in_through_a_store_outage(client: FlaskClient, app: Flask, monkeypatch: Any) -> None:
    def down(key: str) -> Switches:
        raise StoreUnavailable("database is gone")

    monkeypatch.setattr(app.extensions["autoconfig"].store, "switches", down)
    assert status(ask(client, remote=WEBMAIL, real_remote=WEBMAIL)) == 0
    assert ask(client, remote=ELSEWHERE, real_remote=ELSEWHERE).status_code == 503


def test_other_protocols_from_the_webmail_are_counted_as_other_protocols(client: FlaskClient, app: Flask) -> None:
    assert status(ask(client, "submission", remote=WEBMAIL, real_remote=WEBMAIL)) == 0
    assert decisions(app, "other_protocol", "other") == 1


def test_the_webmail_decision_is_logged_with_both_addresses(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="autoconfig.web.dovecot"):
        ask(client, remote=ELSEWHERE, real_remote=WEBMAIL)
    assert f"auth-policy: webmail (imap login alice@example.net, session=Zq3z/Sph1JJ/AAAB remote={ELSEWHERE} " in (
        caplog.text
    )
    assert f"real_remote={WEBMAIL}" in caplog.text


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ({"remote": WEBMAIL}, "include real_remote=%{real_rip}"),
        ({"remote": WEBMAIL, "real_remote": 3232235530}, "real_remote must be a string"),
        ({"remote": WEBMAIL, "real_remote": "webmail.example.net"}, "must be an IP address"),
        ({"remote": WEBMAIL, "real_remote": None}, "real_remote must be a string"),
        ({"remote": WEBMAIL, "real_remote": [WEBMAIL]}, "real_remote must be a string"),
        ({"remote": WEBMAIL, "real_remote": f" {WEBMAIL}"}, "must be an IP address"),
        ({"remote": WEBMAIL, "real_remote": f"{WEBMAIL}%eth0"}, "must be an IP address"),
        ({"remote": WEBMAIL, "real_remote": WEBMAIL + "0" * 60000}, "must be an IP address"),
    ],
    ids=["missing", "not-a-string", "not-an-address", "null", "list", "padded", "v4-with-zone", "huge"],
)
def test_without_a_usable_real_remote_the_request_is_refused_clearly(
    client: FlaskClient, app: Flask, addresses: dict[str, Any], message: str
) -> None:
    """A snippet without real_remote would otherwise judge by the forgeable remote."""
    response = ask(client, **addresses)
    assert response.status_code == 400
    assert message in response.get_json()["message"]
    assert decisions(app, "bad_request") == 1


def test_without_webmail_networks_nothing_is_exempt(
    config_data: dict[str, Any], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from autoconfig import create_app

    del config_data["dovecot"]["webmail_networks"]
    app = create_app(load(write_config(config_data), env={}))
    try:
        client = app.test_client()
        assert status(ask(client, remote=WEBMAIL, real_remote=WEBMAIL)) == REFUSED
        assert status(ask(client, remote=WEBMAIL)) == REFUSED  # real_remote is not needed then
    finally:
        app.extensions["autoconfig"].store.close()


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        (["webmail.example.net"], "webmail_networks[0]: not an IP network"),
        (
            ["192.0.2.10/32", "192.0.2.10/24"],
            "webmail_networks[1]: '192.0.2.10/24' has host bits set; write the network (192.0.2.0/24)",
        ),
        (["2001:db8::1/64"], "has host bits set"),
        (["0.0.0.0/0"], "would exempt every login"),
        (["::/0"], "would exempt every login"),
        # Dovecot names an IPv4 peer as IPv4 and the gate compares it as IPv4, so a mapped
        # network never matches: the webmail would be locked out without a word.
        (["::ffff:192.0.2.10/128"], "write the IPv4 network (192.0.2.10/32)"),
        (["::ffff:0:0/96"], "would exempt every IPv4 login"),
        # Halves that add up to everyone turn the gate off as surely as /0 does.
        (["0.0.0.0/1", "128.0.0.0/1"], "together exempt every IPv4 login"),
        (["::/1", "8000::/1"], "together exempt every IPv6 login"),
        (["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"], "together exempt every IPv4 login"),
        ("192.0.2.10/32", "expected a list of strings"),
    ],
    ids=[
        "not-a-network",
        "host-bits-v4",
        "host-bits-v6",
        "everyone-v4",
        "everyone-v6",
        "v4-mapped-host",
        "v4-mapped-everyone",
        "everyone-v4-in-halves",
        "everyone-v6-in-halves",
        "everyone-v4-in-pieces",
        "not-a-list",
    ],
)
def test_bad_webmail_networks_name_file_and_key(
    config_data: dict[str, Any], write_config: Callable[..., Path], networks: Any, message: str
) -> None:
    config_data["dovecot"]["webmail_networks"] = networks
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: dovecot.webmail_networks")
    assert message in str(error.value)


def test_single_hosts_may_be_written_without_a_prefix(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    config_data["dovecot"]["webmail_networks"] = ["192.0.2.10", "2001:db8::10"]
    dovecot = load(write_config(config_data), env={}).dovecot
    assert dovecot is not None
    assert [str(network) for network in dovecot.webmail_networks] == ["192.0.2.10/32", "2001:db8::10/128"]


# -- with the real Dovecot, the shipped snippet and gunicorn ---------------------------------

# On loopback any 127.x address stands for another host: the webmail connects
# from 127.0.0.1, a customer's mail program from 127.0.0.3.
WEBMAIL_HOST = "127.0.0.1"
CLIENT_HOST = "127.0.0.3"
LOAD_BALANCER = "127.0.0.4"
USERS = {f"{name}@example.net": PASSWORD for name in ("gina", "hank", "ivy", "jack", "kim")}
MASTER, MASTER_PASSWORD = "webmail-master", "the master's own password"


@pytest.fixture(scope="module")
def webmail_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """gunicorn with webmail_networks = the webmail's host."""
    workdir = tmp_path_factory.mktemp("autoconfig")
    dovecot = {"api_header": f"{POLICY_HEADER}: {SECRET}", "webmail_networks": [f"{WEBMAIL_HOST}/32"]}
    with gunicorn_on(workdir, base_config(workdir, dovecot=dovecot)) as service:
        yield service


@pytest.fixture(scope="module")
def recorder(webmail_gate: GunicornServer) -> Iterator[PolicyRecorder]:
    """What Dovecot sends the service, kept on its way."""
    with PolicyRecorder(webmail_gate.url) as hop:
        yield hop


@pytest.fixture(scope="module")
def gated(
    webmail_gate: GunicornServer, recorder: PolicyRecorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GunicornServer, DovecotServer]]:
    """Dovecot (2.3 or 2.4, as installed) with the shipped snippet, trusting both hosts to forward
    addresses (so forging is possible, and must not help), a master user, and a PROXY-protocol
    listener for load balancers on the webmail's host and on LOAD_BALANCER."""
    settings = dovecot_settings(
        f"{recorder.url}/dovecot/auth-policy", f"{POLICY_HEADER}: {SECRET}", reject_on_fail=False
    )
    with DovecotServer(
        tmp_path_factory.mktemp("dovecot"),
        USERS,
        extra_config=settings,
        master_users={MASTER: MASTER_PASSWORD},
        login_trusted_networks=[f"{WEBMAIL_HOST}/32", f"{CLIENT_HOST}/32"],
        haproxy_trusted_networks=[f"{WEBMAIL_HOST}/32", f"{LOAD_BALANCER}/32"],
    ) as dovecot:
        yield webmail_gate, dovecot


def imap_from(dovecot: DovecotServer, source: str, user: str, forward: str | None = None) -> str:
    return imap_login(dovecot.imap_port, user, PASSWORD, source, forward)


def pop3_from(dovecot: DovecotServer, source: str, user: str) -> str:
    return pop3_login(dovecot.pop3_port, user, PASSWORD, source)


def test_real_dovecot_lets_the_webmail_in_and_gates_everyone_else(gated: tuple[GunicornServer, DovecotServer]) -> None:
    service, dovecot = gated
    assert imap_from(dovecot, WEBMAIL_HOST, "gina@example.net") == "OK"
    assert pop3_from(dovecot, WEBMAIL_HOST, "gina@example.net") == "OK"
    assert imap_from(dovecot, CLIENT_HOST, "gina@example.net").startswith("[ALERT] IMAP is turned off")
    assert pop3_from(dovecot, CLIENT_HOST, "gina@example.net").startswith("-ERR [AUTH] POP is turned off")
    service.wait_for_log(
        "auth-policy: webmail (imap login gina@example.net, session=", f"remote={CLIENT_HOST} real_remote={CLIENT_HOST}"
    )


def test_real_dovecot_forwarded_addresses_change_nothing(gated: tuple[GunicornServer, DovecotServer]) -> None:
    service, dovecot = gated
    # The webmail forwards its user's browser address: still the webmail.
    assert imap_from(dovecot, WEBMAIL_HOST, "hank@example.net", forward="198.51.100.7") == "OK"
    service.wait_for_log(f"remote=198.51.100.7 real_remote={WEBMAIL_HOST}")
    # A mail program forwarding the webmail's address is still a mail program.
    refused = imap_from(dovecot, CLIENT_HOST, "hank@example.net", forward=WEBMAIL_HOST)
    assert refused.startswith("[ALERT] IMAP is turned off")
    service.wait_for_log(f"remote={WEBMAIL_HOST} real_remote={CLIENT_HOST}")


def test_real_dovecot_a_client_follows_the_switch_both_ways(gated: tuple[GunicornServer, DovecotServer]) -> None:
    service, dovecot = gated
    LiveAdmin(service).set("ivy@example.net", imap=True)
    assert imap_from(dovecot, CLIENT_HOST, "ivy@example.net") == "OK"
    LiveAdmin(service).set("ivy@example.net", imap=False)
    assert imap_from(dovecot, CLIENT_HOST, "ivy@example.net").startswith("[ALERT] IMAP is turned off")
    assert imap_from(dovecot, WEBMAIL_HOST, "ivy@example.net") == "OK"


def test_real_dovecot_asks_about_master_user_logins_too(gated: tuple[GunicornServer, DovecotServer]) -> None:
    """Dovecot (2.3 and 2.4 alike) sends the policy request for ``user*master`` as well, with
    login = the user: a master user is no way around the gate, only webmail_networks is."""
    service, dovecot = gated
    as_master = f"jack@example.net{MASTER_SEPARATOR}{MASTER}"
    refused = imap_login(dovecot.imap_port, as_master, MASTER_PASSWORD, CLIENT_HOST)
    assert refused.startswith("[AUTHORIZATIONFAILED] IMAP is turned off")  # Dovecot's code for master users
    service.wait_for_log("reject (imap login jack@example.net, session=")
    assert imap_login(dovecot.imap_port, as_master, MASTER_PASSWORD, WEBMAIL_HOST) == "OK"
    LiveAdmin(service).set("jack@example.net", imap=True)
    assert imap_login(dovecot.imap_port, as_master, MASTER_PASSWORD, CLIENT_HOST) == "OK"


def proxied_imap_login(port: int, balancer: str, client: str, user: str) -> str:
    """An IMAP login through a load balancer at ``balancer`` that names ``client`` in a PROXY v1 header."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(balancer, 0)) as sock:
        sock.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 143\r\n".encode())
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"* OK")
        sock.sendall(f'a LOGIN "{user}" "{PASSWORD}"\r\n'.encode())
        while not (line := stream.readline().decode()).startswith("a "):
            pass
        return "OK" if line.startswith("a OK") else line[2:].removeprefix("NO ").strip()


def test_real_dovecot_behind_a_proxy_sees_the_proxy_as_the_real_peer(
    gated: tuple[GunicornServer, DovecotServer],
) -> None:
    """With the PROXY protocol, the real peer is the load balancer for every client behind it: a
    load balancer must never be in webmail_networks (docs/dovecot.md, "Behind a proxy")."""
    service, dovecot = gated
    refused = proxied_imap_login(dovecot.haproxy_port, LOAD_BALANCER, "198.51.100.7", "kim@example.net")
    assert refused.startswith("[ALERT] IMAP is turned off")
    service.wait_for_log(f"remote=198.51.100.7 real_remote={LOAD_BALANCER}")
    # A load balancer on a webmail address would let every customer behind it through.
    assert proxied_imap_login(dovecot.haproxy_port, WEBMAIL_HOST, "198.51.100.7", "kim@example.net") == "OK"


def test_real_dovecot_never_sends_a_password_hash(
    gated: tuple[GunicornServer, DovecotServer], recorder: PolicyRecorder
) -> None:
    """Whatever came before in this module (the webmail, forwarded addresses, master users, the
    PROXY protocol), Dovecot sent the snippet's attributes and nothing of the password."""
    _service, dovecot = gated
    as_master = f"kim@example.net{MASTER_SEPARATOR}{MASTER}"
    assert imap_login(dovecot.imap_port, as_master, MASTER_PASSWORD, WEBMAIL_HOST) == "OK"
    requests = recorder.recorded()
    assert len(requests) >= 10
    for request in requests:
        assert set(request.json()) == SNIPPET_SENDS, request
