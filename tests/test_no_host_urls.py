"""No answer carries a URL built from the request's Host header (issue 17, class 4).

Werkzeug's router used to answer ``/mail//config-v1.1.xml`` with a 308 to
``http://<Host>/mail/config-v1.1.xml``, in an HTML page without the security
headers.  Now a doubled slash anywhere in a route's path is a path the
service does not serve: a plain 404 with the headers every answer carries,
like any unknown path.  Checked on the real gunicorn server for every route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoconfig import create_app
from autoconfig.config import load
from tests.support.gunicorn import GunicornServer
from tests.support.rawhttp import Answer, request
from tests.support.routes import ADMIN_AUTH, ENABLED, JSON, ROUTES, Route, every_route_config, unrouted

HOSTILE = "attacker.example"
HOSTILE_HOST = f"{HOSTILE}:8443"
# Ways a client or proxy could name another host; none of them may reach an answer.
HOSTILE_HEADERS = {"X-Forwarded-Host": HOSTILE_HOST, "Forwarded": f"host={HOSTILE_HOST}", "X-Original-Host": HOSTILE}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    tmp = tmp_path_factory.mktemp("host-urls")
    with GunicornServer(every_route_config(tmp), tmp / "gunicorn.log") as running:
        enabled = request(
            running.port,
            "PUT",
            f"/admin/v1/accounts/{ENABLED}",
            b'{"imap": true, "pop": false}',
            {**ADMIN_AUTH, **JSON},
        )
        assert enabled.status == 200, enabled.body
        yield running


def imap_on(server: GunicornServer) -> bool:
    answer = request(server.port, "GET", f"/admin/v1/accounts/{ENABLED}", headers=ADMIN_AUTH)
    return answer.status == 200 and json.loads(answer.body)["imap"] is True


def carries_host(answer: Answer) -> bool:
    texts = [answer.body.decode("latin-1").lower(), *(f"{k}: {v}".lower() for k, v in answer.headers.items())]
    return any(HOSTILE in text for text in texts)


def test_the_table_names_every_route(tmp_path: Path) -> None:
    app = create_app(load(every_route_config(tmp_path), env={}))
    try:
        rules = [(rule.endpoint, frozenset(rule.methods or ())) for rule in app.url_map.iter_rules()]
    finally:
        app.extensions["autoconfig"].store.close()
    assert unrouted(rules) == set()


@pytest.mark.parametrize("route", ROUTES, ids=[route.id for route in ROUTES])
def test_no_answer_carries_the_request_host(server: GunicornServer, route: Route) -> None:
    headers = {**route.headers, **HOSTILE_HEADERS}
    answer = request(server.port, route.method, route.target(), route.body, headers, host=HOSTILE_HOST)
    assert answer.status == route.status, answer.body[:300]
    assert "location" not in answer.headers
    assert not carries_host(answer)


def doubled_slashes(path: str) -> list[str]:
    """``path`` with each of its slashes doubled in turn."""
    variants = [path[:i] + "/" + path[i:] for i, char in enumerate(path) if char == "/"]
    if path.startswith("/autodiscover/"):  # the prefix is matched in any case, so try that spelling too
        variants.append(path.replace("/autodiscover/autodiscover", "/AutoDiscover//AutoDiscover", 1))
    return variants


def _write_that_would_show(route: Route, path: str) -> tuple[str, bytes | None]:
    """For the admin writes, a path and body that would turn the test account's IMAP off if they landed."""
    if route.method == "DELETE":
        return path.replace("bob@example.net", ENABLED), None
    if route.method in ("PUT", "PATCH"):
        return path, b'{"imap": false, "pop": false}'
    return path, route.body


DOUBLED = [(route, path) for route in ROUTES for path in doubled_slashes(route.path)]


@pytest.mark.parametrize(("route", "path"), DOUBLED, ids=[f"{route.id} {path}" for route, path in DOUBLED])
def test_a_doubled_slash_is_a_plain_404_with_the_usual_headers(server: GunicornServer, route: Route, path: str) -> None:
    path, body = _write_that_would_show(route, path)
    query = route.target()[len(route.path) :]
    headers = {**route.headers, **HOSTILE_HEADERS}
    answer = request(server.port, route.method, path + query, body, headers, host=HOSTILE_HOST)
    assert answer.status == 404, answer.body[:300]
    assert "location" not in answer.headers
    if path.lstrip("/").startswith("admin/v1/"):
        # The admin API answers every path under /admin/v1 in JSON, unknown ones included.
        assert answer.headers["content-type"] == "application/json"
        assert json.loads(answer.body)["error"] == "not_found"
    else:
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.body == b"404 Not Found\n"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"
    assert not carries_host(answer)
    if route.endpoint.startswith("admin."):
        assert imap_on(server), "a write through a doubled slash landed"
