"""The hardened XML parser: what an attacker's document can make libxml2 do (nothing)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from lxml import etree

from autoconfig import xmlinput

PASSWD_MARKER = "root:x:0:0"


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """A loopback port that records whether anyone connected (a fetched DTD or entity would)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        sock.setblocking(False)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/x.dtd", sock


def connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def hostile(url: str) -> dict[str, bytes]:
    return {
        "billion laughs": (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + b"".join(
                b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
            )
            + b"]><lolz>&lol9;</lolz>"
        ),
        "external entity (file)": b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        "external entity (network)": b'<!DOCTYPE a [<!ENTITY x SYSTEM "%s">]><a>&x;</a>' % url.encode(),
        "external DTD": b'<!DOCTYPE a SYSTEM "%s"><a/>' % url.encode(),
        "public DTD": b'<!DOCTYPE a PUBLIC "-//X//Y//EN" "%s"><a/>' % url.encode(),
        "parameter entities": b'<!DOCTYPE a [<!ENTITY %% p SYSTEM "%s"> %%p;]><a/>' % url.encode(),
        "parameter entity to a file": b'<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><a/>',
        "lower-case doctype": b"<!doctype a><a/>",
        "doctype with spaces and a comment first": b"<!-- x -->\n<!DOCTYPE  a []>\n<a/>",
        "undeclared entity": b"<a>&x;</a>",
        "control character reference": b"<a>&#7;</a>",
        "raw control character": b"<a>\x07</a>",
        "NUL": b"<a>\x00</a>",
        "truncated": b"<a><b>text</b",
        "two roots": b"<a/><b/>",
        "empty": b"",
        "whitespace only": b" \r\n\t",
        "latin-1 bytes": b"<a>caf\xe9</a>",
        "UTF-16": "<a>x</a>".encode("utf-16"),
        "declared ISO-8859-1": b'<?xml version="1.0" encoding="ISO-8859-1"?><a>x</a>',
        "deeply nested": b"<a>" * 3000 + b"</a>" * 3000,
    }


CASES = list(hostile("http://127.0.0.1:1/x.dtd"))


@pytest.mark.parametrize("case", CASES)
def test_hostile_documents_are_refused_with_a_typed_error(case: str, listener: tuple[str, socket.socket]) -> None:
    url, sock = listener
    with pytest.raises(xmlinput.XMLInputError) as raised:
        xmlinput.parse(hostile(url)[case])
    assert PASSWD_MARKER not in str(raised.value)
    assert "127.0.0.1" not in str(raised.value), "the message never quotes the input"
    assert not connected(sock), "the parser touched the network"


@pytest.mark.parametrize(
    "case", ["external entity (file)", "external entity (network)", "external DTD", "parameter entities"]
)
def test_the_parser_itself_resolves_nothing_even_without_the_doctype_check(
    case: str, listener: tuple[str, socket.socket]
) -> None:
    """Defence in depth: were the DOCTYPE check ever bypassed, libxml2 still loads nothing."""
    url, sock = listener
    try:
        root = etree.fromstring(hostile(url)[case], xmlinput._parser())
    except etree.XMLSyntaxError:
        pass
    else:
        assert PASSWD_MARKER not in etree.tostring(root, encoding="unicode")
    assert not connected(sock)


@pytest.mark.parametrize(
    "body",
    [
        b"<a>x</a>",
        b'<?xml version="1.0" encoding="utf-8"?>\n<a>x</a>\n',
        b"\xef\xbb\xbf<a>x</a>",
        "<a>ünïcödé</a>".encode(),
        b"<a><!-- comment --><?pi x?><![CDATA[x]]></a>",
    ],
)
def test_ordinary_documents_parse(body: bytes) -> None:
    root = xmlinput.parse(body)
    assert root.tag == "a"
    assert not [node for node in root.iter() if not isinstance(node.tag, str)], "comments and PIs are dropped"


def test_xinclude_is_left_as_an_element() -> None:
    root = xmlinput.parse(b'<a xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="/etc/passwd"/></a>')
    assert PASSWD_MARKER not in etree.tostring(root, encoding="unicode")
