"""The central rule, written out by hand: what every client endpoint shows in every switch state.

"The service never advertises a protocol the account has not enabled", and
"unknown addresses get exactly the answer an account with nothing
enabled gets" (README.md).  Every expected cell below is a literal, not
something worked out by ``policy.offer``: the table is the promise, and the
code must meet it.  Answers come from the real gunicorn server and are
read with independent readers (lxml, plistlib, json); each cell also
checks that no server of a protocol it does not show appears anywhere in
the answer.

The documented literal promises (paths, Cache-Control, content types) are
held in tests/support/promises.py; the last tests here check that the page
that documents them, docs/clients.md, still says them, and that the README
still states the central rule.
"""

from __future__ import annotations

import json
import plistlib
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.support import promises
from tests.support.admin import LiveAdmin
from tests.support.config import ADMIN_TOKEN, POLICY_HEADER, base_config
from tests.support.gunicorn import ROOT, GunicornServer, gunicorn_on

SECRET = "truth-table-policy-secret-0123456789"
WEBMAIL_HOST = "192.0.2.10"
CLIENT_HOST = "198.51.100.7"

# One account per switch state.  "offoff" and "unseen" have local parts of one
# length, so their answers can be compared byte for byte once the address is swapped.
STATES = {
    "off/off": ("offoff@example.net", (False, False)),
    "imap": ("imapon@example.net", (True, False)),
    "pop": ("popon1@example.net", (False, True)),
    "both": ("bothon@example.net", (True, True)),
    "never": ("unseen@example.net", None),
}
COLUMNS = list(STATES)
ISPS = ("imap+pop3", "pop3-only")

HOSTS = {"imap": "imap.example.net", "pop3": "pop.example.net", "smtp": "smtp.example.net"}
XML = etree.XMLParser(resolve_entities=False, no_network=True)

# -- the table ---------------------------------------------------------------------------
#
# A cell is "<status> <what is shown>": the incoming protocols in the answer
# ("-" for none), "pointer" for the JSON pointer (the same for everyone), or
# Dovecot's decision.  Columns: off/off, IMAP only, POP only, both, never set.

TB_FULL = ("404 -", "200 imap", "200 pop3", "200 imap pop3", "404 -")
TB_POP_ISP = ("404 -", "404 -", "200 pop3", "200 pop3", "404 -")
POX_FULL = ("200 -", "200 imap", "200 pop3", "200 imap pop3", "200 -")
POX_POP_ISP = ("200 -", "200 -", "200 pop3", "200 pop3", "200 -")
POINTER = ("200 pointer",) * 5
# Apple: one account per profile, IMAP when enabled, else POP.
APPLE_FULL = ("404 -", "200 imap", "200 pop3", "200 imap", "404 -")
APPLE_POP_ISP = ("404 -", "404 -", "200 pop3", "200 pop3", "404 -")
SETUP_FULL = ("200 -", "200 imap", "200 pop3", "200 imap pop3", "200 -")
SETUP_POP_ISP = ("200 -", "200 -", "200 pop3", "200 pop3", "200 -")

TABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "/mail/config-v1.1.xml": {"imap+pop3": TB_FULL, "pop3-only": TB_POP_ISP},
    "/.well-known/autoconfig/mail/config-v1.1.xml": {"imap+pop3": TB_FULL, "pop3-only": TB_POP_ISP},
    "/.well-known/mail-v1.xml": {"imap+pop3": TB_FULL, "pop3-only": TB_POP_ISP},
    "POST /autodiscover/autodiscover.xml": {"imap+pop3": POX_FULL, "pop3-only": POX_POP_ISP},
    "POST /Autodiscover/Autodiscover.xml": {"imap+pop3": POX_FULL, "pop3-only": POX_POP_ISP},
    "/autodiscover/autodiscover.json?Email=": {"imap+pop3": POINTER, "pop3-only": POINTER},
    "/autodiscover/autodiscover.json/v1.0/": {"imap+pop3": POINTER, "pop3-only": POINTER},
    "/apple/mail.mobileconfig": {"imap+pop3": APPLE_FULL, "pop3-only": APPLE_POP_ISP},
    "/mobileconfig": {"imap+pop3": APPLE_FULL, "pop3-only": APPLE_POP_ISP},
    "/setup": {"imap+pop3": SETUP_FULL, "pop3-only": SETUP_POP_ISP},
    "dovecot imap": {
        "imap+pop3": ("reject", "allow", "reject", "allow", "reject"),
        "pop3-only": ("reject", "reject", "reject", "reject", "reject"),
    },
    "dovecot pop3": {
        "imap+pop3": ("reject", "reject", "allow", "allow", "reject"),
        "pop3-only": ("reject", "reject", "allow", "allow", "reject"),
    },
    # The webmail itself ([dovecot] webmail_networks) logs in whatever the switches say.
    "dovecot imap from the webmail": {"imap+pop3": ("allow",) * 5, "pop3-only": ("allow",) * 5},
    "dovecot pop3 from the webmail": {"imap+pop3": ("allow",) * 5, "pop3-only": ("allow",) * 5},
}

