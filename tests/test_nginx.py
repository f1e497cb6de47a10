"""The shipped nginx example in front of the real gunicorn server, over TLS."""

from __future__ import annotations

import http.client
import plistlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.admin import LiveAdmin
from tests.support.gunicorn import GunicornServer
from tests.support.nginx import NginxServer
from tests.support.promises import APPLE_CONTENT_TYPE, OUTLOOK_REQUEST_NS, OUTLOOK_RESPONSE_NS
from tests.support.tls import self_signed

HOSTS = ["autoconfig.example.net", "autodiscover.example.net"]
BASIC = "Basic dXNlcjpodW50ZXIy"


@pytest.fixture
def front(server: GunicornServer, tmp_path: Path) -> Iterator[tuple[NginxServer, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path, HOSTS)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # we connect to 127.0.0.1 and send the Host header ourselves
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    with NginxServer(workdir, server.port, cert, key) as nginx:
        yield nginx, context


def request(
    port: int,
    method: str,
    path: str,
    host: str,
    context: ssl.SSLContext | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("host", HOSTS)
def test_thunderbird_document_through_tls(
    front: tuple[NginxServer, ssl.SSLContext], server: GunicornServer, host: str
) -> None:
    nginx, context = front
    LiveAdmin(server).set("alice@example.net", imap=True)
    status, headers, body = request(
        nginx.https_port,
        "GET",
        "/mail/config-v1.1.xml?emailaddress=alice@example.net",
        host,
        context,
        headers={"Authorization": BASIC},
    )
    assert status == 200 and headers["content-type"].startswith("application/xml")
    assert b'<incomingServer type="imap">' in body
    assert BASIC.split()[1] not in nginx.access_log() + server.log_text()


def test_keep_alive_serves_several_requests_on_one_connection(front: tuple[NginxServer, ssl.SSLContext]) -> None:
    nginx, context = front
    conn = http.client.HTTPSConnection("127.0.0.1", nginx.https_port, timeout=10, context=context)
    try:
        for _ in range(3):
            conn.request("GET", "/healthz", headers={"Host": HOSTS[0]})
            response = conn.getresponse()
            response.read()
            assert response.status == 200 and response.getheader("Connection") != "close"
    finally:
        conn.close()


def test_plain_http_get_of_autodiscover_is_redirected_to_https(front: tuple[NginxServer, ssl.SSLContext]) -> None:
    nginx, _ = front
    status, headers, _ = request(nginx.http_port, "GET", "/Autodiscover/Autodiscover.xml", HOSTS[1])
    assert status == 302
    assert headers["location"] == f"https://{HOSTS[1]}/Autodiscover/Autodiscover.xml"


def test_plain_http_post_of_autodiscover_is_refused(front: tuple[NginxServer, ssl.SSLContext]) -> None:
    nginx, _ = front
    status, _, _ = request(
        nginx.http_port,
        "POST",
        "/autodiscover/autodiscover.xml",
        HOSTS[1],
        body=b"<x/>",
        headers={"Content-Type": "text/xml", "Authorization": BASIC},
    )
    assert status == 403


def test_other_plain_http_requests_go_to_https(front: tuple[NginxServer, ssl.SSLContext]) -> None:
    nginx, _ = front
    status, headers, _ = request(nginx.http_port, "GET", "/mail/config-v1.1.xml?emailaddress=a@example.net", HOSTS[0])
    assert status == 301 and headers["location"].startswith(f"https://{HOSTS[0]}/mail/config-v1.1.xml")


def test_outlook_settings_through_tls(front: tuple[NginxServer, ssl.SSLContext], server: GunicornServer) -> None:
    nginx, context = front
    LiveAdmin(server).set("olly@example.net", pop=True)
    body = (
        f'<Autodiscover xmlns="{OUTLOOK_REQUEST_NS}"><Request><EMailAddress>olly@example.net</EMailAddress>'
        f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()
    status, headers, answer = request(
        nginx.https_port,
        "POST",
        "/AutoDiscover/AutoDiscover.xml",
        HOSTS[1],
        context,
        body=body,
        headers={"Content-Type": "text/xml", "Authorization": BASIC},
    )
    assert status == 200 and headers["content-type"].startswith("text/xml")
    assert b"<Type>POP3</Type>" in answer and b"<Type>IMAP</Type>" not in answer
    assert "www-authenticate" not in headers


def test_apple_profile_through_tls(front: tuple[NginxServer, ssl.SSLContext], server: GunicornServer) -> None:
    nginx, context = front
    LiveAdmin(server).set("ana@example.net", imap=True)
    status, headers, answer = request(
        nginx.https_port, "GET", "/apple/mail.mobileconfig?emailaddress=ana@example.net", HOSTS[0], context
    )
    assert status == 200 and headers["content-type"] == APPLE_CONTENT_TYPE
    assert plistlib.loads(answer)["PayloadContent"][0]["EmailAccountType"] == "EmailTypeIMAP"
