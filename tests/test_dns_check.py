"""``dns check``: a real Knot server publishes zones with planted faults, and
the check reports exactly those faults, by kind and record name, and nothing
for the zones published right."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result

from autoconfig.config import load
from autoconfig.dns import make_resolver
from autoconfig.dns.check import check_domains
from tests.support.dns_helpers import SilentDnsServer, dns_settings
from tests.support.knot import KnotServer

EXIT_FINDINGS = 1
EXIT_COULD_NOT_CHECK = 3


@pytest.fixture
def config_data(config_data: dict[str, Any], knot: KnotServer) -> dict[str, Any]:
    config_data["dns"] = dns_settings(knot.port)
    return config_data


def findings(cli: Callable[..., Result], *domains: str) -> tuple[int, set[tuple[str, str, str]]]:
    result = cli("dns", "check", "--json", *domains)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    data = json.loads(result.output)
    return result.exit_code, {(f["domain"], f["kind"], f["name"]) for f in data["findings"]}


def test_zones_published_right_have_no_findings(cli: Callable[..., Result]) -> None:
    result = cli("dns", "check", "example.net", "shop.example")
    assert result.exit_code == 0, result.output
    assert result.output == "example.net: ok\nshop.example: ok\n"


PLANTED_FAULTS = {
    ("wrong-port", "_imaps._tcp"),
    ("wrong-target", "_submissions._tcp"),
    ("target-is-alias", "_submissions._tcp"),
    ("not-offered", "_imap._tcp"),
    ("wrong-priority", "_submission._tcp"),
    ("marked-unavailable", "_pop3s._tcp"),
    ("missing", "_pop3._tcp"),
    ("extra", "_autodiscover._tcp"),
    ("target-no-address", "_autodiscover._tcp"),
    ("wrong-alias", "autoconfig"),
    ("missing", "autodiscover"),
}


def test_every_planted_fault_is_reported_and_nothing_else(cli: Callable[..., Result]) -> None:
    code, found = findings(cli, "broken.example")
    assert code == EXIT_FINDINGS
    assert found == {("broken.example", kind, name) for kind, name in PLANTED_FAULTS}


@pytest.mark.parametrize(
    ("domain", "kind"),
    [
        ("nullmx.example", "null-mx"),  # RFC 7505: takes no mail at all
        ("elsewhere.example", "mx-not-isp"),
        ("mixed.example", "mx-not-isp"),  # one of two most-preferred MX hosts is not ours
    ],
)
def test_an_mx_that_is_not_the_isps_is_reported(cli: Callable[..., Result], domain: str, kind: str) -> None:
    code, found = findings(cli, domain)
    assert code == EXIT_FINDINGS
    assert (domain, kind, "@") in found
    assert {f for f in found if f[2] == "@"} == {(domain, kind, "@")}


def test_a_backup_mx_elsewhere_is_fine(cli: Callable[..., Result]) -> None:
    _code, found = findings(cli, "backup.example")
    assert not {f for f in found if f[2] == "@"}


def test_a_finding_line_says_what_was_expected_and_what_was_found(cli: Callable[..., Result]) -> None:
    result = cli("dns", "check", "broken.example")
    assert result.exit_code == EXIT_FINDINGS
    assert (
        "broken.example: wrong-port: _imaps._tcp SRV: expected 0 1 993 imap.example.net.; "
        "found 0 1 143 imap.example.net.\n"
    ) in result.output
    assert "broken.example: missing: autodiscover CNAME: expected autoconfig.example.net.; found no such name\n" in (
        result.output
    )


def test_a_name_that_does_not_exist_is_not_a_server_failure(cli: Callable[..., Result]) -> None:
    code, found = findings(cli, "gone.shop.example")
    assert (code, found) == (EXIT_FINDINGS, {("gone.shop.example", "no-such-domain", "@")})


def test_a_refusing_server_means_could_not_check(cli: Callable[..., Result]) -> None:
    # Knot refuses names outside its zones: that says nothing about the domain.
    result = cli("dns", "check", "--json", "elsewhere.test")
    assert result.exit_code == EXIT_COULD_NOT_CHECK
    assert json.loads(result.output)["findings"] == [
        {
            "domain": "elsewhere.test",
            "kind": "could-not-check",
            "name": "@",
            "rdtype": "SOA",
            "expected": "an answer",
            "found": "refused",
        }
    ]


def test_a_silent_resolver_means_could_not_check_within_its_lifetime(
    cli: Callable[..., Result], config_data: dict[str, Any], write_config: Callable[..., Any]
) -> None:
    with SilentDnsServer() as silent:
        config_data["dns"].update(timeout=0.5, lifetime=1.0)
        write_config(config_data)
        started = time.monotonic()
        result = cli("dns", "check", "--nameserver", silent.address, "--port", str(silent.port), "example.net")
        elapsed = time.monotonic() - started
    assert result.exit_code == EXIT_COULD_NOT_CHECK, result.output
    assert result.output == "example.net: could-not-check: @ SOA: expected an answer; found timeout\n"
    assert elapsed < 1.0 + 1.5


def test_check_defaults_to_the_configured_domains(cli: Callable[..., Result], knot: KnotServer) -> None:
    # example.org is served but has no zone here: Knot refuses it.
    code, found = findings(cli)
    assert code == EXIT_COULD_NOT_CHECK
    assert found == {("example.org", "could-not-check", "@")}


@pytest.mark.parametrize("bad", ["not a domain", "192.0.2.1", "a..b"])
def test_bad_domain_arguments_are_usage_errors(cli: Callable[..., Result], bad: str) -> None:
    result = cli("dns", "check", bad)
    assert result.exit_code == 2
    assert "DOMAIN" in result.output


def test_the_check_is_a_library_call_too(config_path: Any, knot: KnotServer) -> None:
    config = load(config_path, env={})
    found = check_domains(config, make_resolver(config.dns), ["shop.example", "nullmx.example"])
    assert [(f.domain, f.kind) for f in found] == [("nullmx.example", "null-mx")]


# -- what must not be published: PACC (draft-ietf-mailmaint-pacc) --------------------------

NO_PACC = "no record (a PACC document is one per domain and would advertise IMAP/POP to every account)"


@pytest.mark.parametrize(
    ("domain", "published"),
    [
        (
            "pacc.example",
            {
                ("ua-auto-config", "A/AAAA", "198.51.100.25, 2001:db8::25"),
                ("_ua-auto-config", "TXT", '"v=UAAC1; a=sha256; d=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="'),
            },
        ),
        ("pacc-alias.example", {("ua-auto-config", "CNAME", "imap.example.net.")}),
    ],
)
def test_a_published_pacc_name_is_reported_by_its_record(
    cli: Callable[..., Result], domain: str, published: set[tuple[str, str, str]]
) -> None:
    """One PACC document per domain cannot follow per-account switches: any PACC name is a finding."""
    result = cli("dns", "check", "--json", domain)
    assert result.exit_code == EXIT_FINDINGS, result.output
    found = json.loads(result.output)["findings"]
    assert {(f["kind"], f["expected"]) for f in found} == {("pacc-published", NO_PACC)}
    assert {(f["name"], f["rdtype"], f["found"]) for f in found} == published


def test_a_pacc_finding_line_names_the_record(cli: Callable[..., Result]) -> None:
    result = cli("dns", "check", "pacc-alias.example")
    assert result.exit_code == EXIT_FINDINGS
    assert result.output == (
        f"pacc-alias.example: pacc-published: ua-auto-config CNAME: expected {NO_PACC}; found imap.example.net.\n"
    )
