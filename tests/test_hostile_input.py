"""Hostile input on every client endpoint: a clear 4xx, no stack trace, and
nothing the client sent comes back unescaped."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from autoconfig.web.pages import HTML_HEADERS
from tests.support.promises import APPLE_PATHS as APPLE_PROFILE_PATHS
from tests.support.promises import CACHE_CONTROL, OUTLOOK_POX_PATH, THUNDERBIRD_PATHS

CLIENT_PATHS = list(THUNDERBIRD_PATHS)

HOSTILE_QUERIES = {
    "missing (declined like an unknown address: issue 23)": ("", 404),
    "empty": ("emailaddress=", 400),
    "two at": ("emailaddress=a@b@example.net", 400),
    "local over 64": ("emailaddress=" + "a" * 65 + "@example.net", 400),
    "address over 254": ("emailaddress=" + "a" * 60 + "@" + ("b" * 60 + ".") * 4 + "net", 400),
    "NUL": ("emailaddress=a%00@example.net", 400),
    "CRLF": ("emailaddress=a%0d%0aSet-Cookie:%20x@example.net", 400),
    "control char": ("emailaddress=a%07@example.net", 400),
    "script": ("emailaddress=%3Cscript%3Ealert(1)%3C/script%3E@example.net", 400),
    "quote": ("emailaddress=%22a%22@example.net", 400),
    "ampersand entity": ("emailaddress=a%26lt;@example.net", 400),
    "invalid IDN": ("emailaddress=a@xn--zz.example", 400),
    "bidi override": ("emailaddress=a%E2%80%AE@example.net", 400),
    "stray percent (valid atext: answered as an address)": ("emailaddress=a%ZZ@example.net", 404),
    "invalid utf-8": ("emailaddress=a%FF%FE@example.net", 400),
    "invalid utf-8 in another parameter": ("emailaddress=a@example.net&x=%C3", 400),
    "replacement character": ("emailaddress=a%EF%BF%BD@example.net", 400),
    "repeated": ("emailaddress=a@example.net&emailaddress=b@example.net", 400),
    "huge query": ("emailaddress=a@example.net&x=" + "y" * 5000, 414),
    "IP literal": ("emailaddress=a@[127.0.0.1]", 400),
    "foreign": ("emailaddress=a@evil.example", 404),
    "valid IDN, foreign": ("emailaddress=a@b%C3%BCcher.example", 404),
}


@pytest.mark.parametrize("path", CLIENT_PATHS)
@pytest.mark.parametrize(("query", "status"), list(HOSTILE_QUERIES.values()), ids=list(HOSTILE_QUERIES))
def test_hostile_queries_get_a_clear_4xx(client: FlaskClient, path: str, query: str, status: int) -> None:
    # Passed as raw bytes, as a socket would deliver them (no re-quoting by the test client).
    response = client.get(path, query_string=query)
    assert response.status_code == status
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    assert body.strip(), "the reason is stated"
    for fragment in ("<script", "alert", "Set-Cookie", "evil", "%3C", "\x00"):
        assert fragment not in body
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "host", ["evil.example/x", "<script>", "a b", "example.net:port", "ex%41mple.net", "_bad_.net"]
)
def test_malformed_host_headers_are_refused(client: FlaskClient, host: str) -> None:
    response = client.get("/mail/config-v1.1.xml?emailaddress=a@example.net", headers={"Host": host})
    assert response.status_code == 400
    assert host not in response.get_data(as_text=True)


@pytest.mark.parametrize("host", ["autoconfig.example.net", "example.net:8080", "127.0.0.1:8080", "[::1]:8080"])
def test_ordinary_host_headers_are_accepted(client: FlaskClient, host: str) -> None:
    response = client.get("/mail/config-v1.1.xml?emailaddress=a@example.net", headers={"Host": host})
    assert response.status_code == 404  # nothing enabled; the point is: not 400


@pytest.mark.parametrize("path", ["/nope", "/mail/config-v1.1.xml/<script>", "/.well-known/%00", "/" + "a" * 3000])
def test_unknown_paths_are_plain_404s_that_echo_nothing(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.content_type.startswith("text/plain")
    assert "<" not in response.get_data(as_text=True)


# Each family's paths, the headers every answer on them carries, and the methods they take.
FAMILY_ANSWERS = {
    "thunderbird": (THUNDERBIRD_PATHS[0], {"Cache-Control": CACHE_CONTROL}, "GET, HEAD, OPTIONS"),
    "outlook": (OUTLOOK_POX_PATH, {"Cache-Control": CACHE_CONTROL}, "GET, HEAD, OPTIONS, POST"),
    "apple": (APPLE_PROFILE_PATHS[0], {**dict(HTML_HEADERS)}, "GET, HEAD, OPTIONS"),
    "setup": ("/setup", {**dict(HTML_HEADERS)}, "GET, HEAD, OPTIONS"),
}


WRONG_METHODS = [
    pytest.param(method, *answer, id=f"{family}-{method}")
    for family, answer in FAMILY_ANSWERS.items()
    for method in ("POST", "PUT", "DELETE", "PATCH")
    if method not in answer[2]
]


@pytest.mark.parametrize(("method", "path", "headers", "allow"), WRONG_METHODS)
def test_other_methods_on_client_paths_are_405_with_the_family_headers(
    client: FlaskClient, method: str, path: str, headers: dict[str, str], allow: str
) -> None:
    response = client.open(f"{path}?emailaddress=a@example.net", method=method)
    assert response.status_code == 405
    assert response.content_type.startswith("text/plain")
    assert response.headers["Allow"] == allow
    for name, value in {**headers, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}.items():
        assert response.headers[name] == value
