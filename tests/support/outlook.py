"""Speaking Outlook's autodiscover the way a client does: requests built
with lxml (or by exchangelib), answers read back with a parser that would
refuse anything but plain well-formed XML, and raw HTTP over a socket for
what urllib will not send (chunked bodies, lying lengths)."""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from lxml import etree
from lxml.builder import ElementMaker

from autoconfig.spec import (
    AUTODISCOVER_BASE_NS,
    MOBILESYNC_REQUEST_NS,
    MOBILESYNC_RESPONSE_NS,
    OUTLOOK_REQUEST_NS,
    OUTLOOK_RESPONSE_NS,
)

_REQUEST = ElementMaker(namespace=OUTLOOK_REQUEST_NS, nsmap={None: OUTLOOK_REQUEST_NS})
_ACTIVESYNC = ElementMaker(namespace=MOBILESYNC_REQUEST_NS, nsmap={None: MOBILESYNC_REQUEST_NS})
STRICT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def pox_request(address: str, schema: str = OUTLOOK_RESPONSE_NS) -> bytes:
    r = _REQUEST
    document = r.Autodiscover(r.Request(r.EMailAddress(address), r.AcceptableResponseSchema(schema)))
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8")


def activesync_request(address: str, schema: str = MOBILESYNC_RESPONSE_NS) -> bytes:
    """What a phone set up as "Exchange" sends ([MS-ASCMD] 2.2.1.1, request schema in 6.3)."""
    r = _ACTIVESYNC
    document = r.Autodiscover(r.Request(r.EMailAddress(address), r.AcceptableResponseSchema(schema)))
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8")


def base(local: str) -> str:
    return f"{{{AUTODISCOVER_BASE_NS}}}{local}"


def outlook(local: str) -> str:
    return f"{{{OUTLOOK_RESPONSE_NS}}}{local}"


@dataclass(frozen=True)
class Protocol:
    type: str
    server: str
    port: int
    login_name: str
    spa: str
    ssl: str
    encryption: str
    domain_required: str
    auth_required: str


def parse_answer(body: bytes) -> etree._Element:
    """The root of an answer, which must be an ``Autodiscover`` element in the base namespace."""
    root = etree.fromstring(body, STRICT)
    assert root.getroottree().docinfo.internalDTD is None
    assert root.tag == base("Autodiscover")
    return root


def error_code(body: bytes) -> str | None:
    """ErrorCode of an error answer (Response in the base or the mobilesync namespace), None for settings."""
    root = parse_answer(body)
    for namespace in (AUTODISCOVER_BASE_NS, MOBILESYNC_RESPONSE_NS):
        error = root.find(f"{{{namespace}}}Response/{{{namespace}}}Error")
        if error is not None:
            return error.findtext(f"{{{namespace}}}ErrorCode")
    assert root.find(outlook("Response")) is not None, "neither settings nor error"
    return None


def response_namespace(body: bytes) -> str | None:
    """The namespace of the answer's one ``Response`` element."""
    responses = list(parse_answer(body))
    assert len(responses) == 1 and etree.QName(responses[0]).localname == "Response"
    return etree.QName(responses[0]).namespace


def protocols(body: bytes) -> list[Protocol]:
    """Every Protocol of a settings answer, in document order."""
    account = parse_answer(body).find(f"{outlook('Response')}/{outlook('Account')}")
    assert account is not None
    assert account.findtext(outlook("AccountType")) == "email"
    assert account.findtext(outlook("Action")) == "settings"
    found = []
    for element in account.findall(outlook("Protocol")):

        def text(local: str, element: etree._Element = element) -> str:
            value = element.findtext(outlook(local))
            assert value is not None, f"Protocol without {local}"
            return value

        found.append(
            Protocol(
                type=text("Type"),
                server=text("Server"),
                port=int(text("Port")),
                login_name=text("LoginName"),
                spa=text("SPA"),
                ssl=text("SSL"),
                encryption=text("Encryption"),
                domain_required=text("DomainRequired"),
                auth_required=text("AuthRequired"),
            )
        )
    return found


def raw_http(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as-is on a fresh connection and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def request_bytes(path: str, body: bytes = b"", headers: dict[str, str] | None = None, method: str = "POST") -> bytes:
    """An HTTP/1.1 request with Content-Length (unless headers name a Transfer-Encoding) and Connection: close."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    headers = dict(headers or {})
    if "Transfer-Encoding" not in headers and "Content-Length" not in headers:
        headers["Content-Length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 4096) -> bytes:
    """``body`` in chunked transfer coding, ending with the last chunk."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def exchangelib_reader() -> Any:
    """exchangelib's POX answer reader, ``Autodiscover`` (with ``from_bytes`` and ``payload``).

    Imported on use, so an environment with the wrong exchangelib fails these
    tests with a clear reason instead of stopping the whole collection.
    """
    try:
        from exchangelib.autodiscover.properties import Autodiscover
    except ImportError:
        pytest.fail(
            "exchangelib's POX reader (exchangelib.autodiscover.properties) is missing: install "
            "exchangelib==4.9.0 from requirements-dev.txt (exchangelib 5 dropped POX autodiscover)"
        )
    return Autodiscover
