"""Hosted customer domains: a domain not in the config is served as the ISP's
when its most-preferred MX is the ISP's, as a real Knot server says, with
input hygiene before any query, one query per domain, a bounded cache, and a
silent resolver costing at most its lifetime."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import Result

from autoconfig.dns.hosted import HostedDomains, LookupFailed
from tests.support.dns_helpers import CountingResolver, SilentDnsServer, dns_settings
from tests.support.fixture_types import MakeServer
from tests.support.gunicorn import GunicornServer
from tests.support.knot import KnotServer

MX_HOSTS = {"example.net": ("mx1.example.net", "mx2.example.net")}  # brand id -> its MX hosts
SERVED = ("example.net", "example.org")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def resolver(knot: KnotServer) -> CountingResolver:
    return CountingResolver(knot.resolver())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hosted(resolver: CountingResolver, clock: FakeClock) -> HostedDomains:
    return HostedDomains(resolver, MX_HOSTS, own_domains=SERVED, deny=("denied.example",), clock=clock)


@pytest.mark.parametrize(
    ("domain", "is_hosted"),
    [
        ("shop.example", True),  # every most-preferred MX is the ISP's
        ("backup.example", True),  # a less-preferred backup MX elsewhere does not matter
        ("Shop.Example", True),  # names compare case-insensitively
        ("nullmx.example", False),  # RFC 7505 null MX: takes no mail
        ("elsewhere.example", False),
        ("mixed.example", False),  # one of the most-preferred MX hosts is someone else's
        ("www.broken.example", False),  # no MX at all
        ("gone.shop.example", False),  # no such name
    ],
)
def test_the_mx_decides(hosted: HostedDomains, domain: str, is_hosted: bool) -> None:
    assert hosted.is_hosted(domain) is is_hosted


def test_a_refusing_resolver_is_neither_yes_nor_no(hosted: HostedDomains) -> None:
    with pytest.raises(LookupFailed):
        hosted.is_hosted("outside-the-zones.test")


def test_new_lookups_have_a_budget_and_cached_answers_do_not_count(
    resolver: CountingResolver, clock: FakeClock
) -> None:
    """A flood of random names must not become a flood of queries (water torture)."""
    hosted = HostedDomains(resolver, MX_HOSTS, own_domains=SERVED, clock=clock, lookup_rate=1.0, lookup_burst=2)
    assert hosted.is_hosted("shop.example") is True
    assert hosted.is_hosted("elsewhere.example") is False
    with pytest.raises(LookupFailed, match="too many new domains"):
        hosted.is_hosted("backup.example")
    assert len(resolver.queries) == 2, "the third name was not sent to the resolver"
    for _ in range(10):  # answers already cached are free
        assert hosted.is_hosted("shop.example") is True
    clock.now += 1.0  # one second buys one more lookup
    assert hosted.is_hosted("backup.example") is True
    assert len(resolver.queries) == 3


def test_a_budget_of_zero_means_no_limit(resolver: CountingResolver, clock: FakeClock) -> None:
    hosted = HostedDomains(resolver, MX_HOSTS, own_domains=SERVED, clock=clock, lookup_rate=0.0, lookup_burst=1)
    for domain in ("shop.example", "elsewhere.example", "backup.example", "mixed.example"):
        hosted.is_hosted(domain)
    assert len(resolver.queries) == 4


HOSTILE_DOMAINS = [
    "192.0.2.1",  # IP literals
    "[192.0.2.1]",
    "[IPv6:2001:db8::1]",
    "a" * 64 + ".example",  # a label over 63 octets
    ".".join(["a" * 63] * 4) + ".example",  # over 253 octets in all
    "single-label",
    "bad_label.example",
    "-leading-hyphen.example",
    "shop.example.",  # trailing dot: not how addresses are written
    "shop example",
    "",
    "localhost",
    "mail.localhost",
    "1.2.0.192.in-addr.arpa",
    "hidden.onion",
    "printer.local",
    "denied.example",  # the deny list, and everything under it
    "shop.denied.example",
    "example.net",  # the ISP's own zones are configured, never looked up
    "random-label.example.net",
]


@pytest.mark.parametrize("domain", HOSTILE_DOMAINS)
def test_hostile_or_own_names_never_cause_a_query(
    hosted: HostedDomains, resolver: CountingResolver, domain: str
) -> None:
    assert hosted.is_hosted(domain) is False
    assert resolver.queries == []


def test_one_query_then_the_cache_answers(hosted: HostedDomains, resolver: CountingResolver) -> None:
    for _ in range(3):
        assert hosted.is_hosted("shop.example") is True
        assert hosted.is_hosted("elsewhere.example") is False
    assert resolver.queries == [("shop.example", "MX"), ("elsewhere.example", "MX")]


@pytest.mark.parametrize(
    ("domain", "kept_for"),
    [
        ("shop.example", 300),  # hosted: the MX record's TTL
        ("backup.example", 3600),  # hosted with a one-day TTL: at most an hour
        ("elsewhere.example", 600),  # not hosted: ten minutes
        ("gone.shop.example", 600),  # no such name: ten minutes
        ("outside-the-zones.test", 30),  # the resolver failed: thirty seconds
    ],
)
def test_answers_are_kept_as_long_as_they_deserve(
    hosted: HostedDomains, resolver: CountingResolver, clock: FakeClock, domain: str, kept_for: int
) -> None:
    def ask() -> None:
        with contextlib.suppress(LookupFailed):
            hosted.is_hosted(domain)

    ask()
    clock.now += kept_for - 1
    ask()
    assert len(resolver.queries) == 1
    clock.now += 2
    ask()
    assert len(resolver.queries) == 2


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(resolver: CountingResolver) -> None:
    hosted = HostedDomains(resolver, MX_HOSTS, cache_size=2)
    hosted.is_hosted("shop.example")
    hosted.is_hosted("nullmx.example")
    hosted.is_hosted("shop.example")  # now the most recently used
    hosted.is_hosted("elsewhere.example")  # evicts nullmx.example
    assert len(hosted) == 2
    hosted.is_hosted("shop.example")
    hosted.is_hosted("nullmx.example")
    asked = [name for name, _ in resolver.queries]
    assert asked == ["shop.example", "nullmx.example", "elsewhere.example", "nullmx.example"]


def _ask_concurrently(hosted: HostedDomains, domain: str, callers: int) -> list[object]:
    results: list[object] = []
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def call() -> None:
        start.wait()
        try:
            outcome: object = hosted.is_hosted(domain)
        except LookupFailed as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_for_one_domain_share_one_query(knot: KnotServer) -> None:
    slow = CountingResolver(knot.resolver(), delay=0.3)
    hosted = HostedDomains(slow, MX_HOSTS)
    assert _ask_concurrently(hosted, "shop.example", 8) == [True] * 8
    assert slow.queries == [("shop.example", "MX")]


def test_a_silent_resolver_costs_one_lifetime_then_a_clean_failure() -> None:
    with SilentDnsServer() as silent:
        resolver = CountingResolver(silent.resolver(timeout=0.5, lifetime=1.0))
        hosted = HostedDomains(resolver, MX_HOSTS)
        started = time.monotonic()
        results = _ask_concurrently(hosted, "shop.example", 4)
        elapsed = time.monotonic() - started
        tries = list(resolver.queries)
        assert all(isinstance(r, LookupFailed) for r in results)
        # One lookup for all four callers: tries of 0.5 s while its 1 s lifetime lasts.
        assert set(tries) == {("shop.example", "MX")}
        assert len(tries) <= 2
        assert elapsed < 1.0 + 1.5
        with pytest.raises(LookupFailed):
            hosted.is_hosted("shop.example")  # remembered: no second wait
        assert resolver.queries == tries


# -- through the real gunicorn server -------------------------------------------------


@pytest.fixture
def config_data(config_data: dict[str, Any], knot: KnotServer) -> dict[str, Any]:
    config_data["dns"] = dns_settings(knot.port)
    return config_data


def get(server: GunicornServer, path: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def autoconfig(server: GunicornServer, address: str) -> tuple[int, str, dict[str, str]]:
    return get(server, f"/mail/config-v1.1.xml?emailaddress={address}")


NOT_SERVED = "this service has no mail settings for that domain\n"


def test_a_hosted_domain_is_served_with_the_same_per_account_policy(
    cli: Callable[..., Result], server: GunicornServer
) -> None:
    assert cli("accounts", "set", "alice@shop.example", "--imap", "on").exit_code == 0

    status, body, _ = autoconfig(server, "alice@shop.example")
    assert status == 200
    assert "<hostname>imap.example.net</hostname>" in body
    assert "<domain>shop.example</domain>" in body
    assert 'type="pop3"' not in body

    # Nothing enabled: the same answer as for the ISP's own domain, never a document.
    declined = autoconfig(server, "bob@example.net")
    assert declined[0] == 404
    assert autoconfig(server, "bob@shop.example")[:2] == declined[:2]


def test_a_domain_whose_mx_is_not_ours_is_refused(server: GunicornServer) -> None:
    answers = {
        domain: autoconfig(server, f"alice@{domain}")[:2]
        for domain in ("nullmx.example", "elsewhere.example", "mixed.example", "gone.shop.example")
    }
    assert answers == dict.fromkeys(answers, (404, NOT_SERVED))


def test_health_reports_the_resolver(server: GunicornServer) -> None:
    status, body, _ = get(server, "/healthz")
    assert (status, body) == (200, '{"checks":{"resolver":"ok","store":"ok"},"status":"ok"}\n')


@pytest.fixture
def silent_server(config_data: dict[str, Any], make_server: MakeServer) -> Iterator[GunicornServer]:
    with SilentDnsServer() as silent:
        config_data["dns"].update(port=silent.port, timeout=0.5, lifetime=1.0)
        yield make_server(config_data, name="silent.toml", log="silent-gunicorn.log", workers=1)


def test_a_silent_resolver_costs_at_most_its_lifetime_and_degrades_health(
    cli: Callable[..., Result], silent_server: GunicornServer
) -> None:
    started = time.monotonic()
    status, body, headers = autoconfig(silent_server, "alice@shop.example")
    elapsed = time.monotonic() - started
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert "try again" in body
    assert elapsed < 1.0 + 1.5

    assert autoconfig(silent_server, "alice@shop.example")[0] == 503  # the failure is remembered
    assert cli("accounts", "set", "alice@example.net", "--imap", "on").exit_code == 0
    assert autoconfig(silent_server, "alice@example.net")[0] == 200  # configured domains never ask DNS

    status, body, _ = get(silent_server, "/healthz")
    assert (status, body) == (200, '{"checks":{"resolver":"failing","store":"ok"},"status":"degraded"}\n')