# -- the servers ---------------------------------------------------------------------------


def start(workdir: Path, isp: str) -> GunicornServer:
    data = base_config(
        workdir,
        limits={"client_rate": 0, "admin_rate": 0},
        dovecot={"api_header": f"{POLICY_HEADER}: {SECRET}", "webmail_networks": [f"{WEBMAIL_HOST}/32"]},
    )
    if isp == "pop3-only":
        del data["servers"]["imap"]
    server = gunicorn_on(workdir, data).start()
    for address, switches in STATES.values():
        if switches is not None:
            imap, pop = switches
            LiveAdmin(server).put(address, imap=imap, pop=pop)
    return server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GunicornServer]]:
    started: dict[str, GunicornServer] = {}
    try:
        for isp in ISPS:
            started[isp] = start(tmp_path_factory.mktemp(isp.replace("+", "-")), isp)
        yield started
    finally:
        for server in started.values():
            server.stop()


Answer = tuple[int, dict[str, str], bytes]


def request(server: GunicornServer, method: str, path: str, json_body: dict[str, Any] | None = None) -> Answer:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if path.startswith("/admin/") else {}
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    return send(server, method, path, data, headers)


def send(server: GunicornServer, method: str, path: str, data: bytes | None, headers: dict[str, str]) -> Answer:
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def pox_body(address: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{promises.OUTLOOK_REQUEST_NS}"><Request>'
        f"<EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{promises.OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def ask(server: GunicornServer, row: str, address: str) -> Answer:
    """The request a client of ``row`` makes for ``address``."""
    if row.startswith("POST "):
        return send(server, "POST", row[5:], pox_body(address), {"Content-Type": "text/xml"})
    if row.startswith("dovecot "):
        protocol = row.split()[1]
        peer = WEBMAIL_HOST if row.endswith("webmail") else CLIENT_HOST
        body = {"login": address, "protocol": protocol, "remote": CLIENT_HOST, "real_remote": peer, "session_id": "s1"}
        return send(
            server,
            "POST",
            "/dovecot/auth-policy?command=allow",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", POLICY_HEADER: SECRET},
        )
    if row.endswith("?Email="):
        return send(server, "GET", f"{row}{address}&Protocol=AutodiscoverV1", None, {})
    if row.endswith("/v1.0/"):
        return send(server, "GET", f"{row}{address}?Protocol=AutodiscoverV1", None, {})
    return send(server, "GET", f"{row}?emailaddress={address}", None, {})


# -- independent readers: what an answer shows -------------------------------------------------


def shown(row: str, status: int, body: bytes) -> str:
    """The answer as a table cell."""
    if row.startswith("dovecot "):
        assert status == 200, body
        decision = json.loads(body)["status"]
        assert decision in (0, -1), body
        return "allow" if decision == 0 else "reject"
    if "autodiscover.json" in row:
        pointer = json.loads(body)
        url = "https://autoconfig.example.net/autodiscover/autodiscover.xml"
        assert pointer == {"Protocol": "AutodiscoverV1", "Url": url}
        return f"{status} pointer"
    protocols: list[str] = []
    if status == 200:
        if row.startswith("POST "):
            root = etree.fromstring(body, XML)
            types = [t.text for t in root.iter(f"{{{promises.OUTLOOK_RESPONSE_NS}}}Type")]
            protocols = [t.lower() for t in types if t in ("IMAP", "POP3")]
            if not protocols:
                codes = [e.text for e in root.iter() if isinstance(e.tag, str) and e.tag.endswith("}ErrorCode")]
                assert codes == [promises.OUTLOOK_ERROR_NO_CONFIGURATION], body
        elif "mobileconfig" in row:
            payloads = plistlib.loads(body)["PayloadContent"]
            kinds = {"EmailTypeIMAP": "imap", "EmailTypePOP": "pop3"}
            protocols = [kinds[p["EmailAccountType"]] for p in payloads]
        elif row == "/setup":
            protocols = [p for p in ("imap", "pop3") if HOSTS[p].encode() in body]
        else:
            root = etree.fromstring(body, XML)
            protocols = [s.get("type", "") for s in root.iterfind("emailProvider/incomingServer")]
    return " ".join([str(status), *(protocols or ["-"])])


def assert_nothing_more(row: str, cell: str, body: bytes) -> None:
    """No server of a protocol the cell does not show appears anywhere; SMTP only beside an incoming one."""
    if row.startswith("dovecot ") or "autodiscover.json" in row:
        return
    listed = set(cell.split()[1:]) - {"-"}
    for protocol in ("imap", "pop3"):
        if protocol not in listed:
            assert HOSTS[protocol].encode() not in body, f"{row}: {protocol} server shown in a '{cell}' answer"
    assert (HOSTS["smtp"].encode() in body) == bool(listed), f"{row}: SMTP shown iff an incoming server is"


# -- the tests ---------------------------------------------------------------------------------

CELLS = [(row, isp, column) for row in TABLE for isp in ISPS for column in COLUMNS]


@pytest.mark.parametrize(("row", "isp", "column"), CELLS, ids=[f"{r} | {i} | {c}" for r, i, c in CELLS])
def test_every_endpoint_in_every_switch_state(
    servers: dict[str, GunicornServer], row: str, isp: str, column: str
) -> None:
    expected = TABLE[row][isp][COLUMNS.index(column)]
    address = STATES[column][0]
    status, headers, body = ask(servers[isp], row, address)
    assert shown(row, status, body) == expected
    assert_nothing_more(row, expected, body)
    if not row.startswith("dovecot "):  # "All client answers carry Cache-Control: private, no-cache"
        assert headers["Cache-Control"] == promises.CACHE_CONTROL


def comparable(row: str, answer: Answer, address: str) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = answer
    headers = {k: v for k, v in headers.items() if k != "Date"}
    body = body.replace(address.encode(), b"ADDRESS")
    if row.startswith("POST "):
        body = re.sub(rb'Time="[^"]*"', b'Time=""', body)  # the one field docs/clients.md says differs
    return status, headers, body


@pytest.mark.parametrize("isp", ISPS)
@pytest.mark.parametrize("row", list(TABLE))
def test_unknown_is_off_off_byte_for_byte(servers: dict[str, GunicornServer], row: str, isp: str) -> None:
    """Where the answer carries no address this is plain byte equality; where it does, the address is swapped first."""
    off, unseen = STATES["off/off"][0], STATES["never"][0]
    assert comparable(row, ask(servers[isp], row, unseen), unseen) == comparable(row, ask(servers[isp], row, off), off)


def test_the_table_covers_every_client_endpoint() -> None:
    paths = {row.removeprefix("POST ").split("?")[0] for row in TABLE if not row.startswith("dovecot ")}
    assert set(promises.THUNDERBIRD_PATHS) | set(promises.APPLE_PATHS) <= paths
    assert set(promises.OUTLOOK_POX_SPELLINGS) | {promises.SETUP_PATH, promises.OUTLOOK_JSON_V1_PATH} <= paths
    assert promises.OUTLOOK_JSON_PATH in paths


# -- the docs say what the tests hold --------------------------------------------------------

README = (ROOT / "README.md").read_text()
# "What clients get", "Outlook", "Apple devices and the setup page": where the promised answers are documented.
CLIENTS = (ROOT / "docs" / "clients.md").read_text()


@pytest.mark.parametrize(
    "literal",
    [
        promises.CACHE_CONTROL,
        *promises.THUNDERBIRD_PATHS,
        *promises.APPLE_PATHS,
        promises.APPLE_CONTENT_TYPE,
        promises.OUTLOOK_POX_PATH,
        "/Autodiscover/Autodiscover.xml",
        promises.OUTLOOK_JSON_PATH,
        promises.OUTLOOK_JSON_V1_PATH,
        promises.SETUP_PATH,
        promises.AUTODISCOVER_V1,
        "application/xml",
        "text/xml",
    ],
)
def test_the_clients_page_still_promises_it(literal: str) -> None:
    assert literal in CLIENTS


@pytest.mark.parametrize(
    "rule",
    [
        "the service never advertises a protocol the account has not enabled",
        "Unknown addresses get exactly the answer an account with nothing enabled gets.",
    ],
)
def test_the_readme_still_states_the_central_rule(rule: str) -> None:
    assert rule in " ".join(README.split())  # however the lines wrap
