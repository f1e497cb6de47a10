"""Property tests: whatever arrives in the query string, the answer is a
well-formed 2xx/4xx, never a 500 and never an echo of the input.

The oracle tests below go further: known accounts (in random case) mixed
with junk and with valid addresses nobody has, on every client endpoint,
Dovecot's and the admin API's.  A 200 shows exactly the protocols the
account has enabled, and nothing else ever gets one."""

from __future__ import annotations

import json
import plistlib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from autoconfig import create_app
from autoconfig.config import load
from autoconfig.spec import AUTODISCOVER_BASE_NS, OUTLOOK_REQUEST_NS, OUTLOOK_RESPONSE_NS
from tests.support.config import ADMIN_AUTH, config_file
from tests.support.promises import THUNDERBIRD_PATHS

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ALLOWED = {200, 400, 404, 414}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    directory = tmp_path_factory.mktemp("fuzz")
    app = create_app(load(config_file(directory, limits={"client_rate": 0}), env={}))
    app.extensions["autoconfig"].store.update("fuzz@example.net", {"imap": True}, "test")
    yield app
    app.extensions["autoconfig"].store.close()


@pytest.fixture
def fuzz_client(fuzz_app: Flask) -> FlaskClient:
    return fuzz_app.test_client()


def check(status: int, body: bytes) -> None:
    assert status in ALLOWED
    if status == 200:
        etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert b"Traceback" not in body


addresses = st.one_of(
    st.text(max_size=300),
    st.builds(lambda local, domain: f"{local}@{domain}", st.text(max_size=70), st.text(max_size=70)),
    st.sampled_from(["fuzz@example.net", "FUZZ@EXAMPLE.NET"]).map(lambda a: a),
)


@FUZZ
@given(address=addresses, path=st.sampled_from(THUNDERBIRD_PATHS))
def test_any_address(fuzz_client: FlaskClient, address: str, path: str) -> None:
    response = fuzz_client.get(path, query_string={"emailaddress": address})
    check(response.status_code, response.data)
    if "<" in address:
        assert address.encode() not in response.data, "input with markup is never echoed"


@FUZZ
@given(raw=st.binary(max_size=600))
def test_any_raw_query_string(fuzz_client: FlaskClient, raw: bytes) -> None:
    response = fuzz_client.get(THUNDERBIRD_PATHS[0], query_string="emailaddress=" + quote_from_bytes(raw, safe="@&=%"))
    check(response.status_code, response.data)


def pox(address: str) -> bytes:
    """A well-formed Outlook request carrying ``address`` (escaped by lxml, as a client would)."""
    ns = OUTLOOK_REQUEST_NS
    root = etree.Element(f"{{{ns}}}Autodiscover", nsmap={None: ns})
    request = etree.SubElement(root, f"{{{ns}}}Request")
    etree.SubElement(request, f"{{{ns}}}EMailAddress").text = address
    etree.SubElement(request, f"{{{ns}}}AcceptableResponseSchema").text = OUTLOOK_RESPONSE_NS
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def check_pox(status: int, content_type: str, body: bytes) -> None:
    assert status in {200, 404, 413}, status
    assert content_type.startswith("text/xml")
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert root.tag == f"{{{AUTODISCOVER_BASE_NS}}}Autodiscover"


xml_safe_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\ufffe\uffff"), max_size=300
).filter(lambda t: all(c in "\t\n\r" or ord(c) >= 0x20 for c in t))


@FUZZ
@given(address=st.one_of(xml_safe_text, st.sampled_from(["fuzz@example.net", "a@other.example"])))
def test_any_address_in_a_pox_body(fuzz_client: FlaskClient, address: str) -> None:
    response = fuzz_client.post("/autodiscover/autodiscover.xml", data=pox(address), content_type="text/xml")
    check_pox(response.status_code, response.content_type, response.data)


@FUZZ
@given(body=st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode)))
def test_any_pox_body(fuzz_client: FlaskClient, body: bytes) -> None:
    response = fuzz_client.post("/autodiscover/autodiscover.xml", data=body, content_type="text/xml")
    check_pox(response.status_code, response.content_type, response.data)


# -- fuzzing with an oracle --------------------------------------------------------------------
#
# Known accounts in each switch state, written in random case, mixed with junk
# and with valid addresses nobody has.  The oracle is the switches we set: a
# 200 shows exactly the enabled protocols, and nothing else ever gets one.

