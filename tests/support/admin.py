"""The webmail's side of the admin API, as tests drive it.

``Admin`` speaks through Flask's test client, ``LiveAdmin`` over HTTP to a
running server (gunicorn, a node of a cluster, nginx in front): the same
calls, so a test reads the same whichever it needs.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from flask.testing import FlaskClient

from .config import ADMIN_TOKEN
from .gunicorn import http


class Admin:
    """The admin API through the Flask test client."""

    def __init__(self, client: FlaskClient, token: str = ADMIN_TOKEN) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def set(self, address: str, **switches: bool) -> dict[str, Any]:
        response = self.client.patch(f"/admin/v1/accounts/{address}", json=switches, headers=self.headers)
        assert response.status_code == 200, response.data
        return dict(json.loads(response.data))


class Served(Protocol):
    @property
    def url(self) -> str: ...


class LiveAdmin:
    """The admin API of a running server, over HTTP.

    ``set`` (PATCH) and ``put`` change switches and ``get`` reads them, each
    asserting a 200; ``call`` is one request whatever it answers, for tests
    that expect a refusal or an outage.
    """

    def __init__(self, server: Served | str, token: str = ADMIN_TOKEN) -> None:
        self.url = server if isinstance(server, str) else server.url
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, address: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http(method, f"{self.url}/admin/v1/accounts/{address}", body, self.headers)

    def _ok(self, method: str, address: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, _, answer = self.call(method, address, body)
        assert status == 200, (status, answer)
        return dict(json.loads(answer))

    def set(self, address: str, **switches: bool) -> dict[str, Any]:
        return self._ok("PATCH", address, switches)

    def put(self, address: str, *, imap: bool, pop: bool) -> dict[str, Any]:
        return self._ok("PUT", address, {"imap": imap, "pop": pop})

    def get(self, address: str) -> dict[str, Any]:
        return self._ok("GET", address)
