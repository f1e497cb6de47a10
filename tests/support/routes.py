"""Every route the app serves, with one ordinary request for each.

Tests that must hold "on every endpoint" walk this table, and check that it
names every rule of the app's URL map, so a route added later without a
row here fails them instead of going unchecked.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tests.support.config import ADMIN_AUTH, BASE_CONFIG, POLICY_HEADER

from .outlook import pox_request

POLICY_SECRET = "dovecot-policy-secret-0123456789"
ENABLED = "alice@example.net"  # the routes' account: a test's server turns its IMAP on first
OTHER = "bob@example.net"  # the one the DELETE row resets
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Route:
    endpoint: str  # the Flask endpoint this request reaches
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()  # the query parameters the endpoint reads, with good values
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    errors: str = "text"  # how the endpoint answers a bad request: text, html, json or pox
    status: int = 200  # what the ordinary request gets

    @property
    def id(self) -> str:
        return f"{self.method} {self.endpoint}"

    def target(self, params: tuple[tuple[str, str], ...] | None = None) -> str:
        pairs = self.params if params is None else params
        return self.path + ("?" + "&".join(f"{name}={value}" for name, value in pairs) if pairs else "")

    def asking_for(self, address: str) -> tuple[str, bytes | None]:
        """The target and body of this request with ``address`` where it names ENABLED."""
        params = tuple((name, address if value == ENABLED else value) for name, value in self.params)
        target = self.target(params).replace(f"/{ENABLED}", f"/{address}")
        body = pox_request(address) if self.body is not None and self.errors == "pox" else self.body
        return target, body


ROUTES = [
    Route("thunderbird.config_0", "GET", "/mail/config-v1.1.xml", (("emailaddress", ENABLED),)),
    Route("thunderbird.config_1", "GET", "/.well-known/autoconfig/mail/config-v1.1.xml", (("emailaddress", ENABLED),)),
    Route("thunderbird.config_2", "GET", "/.well-known/mail-v1.xml", (("emailaddress", ENABLED),)),
    Route("apple.profile_0", "GET", "/apple/mail.mobileconfig", (("emailaddress", ENABLED),), errors="html"),
    Route("apple.profile_1", "GET", "/mobileconfig", (("emailaddress", ENABLED),), errors="html"),
    Route("setup.setup", "GET", "/setup", (("emailaddress", ENABLED),), errors="html"),
    Route("setup.static", "GET", "/setup/static/setup.css", errors="html"),
    Route(
        "outlook.pox.pox_post",
        "POST",
        "/autodiscover/autodiscover.xml",
        body=pox_request(ENABLED),
        headers={"Content-Type": "text/xml"},
        errors="pox",
    ),
    Route("outlook.pox.pox_get", "GET", "/autodiscover/autodiscover.xml", errors="pox"),
    Route(
        "outlook.json.json_query",
        "GET",
        "/autodiscover/autodiscover.json",
        (("Email", ENABLED), ("Protocol", "AutodiscoverV1")),
        errors="json",
    ),
    Route(
        "outlook.json.json_v1",
        "GET",
        f"/autodiscover/autodiscover.json/v1.0/{ENABLED}",
        (("Protocol", "AutodiscoverV1"),),
        errors="json",
    ),
    Route(
        "admin.put_account",
        "PUT",
        f"/admin/v1/accounts/{ENABLED}",
        body=json.dumps({"imap": True, "pop": False}).encode(),
        headers={**ADMIN_AUTH, **JSON},
        errors="json",
    ),
    Route(
        "admin.patch_account",
        "PATCH",
        f"/admin/v1/accounts/{ENABLED}",
        body=json.dumps({"imap": True}).encode(),
        headers={**ADMIN_AUTH, **JSON},
        errors="json",
    ),
    Route("admin.get_account", "GET", f"/admin/v1/accounts/{ENABLED}", headers=ADMIN_AUTH, errors="json"),
    Route("admin.delete_account", "DELETE", f"/admin/v1/accounts/{OTHER}", headers=ADMIN_AUTH, errors="json"),
    Route(
        "dovecot.auth_policy",
        "POST",
        "/dovecot/auth-policy",
        (("command", "allow"),),
        body=json.dumps({"login": ENABLED, "protocol": "imap"}).encode(),
        headers={POLICY_HEADER: POLICY_SECRET, **JSON},
        errors="json",
    ),
    Route("health.healthz", "GET", "/healthz"),
    Route("metrics.scrape", "GET", "/metrics"),
]


# The client formats' routes whose request names the account: a mail program or a person asking.
ADDRESSED = [
    route
    for route in ROUTES
    if route.endpoint.split(".")[0] in {"thunderbird", "apple", "setup", "outlook"}
    and (
        ENABLED in route.path
        or any(value == ENABLED for _, value in route.params)
        or (route.errors == "pox" and route.body)
    )
]


def every_route_config(tmp: Path) -> Path:
    """A config under which every route answers: admin token, Dovecot secret, metrics on, no rate limit."""
    data: dict[str, Any] = copy.deepcopy(BASE_CONFIG)
    data["store"]["url"] = f"sqlite:///{tmp}/accounts.sqlite3"
    data["dovecot"] = {"api_header": f"{POLICY_HEADER}: {POLICY_SECRET}"}
    data["metrics"] = {"enabled": True}
    data["limits"] = {"client_rate": 0, "admin_rate": 0}  # one test client is every client here
    path = tmp / "autoconfig.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def unrouted(app_rules: list[tuple[str, frozenset[str]]]) -> set[tuple[str, str]]:
    """(endpoint, method) pairs of the app that no row of ROUTES requests (HEAD and OPTIONS aside)."""
    served = {(endpoint, method) for endpoint, methods in app_rules for method in methods - {"HEAD", "OPTIONS"}}
    return served - {(route.endpoint, route.method) for route in ROUTES}