ORACLE_ACCOUNTS = {
    "imapon@example.net": (True, False),
    "popon@example.net": (False, True),
    "both@example.org": (True, True),
    "off@example.net": (False, False),
}
POLICY_SECRET = "fuzz-policy-secret-0123456789abc"
HOSTS = {"imap": b"imap.example.net", "pop3": b"pop.example.net", "smtp": b"smtp.example.net"}
ORACLE_XML = etree.XMLParser(resolve_entities=False, no_network=True)


@pytest.fixture(scope="module")
def oracle_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    directory = tmp_path_factory.mktemp("oracle")
    path = config_file(
        directory,
        limits={"client_rate": 0, "admin_rate": 0},
        dovecot={"api_header": f"X-Policy-Key: {POLICY_SECRET}"},
    )
    app = create_app(load(path, env={}))
    for address, (imap, pop) in ORACLE_ACCOUNTS.items():
        app.extensions["autoconfig"].store.update(address, {"imap": imap, "pop": pop}, "test")
    yield app
    app.extensions["autoconfig"].store.close()


def _recase(address: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(address, flips + [False] * len(address), strict=False))


known = st.builds(_recase, st.sampled_from(sorted(ORACLE_ACCOUNTS)), st.lists(st.booleans(), max_size=30))
# Plainly valid addresses of our domains that nobody has.
OURS = r"[a-z0-9]{1,20}(\.[a-z0-9_-]{1,10})?@example\.(net|org)"
nobody = st.from_regex(OURS, fullmatch=True).filter(lambda a: a.lower() not in ORACLE_ACCOUNTS)
junk = st.one_of(
    st.text(max_size=80),
    st.builds(lambda local, domain: f"{local}@{domain}", st.text(max_size=30), st.sampled_from(["example.net", "x"])),
    st.sampled_from(["imapon@example.net.", " imapon@example.net", "imapon@example.net\x00", "imapon@@example.net"]),
)
oracle_addresses = st.one_of(known, nobody, junk)


def enabled(address: str) -> set[str] | None:
    """What the account behind ``address`` has enabled; None when it is no known account."""
    switches = ORACLE_ACCOUNTS.get(address.lower()) if address.isascii() else None
    if switches is None:
        return None
    return {p for p, on in zip(("imap", "pop3"), switches, strict=True) if on}


def assert_shows(status: int, body: bytes, shown: set[str], expected: set[str] | None, where: str) -> None:
    assert status < 500, (where, status)
    if status == 200 and shown:
        assert expected is not None, f"{where}: junk got a document"
        assert shown == expected, where
    else:
        assert not expected, f"{where}: an enabled account got no document ({status})"
    for protocol in ("imap", "pop3"):
        if protocol not in shown:
            assert HOSTS[protocol] not in body, f"{where}: {protocol} server shown"
    assert (HOSTS["smtp"] in body) == bool(shown), where


@FUZZ
@given(address=oracle_addresses)
def test_oracle_thunderbird_and_pox(oracle_app: Flask, address: str) -> None:
    client = oracle_app.test_client()
    expected = enabled(address)
    response = client.get(THUNDERBIRD_PATHS[0], query_string={"emailaddress": address})
    shown: set[str] = set()
    if response.status_code == 200:
        root = etree.fromstring(response.data, ORACLE_XML)
        shown = {s.get("type", "") for s in root.iterfind("emailProvider/incomingServer")}
    assert_shows(response.status_code, response.data, shown, expected, "thunderbird")

    try:
        body = pox(address)
    except ValueError:
        return  # no XML document can carry this text (lxml refuses it, as a client's would)
    response = client.post("/autodiscover/autodiscover.xml", data=body, content_type="text/xml")
    ns = OUTLOOK_RESPONSE_NS
    root = etree.fromstring(response.data, ORACLE_XML)
    shown = {t.lower() for t in (e.text for e in root.iter(f"{{{ns}}}Type")) if t in ("IMAP", "POP3")}
    # XML element text: surrounding XML whitespace is not part of the address ([MS-OXDSCLI] EMailAddress).
    pox_expected = enabled(address.strip(" \t\r\n"))
    assert_shows(200 if shown else 404, response.data, shown, pox_expected, "pox")


