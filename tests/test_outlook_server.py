"""Outlook autodiscover through the real gunicorn server: hostile bodies,
chunked uploads, credentials, and the same account seen by two formats.

One gunicorn with ONE worker serves the whole module, so "the worker keeps
serving" is checked on the very process that took the hostile input.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomli_w
from lxml import etree

from autoconfig.config import MAX_BODY_LIMIT
from autoconfig.spec import (
    MOBILESYNC_RESPONSE_NS,
    OUTLOOK_CONTENT_TYPE,
    OUTLOOK_DEFAULT_MAX_BODY,
    OUTLOOK_ERROR_ADDRESS_NOT_FOUND,
    OUTLOOK_ERROR_INVALID_REQUEST,
    OUTLOOK_ERROR_NO_CONFIGURATION,
    OUTLOOK_ERROR_SCHEMA_UNAVAILABLE,
    OUTLOOK_REQUEST_NS,
    OUTLOOK_RESPONSE_NS,
)
from tests.support.admin import LiveAdmin
from tests.support.config import BASE_CONFIG, WEBMAIL_URL
from tests.support.gunicorn import ROOT, GunicornServer
from tests.support.outlook import (
    activesync_request,
    chunked,
    error_code,
    exchangelib_reader,
    pox_request,
    protocols,
    raw_http,
    request_bytes,
)

POX = "/autodiscover/autodiscover.xml"
ENABLED = "imap-user@example.net"  # IMAP on for the whole module: the "next request" check
PASSWD_MARKER = b"root:x:0:0"
GENEROUS_SECONDS = 5.0
TEN_MB = 10 * 1024 * 1024
XML = {"Content-Type": "text/xml"}


def http_call(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class Listener:
    """A loopback port where a DTD or entity would be fetched from; it records whether anyone came."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/evil.dtd"

    def visited(self) -> bool:
        try:
            self.sock.accept()[0].close()
            return True
        except BlockingIOError:
            return False


@dataclass
class Served:
    server: GunicornServer
    listener: Listener
    worker_pid: int
    baseline_rss_kib: int = field(default=0)


def worker_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log)]


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("outlook-server")
    data = copy.deepcopy(BASE_CONFIG)
    data["store"]["url"] = f"sqlite:///{tmp}/accounts.sqlite3"
    data["service"]["log_level"] = "DEBUG"  # even debug logging must not show credentials
    config_path = tmp / "autoconfig.toml"
    config_path.write_bytes(tomli_w.dumps(data).encode())
    listener = Listener()
    with GunicornServer(config_path, tmp / "gunicorn.log", workers=1) as server:
        LiveAdmin(server).put(ENABLED, imap=True, pop=False)
        (pid,) = worker_pids(server.log_text())
        result = Served(server, listener, pid)
        result.baseline_rss_kib = rss_kib(pid)
        yield result
    listener.sock.close()


def request_body(inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{OUTLOOK_REQUEST_NS}"><Request>{inner}'
        f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def with_doctype(doctype: str, address: str = "a@example.net") -> bytes:
    return request_body(f"<EMailAddress>{address}</EMailAddress>").replace(b"?>\n", f"?>\n{doctype}\n".encode(), 1)


BILLION_LAUGHS = (
    '<!DOCTYPE Autodiscover [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">' for i in range(1, 10))
    + "]>"
)


@dataclass(frozen=True)
class Case:
    body: bytes | None  # None: built from the listener URL by ``build``
    status: int
    code: str
    headers: dict[str, str] = field(default_factory=lambda: dict(XML))
    method: str = "POST"
    stream: bool = False  # sent from a thread while the answer is read: the server must not wait for all of it
    build: str = ""

    def payload(self, listener: Listener) -> bytes:
        if self.build == "external DTD":
            return with_doctype(f'<!DOCTYPE Autodiscover SYSTEM "{listener.url}">')
        if self.build == "parameter entities":
            return with_doctype(f'<!DOCTYPE Autodiscover [<!ENTITY % p SYSTEM "{listener.url}"> %p;]>')
        if self.build == "external entity (network)":
            return with_doctype(f'<!DOCTYPE Autodiscover [<!ENTITY x SYSTEM "{listener.url}">]>', "&x;@example.net")
        assert self.body is not None
        return self.body


def pox_case(inner: str, status: int = 200, code: str = OUTLOOK_ERROR_INVALID_REQUEST) -> Case:
    return Case(request_body(inner), status, code)


