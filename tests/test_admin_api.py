"""The admin API the webmail calls: authenticated, strict about its input,
and visible to the very next client request."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from autoconfig import create_app
from autoconfig.config import load
from tests.support.config import ADMIN_AUTH, ADMIN_TOKEN
from tests.support.fixture_types import MakeApp

URL = "/admin/v1/accounts/alice@example.net"


def test_put_sets_both_switches_and_records_who(client: FlaskClient) -> None:
    response = client.put(URL, json={"imap": True, "pop": False}, headers={**ADMIN_AUTH, "X-Autoconfig-Actor": "alice"})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["address"], body["imap"], body["pop"]) == ("alice@example.net", True, False)
    # Both switches were set explicitly on a new account, so both record who set them.
    assert body["imap_changed"]["by"] == body["pop_changed"]["by"] == "api:webmail/alice"
    later = client.patch(URL, json={"imap": True, "pop": True}, headers=ADMIN_AUTH).get_json()
    assert later["imap_changed"] == body["imap_changed"]  # unchanged value, unchanged stamp
    assert later["pop_changed"]["by"] == "api:webmail"


def test_patch_changes_only_what_it_names(client: FlaskClient) -> None:
    client.put(URL, json={"imap": True, "pop": True}, headers=ADMIN_AUTH)
    body = client.patch(URL, json={"pop": False}, headers=ADMIN_AUTH).get_json()
    assert (body["imap"], body["pop"]) == (True, False)


def test_get_of_a_never_seen_address_is_all_off(client: FlaskClient) -> None:
    body = client.get("/admin/v1/accounts/Nobody@EXAMPLE.net", headers=ADMIN_AUTH).get_json()
    assert body == {
        "address": "nobody@example.net",
        "imap": False,
        "pop": False,
        "imap_changed": None,
        "pop_changed": None,
    }


def test_delete_resets_the_account(client: FlaskClient) -> None:
    client.put(URL, json={"imap": True, "pop": True}, headers=ADMIN_AUTH)
    response = client.delete(URL, headers=ADMIN_AUTH)
    assert response.status_code == 200 and response.get_json()["existed"] is True
    assert client.get(URL, headers=ADMIN_AUTH).get_json()["imap"] is False


def test_a_change_is_visible_to_the_next_client_request(client: FlaskClient) -> None:
    client.put(URL, json={"imap": True, "pop": False}, headers=ADMIN_AUTH)
    assert client.get("/mail/config-v1.1.xml?emailaddress=alice@example.net").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    ],
    ids=["none", "wrong", "basic", "empty", "longer"],
)
def test_without_the_token_nothing_changes(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.put(URL, json={"imap": True, "pop": True}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert client.get(URL, headers=ADMIN_AUTH).get_json()["imap"] is False


def test_without_a_configured_token_the_api_does_not_exist(config_data: dict[str, Any], make_app: MakeApp) -> None:
    del config_data["admin"]
    client = make_app(config_data).test_client()
    assert client.get(URL, headers=ADMIN_AUTH).status_code == 404


BAD_BODIES = [
    ("not json", "{imap: true", "application/json", 400, "not valid JSON"),
    ("array", "[true]", "application/json", 400, "JSON object"),
    ("unknown field", '{"imap": true, "pop": false, "smtp": true}', "application/json", 400, "unknown field"),
    ("string value", '{"imap": "true", "pop": false}', "application/json", 400, "true or false"),
    ("number value", '{"imap": 1, "pop": false}', "application/json", 400, "true or false"),
    ("null value", '{"imap": null, "pop": false}', "application/json", 400, "true or false"),
    ("missing field on PUT", '{"imap": true}', "application/json", 400, "missing field"),
    ("wrong content type", '{"imap": true, "pop": true}', "text/plain", 415, "application/json"),
    ("huge", '{"imap": true, "pop": true' + " " * 10000 + "}", "application/json", 413, "larger"),
    ("bad utf-8", b'{"imap": true, "pop": \xff}', "application/json", 400, "not valid JSON"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"), [row[1:] for row in BAD_BODIES], ids=[row[0] for row in BAD_BODIES]
)
def test_bad_bodies_are_refused_and_change_nothing(
    client: FlaskClient, body: str | bytes, content_type: str, status: int, says: str
) -> None:
    response = client.put(URL, data=body, content_type=content_type, headers=ADMIN_AUTH)
    assert response.status_code == status
    assert says in response.get_json()["message"]
    assert client.get(URL, headers=ADMIN_AUTH).get_json()["imap"] is False


@pytest.mark.parametrize(
    "address", ["alice", "alice@@example.net", "al%00ice@example.net", "a" * 300 + "@example.net", "<b>@example.net"]
)
def test_bad_addresses_are_refused(client: FlaskClient, address: str) -> None:
    response = client.put(f"/admin/v1/accounts/{address}", json={"imap": True, "pop": True}, headers=ADMIN_AUTH)
    assert response.status_code == 400
    assert "invalid email address" in response.get_json()["message"]


def test_empty_patch_is_refused(client: FlaskClient) -> None:
    response = client.patch(URL, data=json.dumps({}), content_type="application/json", headers=ADMIN_AUTH)
    assert response.status_code == 400


def test_actor_header_is_validated(client: FlaskClient) -> None:
    response = client.put(
        URL, json={"imap": True, "pop": True}, headers={**ADMIN_AUTH, "X-Autoconfig-Actor": "a b\u00e9"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/admin/v1/nope", 404, "not_found"),
        ("GET", "/admin/v1", 404, "not_found"),
        ("PUT", "/admin/v1/accounts", 404, "not_found"),
        ("POST", URL, 405, "method_not_allowed"),
    ],
)
def test_unknown_paths_and_methods_answer_json_too(
    client: FlaskClient, method: str, path: str, status: int, error: str
) -> None:
    response = client.open(path, method=method, headers=ADMIN_AUTH)
    assert response.status_code == status
    assert response.content_type == "application/json"
    body = response.get_json()
    assert sorted(body) == ["error", "message"] and body["error"] == error
    assert response.headers["Cache-Control"] == "no-store"
    if status == 405:
        assert response.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"
        assert "use DELETE, GET" in body["message"]
    else:
        assert "/admin/v1/accounts/<address>" in body["message"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_an_address_in_a_domain_not_served_is_refused_and_not_stored(client: FlaskClient, method: str) -> None:
    response = client.open(
        "/admin/v1/accounts/alice@example.nte", method=method, json={"imap": True, "pop": False}, headers=ADMIN_AUTH
    )
    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "domain_not_served"
    assert body["message"] == (
        "example.nte is not a domain this service answers for (the served domains are example.net, example.org); "
        "switches stored for it would never be read"
    )
    store = client.application.extensions["autoconfig"].store
    assert list(store.accounts()) == []


def test_reading_and_resetting_take_any_address(client: FlaskClient) -> None:
    """So a row stored before domains were checked can still be looked at and removed."""
    store = client.application.extensions["autoconfig"].store
    store.update("old@example.nte", {"imap": True}, "t")
    assert client.get("/admin/v1/accounts/old@example.nte", headers=ADMIN_AUTH).get_json()["imap"] is True
    assert client.delete("/admin/v1/accounts/old@example.nte", headers=ADMIN_AUTH).get_json()["existed"] is True


@pytest.mark.parametrize(
    ("address", "status", "says"),
    [
        ("alice@shop.example", 200, None),  # may be hosted (its MX may point here, now or later)
        ("alice@mail.example.net", 404, "within example.net, which is never looked up"),
        ("alice@blocked.example", 404, "within blocked.example, which is never looked up"),
        ("alice@printer.local", 404, "within local, which is never looked up"),
    ],
)
def test_with_hosted_domains_any_domain_that_could_be_hosted_is_stored(
    config_data: dict[str, Any],
    write_config: Callable[[dict[str, Any]], Path],
    address: str,
    status: int,
    says: str | None,
) -> None:
    config_data["dns"] = {"mx_hosts": ["mx1.example.net"], "deny": ["blocked.example"], "nameserver": "127.0.0.1"}
    app = create_app(load(write_config(config_data), env={}))
    try:
        response = app.test_client().put(
            f"/admin/v1/accounts/{address}", json={"imap": True, "pop": False}, headers=ADMIN_AUTH
        )
        assert response.status_code == status
        if says is not None:
            assert "can never be a hosted customer domain" in response.get_json()["message"]
            assert says in response.get_json()["message"]
    finally:
        app.extensions["autoconfig"].store.close()