@FUZZ
@given(address=oracle_addresses)
def test_oracle_apple_setup_and_json(oracle_app: Flask, address: str) -> None:
    client = oracle_app.test_client()
    expected = enabled(address)
    response = client.get("/apple/mail.mobileconfig", query_string={"emailaddress": address})
    shown: set[str] = set()
    if response.status_code == 200:
        kinds = {"EmailTypeIMAP": "imap", "EmailTypePOP": "pop3"}
        shown = {kinds[p["EmailAccountType"]] for p in plistlib.loads(response.data)["PayloadContent"]}
    # One account per profile: IMAP when enabled, else POP.
    apple_expected = None if not expected else ({"imap"} if "imap" in expected else {"pop3"})
    assert_shows(response.status_code, response.data, shown, apple_expected, "apple")

    response = client.get("/setup", query_string={"emailaddress": address})
    assert response.status_code in (200, 400, 404), response.status_code
    shown = {p for p in ("imap", "pop3") if HOSTS[p] in response.data}
    assert_shows(200 if shown else 404, response.data, shown, expected, "setup")

    response = client.get(
        "/autodiscover/autodiscover.json", query_string={"Email": address, "Protocol": "AutodiscoverV1"}
    )
    assert response.status_code in (200, 400, 404), response.status_code
    if response.status_code == 200:  # the pointer: the same for everyone, never an account's settings
        assert json.loads(response.data) == {
            "Protocol": "AutodiscoverV1",
            "Url": "https://autoconfig.example.net/autodiscover/autodiscover.xml",
        }


@FUZZ
@given(address=oracle_addresses, protocol=st.sampled_from(["imap", "pop3"]))
def test_oracle_dovecot(oracle_app: Flask, address: str, protocol: str) -> None:
    response = oracle_app.test_client().post(
        "/dovecot/auth-policy?command=allow",
        json={"login": address, "protocol": protocol, "remote": "192.0.2.7"},
        headers={"X-Policy-Key": POLICY_SECRET},
    )
    assert response.status_code == 200, response.data
    status = json.loads(response.data)["status"]
    expected = enabled(address)
    if expected is not None:
        assert (status == 0) == (protocol in expected), address
    elif re.fullmatch(OURS, address):
        assert status == -1, f"{address!r}: an address of ours that nobody has logs in to nothing"
    else:
        assert status in (0, -1)  # 0 here is "not ours": logins that are no address of our domains


@FUZZ
@given(address=oracle_addresses)
def test_oracle_admin_reads(oracle_app: Flask, address: str) -> None:
    response = oracle_app.test_client().get(
        f"/admin/v1/accounts/{quote_from_bytes(address.encode(), safe='@')}", headers=ADMIN_AUTH
    )
    assert response.status_code in (200, 400, 404), (address, response.status_code)
    expected = enabled(address)
    if response.status_code == 200:
        account = json.loads(response.data)
        shown = {p for p, key in (("imap", "imap"), ("pop3", "pop")) if account[key]}
        assert shown == (expected or set()), address
    else:
        assert expected is None, f"{address!r}: a known account's switches could not be read"


@FUZZ
@given(
    body=st.one_of(
        st.dictionaries(
            st.sampled_from(["imap", "pop", "x"]),
            st.one_of(st.booleans(), st.none(), st.integers(0, 1), st.text(max_size=3)),
            max_size=3,
        ),
        st.recursive(st.none() | st.booleans() | st.integers(), lambda c: st.lists(c, max_size=3), max_leaves=5),
    )
)
def test_oracle_admin_writes(oracle_app: Flask, body: Any) -> None:
    """A random PATCH body either lands exactly as sent (200) or changes nothing (4xx)."""
    client = oracle_app.test_client()
    url = "/admin/v1/accounts/scratch@example.net"
    before = json.loads(client.get(url, headers=ADMIN_AUTH).data)
    response = client.patch(url, data=json.dumps(body), content_type="application/json", headers=ADMIN_AUTH)
    after = json.loads(client.get(url, headers=ADMIN_AUTH).data)
    assert response.status_code in (200, 400), (body, response.status_code)
    valid = (
        isinstance(body, dict) and body and all(k in ("imap", "pop") and isinstance(v, bool) for k, v in body.items())
    )
    if valid:
        assert response.status_code == 200
        assert {k: after[k] for k in ("imap", "pop")} == {k: body.get(k, before[k]) for k in ("imap", "pop")}
    else:
        assert response.status_code == 400
        assert {k: after[k] for k in ("imap", "pop")} == {k: before[k] for k in ("imap", "pop")}