HOSTILE = {
    "billion laughs": Case(with_doctype(BILLION_LAUGHS, "&lol9;@example.net"), 200, OUTLOOK_ERROR_INVALID_REQUEST),
    "XXE to file:///etc/passwd": Case(
        with_doctype('<!DOCTYPE Autodiscover [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "&x;"),
        200,
        OUTLOOK_ERROR_INVALID_REQUEST,
    ),
    "external entity (network)": Case(None, 200, OUTLOOK_ERROR_INVALID_REQUEST, build="external entity (network)"),
    "external DTD": Case(None, 200, OUTLOOK_ERROR_INVALID_REQUEST, build="external DTD"),
    "parameter entities": Case(None, 200, OUTLOOK_ERROR_INVALID_REQUEST, build="parameter entities"),
    "10 MB body with Content-Length": Case(
        b"<a>" + b"x" * TEN_MB + b"</a>", 413, OUTLOOK_ERROR_INVALID_REQUEST, stream=True
    ),
    "10 MB chunked body without length": Case(
        chunked(b"<a>" + b"x" * TEN_MB + b"</a>", 65536),
        413,
        OUTLOOK_ERROR_INVALID_REQUEST,
        headers={**XML, "Transfer-Encoding": "chunked"},
        stream=True,
    ),
    # The next two never finish their body: an answer at all proves the server did not wait for it.
    "Content-Length of 10 MB, body never sent": Case(
        b"", 413, OUTLOOK_ERROR_INVALID_REQUEST, headers={**XML, "Content-Length": str(TEN_MB)}
    ),
    "chunked: cap + 1 bytes sent, the rest never": Case(
        chunked(b"x" * (OUTLOOK_DEFAULT_MAX_BODY + 1), 1000)[: -len(b"0\r\n\r\n")],
        413,
        OUTLOOK_ERROR_INVALID_REQUEST,
        headers={**XML, "Transfer-Encoding": "chunked"},
    ),
    "truncated XML": Case(request_body("<EMailAddress>a@example.net</EMailAddress>")[:-30], 200, "600"),
    "two EMailAddress": pox_case(
        "<EMailAddress>a@example.net</EMailAddress><EMailAddress>b@example.net</EMailAddress>"
    ),
    "address with < (escaped)": pox_case("<EMailAddress>a&lt;b@example.net</EMailAddress>"),
    "address with raw <": pox_case("<EMailAddress>a<b@example.net</EMailAddress>"),
    "address with raw &": pox_case("<EMailAddress>a&b@example.net</EMailAddress>"),
    "address with a control character reference": pox_case("<EMailAddress>a&#7;@example.net</EMailAddress>"),
    "address with a raw control character": pox_case("<EMailAddress>a\x07@example.net</EMailAddress>"),
    "address with a C1 control (NEL)": pox_case("<EMailAddress>a&#x85;@example.net</EMailAddress>"),
    "address with CRLF": pox_case("<EMailAddress>a&#13;&#10;Set-Cookie: x@example.net</EMailAddress>"),
    "address with markup inside": pox_case("<EMailAddress>a<b/>@example.net</EMailAddress>"),
    "LegacyDN only": pox_case("<LegacyDN>/o=Example/ou=First Administrative Group/cn=Recipients/cn=alice</LegacyDN>"),
    "no namespace": Case(
        request_body("<EMailAddress>a@example.net</EMailAddress>").replace(b' xmlns="', b' x="'), 200, "600"
    ),
    "response namespace instead of request": Case(
        request_body("<EMailAddress>a@example.net</EMailAddress>").replace(
            OUTLOOK_REQUEST_NS.encode(), OUTLOOK_RESPONSE_NS.encode(), 1
        ),
        200,
        OUTLOOK_ERROR_INVALID_REQUEST,
    ),
    "EMailAddress in another namespace": pox_case('<EMailAddress xmlns="urn:x">a@example.net</EMailAddress>'),
    "empty body": Case(b"", 200, OUTLOOK_ERROR_INVALID_REQUEST),
    "wrong content type (form)": Case(
        pox_request("a@example.net"), 200, "600", headers={"Content-Type": "application/x-www-form-urlencoded"}
    ),
    "wrong content type (json)": Case(
        pox_request("a@example.net"), 200, "600", headers={"Content-Type": "application/json"}
    ),
    "charset other than UTF-8": Case(
        pox_request("a@example.net"), 200, "600", headers={"Content-Type": "text/xml; charset=iso-8859-1"}
    ),
    "non-UTF-8 body (latin-1)": Case(
        request_body("<EMailAddress>caf\xe9@example.net</EMailAddress>").decode().encode("latin-1"), 200, "600"
    ),
    "UTF-16 body": Case(
        request_body("<EMailAddress>a@example.net</EMailAddress>").decode().encode("utf-16"), 200, "600"
    ),
    "deeply nested": pox_case("<x>" * 2000 + "</x>" * 2000),
    "GET on the POX URL": Case(b"", 200, OUTLOOK_ERROR_INVALID_REQUEST, method="GET", headers={}),
    "domain we do not serve": pox_case(
        "<EMailAddress>a@evil.example</EMailAddress>", 404, OUTLOOK_ERROR_ADDRESS_NOT_FOUND
    ),
    "mobilesync schema": Case(
        pox_request("a@example.net", MOBILESYNC_RESPONSE_NS), 200, OUTLOOK_ERROR_SCHEMA_UNAVAILABLE
    ),
    "ActiveSync request": Case(activesync_request(ENABLED), 200, OUTLOOK_ERROR_SCHEMA_UNAVAILABLE),
    "valid address with & (not echoed)": pox_case(
        "<EMailAddress>a&amp;b@example.net</EMailAddress>", 200, OUTLOOK_ERROR_NO_CONFIGURATION
    ),
}


def send(served: Served, case: Case) -> tuple[int, dict[str, str], bytes]:
    data = request_bytes(POX, case.payload(served.listener), case.headers, case.method)
    if not case.stream:
        return raw_http(served.server.port, data)
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as sock:

        def upload() -> None:
            # The server answers and closes without reading it all: that is the point.
            with contextlib.suppress(OSError):
                sock.sendall(data)

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        response = http.client.HTTPResponse(sock)
        response.begin()
        answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        with contextlib.suppress(OSError):  # already reset by the server, usually
            sock.shutdown(socket.SHUT_RDWR)
        uploader.join(10)
        return answer


def settings_for_the_enabled_account(served: Served) -> list[str]:
    status, _, body = raw_http(served.server.port, request_bytes(POX, pox_request(ENABLED), XML))
    assert status == 200
    return [p.type for p in protocols(body)]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_gets_a_well_formed_answer_and_the_worker_keeps_serving(served: Served, name: str) -> None:
    case = HOSTILE[name]
    started = time.monotonic()
    status, headers, body = send(served, case)
    assert time.monotonic() - started < GENEROUS_SECONDS
    assert status == case.status
    assert headers["content-type"] == OUTLOOK_CONTENT_TYPE
    assert error_code(body) == case.code  # well-formed, in the base namespace
    assert "www-authenticate" not in headers
    for leak in (PASSWD_MARKER, b"Traceback", b"evil", b"Set-Cookie", b"lol", b"127.0.0.1", b"a&amp;b", b"caf"):
        assert leak not in body, leak
    assert not served.listener.visited(), "the server fetched something from the network"

    assert settings_for_the_enabled_account(served) == ["IMAP", "SMTP", "SMTP"]
    log = served.server.log_text()
    assert worker_pids(log) == [served.worker_pid], "the worker was not restarted"
    assert "Traceback" not in log and "[ERROR]" not in log and "unhandled" not in log
    assert rss_kib(served.worker_pid) - served.baseline_rss_kib < 64 * 1024, "memory stays bounded"


def test_a_small_chunked_request_is_read_and_answered(served: Served) -> None:
    headers = {**XML, "Transfer-Encoding": "chunked"}
    status, _, body = raw_http(served.server.port, request_bytes(POX, chunked(pox_request(ENABLED), 17), headers))
    assert status == 200
    assert [p.type for p in protocols(body)] == ["IMAP", "SMTP", "SMTP"]


@pytest.mark.parametrize("path", [POX, "/Autodiscover/Autodiscover.xml", "/AutoDiscover/AutoDiscover.XML"])
def test_basic_credentials_are_ignored_never_challenged_never_logged(served: Served, path: str) -> None:
    password = "hunter2-outlook-secret"
    token = base64.b64encode(f"{ENABLED}:{password}".encode()).decode()
    auth = {"Authorization": f"Basic {token}"}
    answers = [
        http_call("POST", served.server.url + path, pox_request(ENABLED), {**XML, **auth}),
        http_call("POST", served.server.url + path, pox_request("nobody@example.net"), {**XML, **auth}),
        http_call("POST", served.server.url + path, b"<broken", {**XML, **auth}),
        http_call("GET", served.server.url + path, None, auth),
        http_call(
            "GET",
            f"{served.server.url}/autodiscover/autodiscover.json/v1.0/{ENABLED}?Protocol=AutodiscoverV1",
            None,
            auth,
        ),
        http_call(
            "GET", f"{served.server.url}/autodiscover/autodiscover.json?Email={ENABLED}&Protocol=Ews", None, auth
        ),
    ]
    for status, headers, _ in answers:
        assert status != 401
        assert not {name.lower() for name in headers} & {"www-authenticate", "proxy-authenticate"}
    assert [status for status, _, _ in answers] == [200, 200, 200, 200, 200, 400]
    log = served.server.log_text()
    assert f'"POST {path} HTTP/1.1" 200' in log  # the access log is on, at DEBUG level
    for secret in (token, password, "Basic"):
        assert secret not in log


CONSISTENCY = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize(("imap", "pop"), CONSISTENCY)
def test_thunderbird_and_outlook_see_the_same_switches(served: Served, imap: bool, pop: bool) -> None:
    address = "switched@example.net"
    LiveAdmin(served.server).put(address, imap=imap, pop=pop)
    expected = [name for name, on in (("IMAP", imap), ("POP3", pop)) if on]

    status, _, body = http_call("GET", f"{served.server.url}/mail/config-v1.1.xml?emailaddress={address}")
    if expected:
        assert status == 200
        root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
        thunderbird = [s.get("type", "").upper() for s in root.iterfind("emailProvider/incomingServer")]
    else:
        assert status == 404
        thunderbird = []

    status, _, body = http_call("POST", served.server.url + "/Autodiscover/Autodiscover.xml", pox_request(address), XML)
    assert status == 200
    answer = exchangelib_reader().from_bytes(body)  # exchangelib, independently
    if expected:
        outlook = [p.type for p in answer.response.account.protocols if p.type != "SMTP"]
        assert {p.type for p in answer.response.account.protocols} - {"IMAP", "POP3"} == {"SMTP"}
    else:
        assert answer.response is None and answer.error_response.error.code == OUTLOOK_ERROR_NO_CONFIGURATION
        assert WEBMAIL_URL in answer.error_response.error.message
        outlook = []

    assert thunderbird == outlook == expected


def test_the_readme_example_request_with_the_readme_path(served: Served) -> None:
    """The issue's 'done when', with the example file docs/clients.md's curl command posts."""
    example = (ROOT / "config" / "examples" / "request.xml").read_bytes()
    LiveAdmin(served.server).put("alice@example.net", imap=True, pop=False)
    status, headers, body = http_call("POST", served.server.url + "/Autodiscover/Autodiscover.xml", example, XML)
    assert status == 200 and headers["Content-Type"] == OUTLOOK_CONTENT_TYPE
    assert [p.type for p in protocols(body)] == ["IMAP", "SMTP", "SMTP"]


@pytest.mark.parametrize("transfer", ["Content-Length", "chunked"])
@pytest.mark.server(config={"outlook": {"max_body_bytes": MAX_BODY_LIMIT}}, workers=1)
def test_the_largest_cap_meets_flasks_own_limit_with_a_pox_413(server: GunicornServer, transfer: str) -> None:
    """At the top of the range the app's MAX_CONTENT_LENGTH trips too: still the POX 413, never HTML or a 500."""
    body = b"x" * (2 * MAX_BODY_LIMIT)
    if transfer == "chunked":
        data, headers = chunked(body, 65536), {**XML, "Transfer-Encoding": "chunked"}
    else:
        data, headers = body, XML

    status, answer_headers, answer = raw_http(server.port, request_bytes(POX, data, headers))
    assert status == 413 and answer_headers["content-type"] == OUTLOOK_CONTENT_TYPE
    assert error_code(answer) == OUTLOOK_ERROR_INVALID_REQUEST
    assert f"larger than {MAX_BODY_LIMIT} bytes".encode() in answer
    assert "Traceback" not in server.log_text()
