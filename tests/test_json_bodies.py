"""JSON bodies through the real gunicorn server: the admin API and Dovecot's endpoint
read them the same way, and anything but the expected object gets a 4xx with a
reason, never a 5xx (issue 17, class 1)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import tomli_w

from autoconfig.spec import MAX_ADMIN_BODY, MAX_JSON_DEPTH, MAX_POLICY_BODY
from tests.support.config import ADMIN_TOKEN, BASE_CONFIG, POLICY_HEADER
from tests.support.gunicorn import GunicornServer
from tests.support.outlook import chunked
from tests.support.rawhttp import Answer, request

POLICY_SECRET = "dovecot-policy-secret-0123456789"
ADDRESS = "alice@example.net"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    headers: dict[str, str]
    limit: int


ENDPOINTS = {
    "admin": Endpoint(
        "PUT", f"/admin/v1/accounts/{ADDRESS}", {"Authorization": f"Bearer {ADMIN_TOKEN}"}, MAX_ADMIN_BODY
    ),
    "dovecot": Endpoint("POST", "/dovecot/auth-policy?command=allow", {POLICY_HEADER: POLICY_SECRET}, MAX_POLICY_BODY),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    tmp = tmp_path_factory.mktemp("json-bodies")
    data = copy.deepcopy(BASE_CONFIG)
    data["store"]["url"] = f"sqlite:///{tmp}/accounts.sqlite3"
    data["dovecot"] = {"api_header": f"{POLICY_HEADER}: {POLICY_SECRET}"}
    data["limits"] = {"client_rate": 0, "admin_rate": 0}
    config_path = tmp / "autoconfig.toml"
    config_path.write_bytes(tomli_w.dumps(data).encode())
    with GunicornServer(config_path, tmp / "gunicorn.log", workers=1) as running:
        yield running


def send(
    server: GunicornServer,
    endpoint: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Answer:
    target = ENDPOINTS[endpoint]
    fields = {**target.headers, "Content-Type": content_type, **(headers or {})}
    if fields.get("Transfer-Encoding") == "chunked":
        body = chunked(body)
    return request(server.port, target.method, target.path, body, fields)


def imap_is_off(server: GunicornServer) -> bool:
    answer = request(
        server.port, "GET", f"/admin/v1/accounts/{ADDRESS}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert answer.status == 200, answer.body
    return json.loads(answer.body)["imap"] is False


DEEP_ARRAYS = b"[" * 1000 + b"]" * 1000  # 2,000 bytes: well under both caps
DEEP_OBJECTS = b'{"a":' * 600 + b"1" + b"}" * 600  # 3,601 bytes
# (name, body, status, a phrase of the message); the same for both endpoints.
BAD_BODIES = [
    ("1000 nested arrays", DEEP_ARRAYS, 400, "deeper than"),
    ("600 nested objects", DEEP_OBJECTS, 400, "deeper than"),
    ("deep value in the object", b'{"imap": ' + DEEP_ARRAYS + b', "pop": true}', 400, "deeper than"),
    ("4000 unclosed brackets", b"[" * 4000, 400, "deeper than"),
    ("one level too deep", b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), 400, "deeper than"),
    ("array", b"[true, false]", 400, "JSON object"),
    ("string", b'"imap"', 400, "JSON object"),
    ("number", b"1", 400, "JSON object"),
    ("null", b"null", 400, "JSON object"),
    ("empty", b"", 400, "not valid JSON"),
    ("blank", b"  \r\n ", 400, "not valid JSON"),
    ("not JSON", b"{imap: true}", 400, "not valid JSON"),
    ("trailing text", b'{"imap": true, "pop": true} and more', 400, "not valid JSON"),
    ("two objects", b'{"imap": true}{"pop": true}', 400, "not valid JSON"),
    ("not UTF-8", b'{"imap": true, "pop": "\xff"}', 400, "not UTF-8"),
    ("UTF-16", '{"imap": true, "pop": true}'.encode("utf-16"), 400, "not UTF-8"),
    ("name given twice", b'{"imap": false, "pop": false, "imap": true}', 400, "twice"),
]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize(("body", "status", "says"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_that_is_not_the_expected_object_gets_a_4xx_with_a_reason(
    server: GunicornServer, endpoint: str, body: bytes, status: int, says: str, framing: str
) -> None:
    headers = {"Transfer-Encoding": "chunked"} if framing == "chunked" else {}
    answer = send(server, endpoint, body, headers=headers)
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert says in json.loads(answer.body)["message"]
    assert imap_is_off(server)


# Bodies that parse as one object but carry the wrong things: the endpoint's own checks answer.
ODD_OBJECTS = [
    ("NaN value", b'{"imap": NaN, "pop": true}'),
    ("lone surrogate name", b'{"\\ud800": true}'),
    ("huge number", b'{"imap": ' + b"9" * 4000 + b"}"),
    ("nested object", b'{"imap": {"pop": {"imap": true}}}'),
]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("body", [c[1] for c in ODD_OBJECTS], ids=[c[0] for c in ODD_OBJECTS])
def test_objects_with_the_wrong_fields_get_400(server: GunicornServer, endpoint: str, body: bytes) -> None:
    answer = send(server, endpoint, body)
    assert answer.status == 400, answer.body
    assert json.loads(answer.body)["message"]
    assert imap_is_off(server)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_over_the_cap_gets_413(server: GunicornServer, endpoint: str, framing: str) -> None:
    limit = ENDPOINTS[endpoint].limit
    body = b'{"imap": true, "pop": true, "pad": "' + b"x" * limit + b'"}'
    headers = {"Transfer-Encoding": "chunked"} if framing == "chunked" else {}
    answer = send(server, endpoint, body, headers=headers)
    assert answer.status == 413, answer.body
    assert f"larger than {limit} bytes" in json.loads(answer.body)["message"]
    assert imap_is_off(server)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_other_content_types_get_415(server: GunicornServer, endpoint: str, content_type: str) -> None:
    answer = send(server, endpoint, b'{"imap": true, "pop": true}', content_type=content_type)
    assert answer.status == 415
    assert "application/json" in json.loads(answer.body)["message"]


def test_brackets_inside_strings_are_not_nesting(server: GunicornServer) -> None:
    session = "[{" * 1000
    body = json.dumps({"login": ADDRESS, "protocol": "imap", "session_id": session}).encode()
    answer = send(server, "dovecot", body)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["status"] == -1  # nothing enabled: refused, as for any flat body
    name = json.dumps({"[" * 1000 + '\\"{': True}).encode()
    answer = send(server, "admin", name)
    assert answer.status == 400
    assert "unknown field" in json.loads(answer.body)["message"]


def test_the_worker_that_read_them_still_serves_and_logged_no_traceback(server: GunicornServer) -> None:
    answer = send(server, "admin", b'{"imap": true, "pop": false}')
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["imap"] is True
    log = server.log_text()
    assert "Traceback" not in log and "RecursionError" not in log
    assert "Booting worker" in log and log.count("Booting worker") == 1  # never restarted
    # Put the switch back for any test that runs after this one.
    assert send(server, "admin", b'{"imap": false, "pop": false}').status == 200
