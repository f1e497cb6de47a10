"""Per-client-IP limits: a looping client gets 429 with Retry-After, others
are unaffected, and X-Forwarded-For is believed only as far as configured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from autoconfig.config import ConfigError, load
from autoconfig.ratelimit import RateLimiter
from tests.support.config import ADMIN_TOKEN
from tests.support.fixture_types import MakeApp

URL = "/mail/config-v1.1.xml?emailaddress=a@example.net"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_sustained_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("b") == 0.0  # another client has its own bucket


def test_the_table_of_clients_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=FakeClock(), max_clients=10)
    for n in range(100):
        limiter.acquire(f"10.0.0.{n}")
    assert len(limiter._buckets) == 10


def test_rate_zero_disables() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.acquire("a") == 0.0 for _ in range(1000))


@pytest.mark.parametrize(("seconds", "header"), [(0.01, 1), (1.0, 1), (1.2, 2)])
def test_retry_after_rounds_up(seconds: float, header: int) -> None:
    assert RateLimiter.retry_after(seconds) == header


def limited_client(config_data: dict[str, Any], make_app: MakeApp, **limits: Any) -> FlaskClient:
    config_data["limits"] = {"client_rate": 0.001, "client_burst": 3, "admin_rate": 0.001, "admin_burst": 2, **limits}
    return make_app(config_data).test_client()


def from_ip(ip: str, **headers: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": ip}, "headers": headers}


def test_a_looping_client_gets_429_and_others_do_not(config_data: dict[str, Any], make_app: MakeApp) -> None:
    client = limited_client(config_data, make_app)
    assert [client.get(URL, **from_ip("192.0.2.1")).status_code for _ in range(3)] == [404, 404, 404]
    limited = client.get(URL, **from_ip("192.0.2.1"))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get(URL, **from_ip("192.0.2.2")).status_code == 404
    assert client.get("/healthz", **from_ip("192.0.2.1")).status_code == 200  # health checks are never limited


def test_admin_api_has_its_own_limit(config_data: dict[str, Any], make_app: MakeApp) -> None:
    client = limited_client(config_data, make_app)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    statuses = [
        client.get("/admin/v1/accounts/a@example.net", **from_ip("192.0.2.9", **auth)).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert client.get(URL, **from_ip("192.0.2.9")).status_code == 404  # client bucket untouched


def test_x_forwarded_for_is_ignored_without_trusted_proxies(config_data: dict[str, Any], make_app: MakeApp) -> None:
    client = limited_client(config_data, make_app)
    statuses = [
        client.get(URL, **from_ip("192.0.2.1", **{"X-Forwarded-For": f"198.51.100.{n}"})).status_code for n in range(4)
    ]
    assert statuses[-1] == 429, "a client cannot escape its limit by inventing X-Forwarded-For"


def test_one_trusted_hop_limits_by_the_address_the_proxy_saw(config_data: dict[str, Any], make_app: MakeApp) -> None:
    client = limited_client(config_data, make_app, trusted_proxies=1)
    proxy = "127.0.0.1"

    def via_proxy(client_ip: str, spoofed: str = "") -> int:
        chain = f"{spoofed}, {client_ip}" if spoofed else client_ip
        return client.get(URL, **from_ip(proxy, **{"X-Forwarded-For": chain})).status_code

    assert [via_proxy("203.0.113.5", spoofed=f"10.0.0.{n}") for n in range(4)] == [404, 404, 404, 429]
    assert via_proxy("203.0.113.6") == 404


@pytest.mark.parametrize(
    ("key", "value"), [("trusted_proxies", 9), ("client_rate", -1), ("client_burst", 0), ("admin_rate", "fast")]
)
def test_bad_limits_name_the_key(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], key: str, value: Any
) -> None:
    config_data["limits"] = {key: value}
    with pytest.raises(ConfigError, match=f"limits.{key}: "):
        load(write_config(config_data), env={})
