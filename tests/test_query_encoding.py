"""Query strings that are not UTF-8 get a 400 on every route, in every parameter (issue 17, class 3).

Werkzeug reads an undecodable escape as literal text: ``?emailaddress=al%ffice@example.net``
was looked up as the address ``al%FFice@example.net``, and answered with that
account's settings when such a row existed.  Checked on the real gunicorn server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from lxml import etree

from autoconfig.spec import OUTLOOK_ERROR_INVALID_REQUEST
from tests.support.gunicorn import GunicornServer
from tests.support.outlook import STRICT, error_code
from tests.support.rawhttp import Answer, request
from tests.support.routes import ADMIN_AUTH, ENABLED, JSON, ROUTES, Route, every_route_config

LITERAL = "al%ffice@example.net"  # an account whose address is the text a broken decoder sees


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    tmp = tmp_path_factory.mktemp("query-encoding")
    with GunicornServer(every_route_config(tmp), tmp / "gunicorn.log") as running:
        for address in (ENABLED, LITERAL):
            target = f"/admin/v1/accounts/{quote(address)}"
            answer = request(running.port, "PUT", target, b'{"imap": true, "pop": true}', {**ADMIN_AUTH, **JSON})
            assert answer.status == 200, answer.body
            assert json.loads(answer.body)["address"] == address.lower()
        yield running


# Percent-escapes that do not decode as UTF-8.
BAD_ESCAPES = {
    "invalid byte": "%ff",
    "lone continuation byte": "%80",
    "overlong slash": "%c0%af",
    "UTF-16 surrogate": "%ed%a0%80",
    "truncated sequence": "%c3",
    "beyond U+10FFFF": "%f4%90%80%80",
}


def variants(route: Route) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """The route's query with bad bytes in each parameter's value, in each name, and in an extra parameter."""
    found = []
    params = list(route.params)
    for kind, bad in BAD_ESCAPES.items():
        for index, (name, value) in enumerate(params):
            in_value = [*params[:index], (name, value[:2] + bad + value[2:]), *params[index + 1 :]]
            in_name = [*params[:index], (name[:3] + bad + name[3:], value), *params[index + 1 :]]
            found += [(f"{name} value, {kind}", tuple(in_value)), (f"{name} name, {kind}", tuple(in_name))]
        found.append((f"extra parameter, {kind}", (*params, ("x", "a" + bad))))
    return found


CASES = [(route, label, params) for route in ROUTES for label, params in variants(route)]


def assert_refused_in_the_route_s_format(route: Route, answer: Answer) -> None:
    content_type = answer.headers["content-type"]
    if route.errors == "pox":  # Outlook's convention for a malformed request: 200 with error 600
        assert answer.status == 200
        assert content_type.startswith("text/xml")
        assert error_code(answer.body) == OUTLOOK_ERROR_INVALID_REQUEST
        message = etree.fromstring(answer.body, STRICT).xpath("string(//*[local-name()='Message'])")
        assert "UTF-8" in message
        return
    assert answer.status == 400, answer.body[:300]
    if route.errors == "json":
        assert content_type == "application/json"
        body = json.loads(answer.body)
        assert "UTF-8" in (body.get("message") or body.get("ErrorMessage"))
    elif route.errors == "html":
        assert content_type == "text/html; charset=utf-8"
        assert "UTF-8" in answer.text
    else:
        assert content_type == "text/plain; charset=utf-8"
        assert answer.text == "the query string is not valid UTF-8 (after percent-decoding)\n"


@pytest.mark.parametrize(
    ("route", "params"), [c[::2] for c in CASES], ids=[f"{route.id}: {label}" for route, label, _ in CASES]
)
def test_undecodable_escapes_are_refused_everywhere(
    server: GunicornServer, route: Route, params: tuple[tuple[str, str], ...]
) -> None:
    answer = request(server.port, route.method, route.target(params), route.body, route.headers)
    assert_refused_in_the_route_s_format(route, answer)
    assert b"Traceback" not in answer.body


@pytest.mark.parametrize("route", ROUTES, ids=[route.id for route in ROUTES])
def test_the_same_requests_in_utf8_are_answered(server: GunicornServer, route: Route) -> None:
    """The control: the ordinary request, plus a parameter in proper UTF-8, is not refused."""
    params = (*route.params, ("x", "j%C3%B6rg%F0%9F%93%AB"))
    answer = request(server.port, route.method, route.target(params), route.body, route.headers)
    assert answer.status == route.status, answer.body[:300]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.params], ids=[r.id for r in ROUTES if r.params])
def test_raw_bytes_that_are_not_utf8_are_refused(server: GunicornServer, route: Route) -> None:
    """Unescaped bytes never reach the app: gunicorn refuses the request line itself."""
    name, value = route.params[0]
    target = route.target(((name, "al"), *route.params[1:])).encode() + b"\xff" + value.encode()
    answer = request(server.port, route.method, target, route.body, route.headers)
    assert answer.status == 400
    assert b"Traceback" not in answer.body and b"<script" not in answer.body


@pytest.mark.parametrize("path", ["/mail/config-v1.1.xml", "/apple/mail.mobileconfig", "/setup"])
def test_an_account_named_by_the_undecoded_text_is_not_reached(server: GunicornServer, path: str) -> None:
    """The account al%ffice@example.net exists with both switches on; the bytes al\\xffice never find it."""
    answer = request(server.port, "GET", f"{path}?emailaddress=al%ffice@example.net")
    assert answer.status == 400
    assert b"imap.example.net" not in answer.body
    # The account itself is reachable by its own spelling, with the % escaped.
    assert request(server.port, "GET", f"{path}?emailaddress=al%25ffice@example.net").status == 200
