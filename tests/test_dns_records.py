"""``dns records``: the zone lines to publish, derived from the config; they
parse as a zone, load into Knot unchanged, and then ``dns check`` is clean.
Also the ``[dns]`` config section they come from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.rdatatype
import dns.zone
import pytest
from click.testing import CliRunner, Result

from autoconfig import create_service
from autoconfig.cli import main
from autoconfig.config import ConfigError, load
from tests.support.dns_helpers import dns_settings
from tests.support.knot import KnotServer

ROOT = Path(__file__).resolve().parents[1]


def zone_of(text: str, origin: str) -> dict[tuple[str, str], set[str]]:
    """Parse ``dns records`` output for one domain the way a zone loader would."""
    zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)
    return {
        (name.to_text(), dns.rdatatype.to_text(rdataset.rdtype)): {r.to_text() for r in rdataset}
        for name, node in zone.nodes.items()
        for rdataset in node.rdatasets
    }


def demo_records() -> str:
    result = CliRunner().invoke(main, ["--config", str(ROOT / "config" / "autoconfig.toml"), "dns", "records"], env={})
    assert result.exit_code == 0, result.output
    return result.output


# What the demo ISP (config/autoconfig.toml) must publish in its own zone.
DEMO_OWN_ZONE = {
    ("_imaps._tcp.example.net.", "SRV"): {"0 1 993 imap.example.net."},
    ("_submissions._tcp.example.net.", "SRV"): {"0 1 465 smtp.example.net."},
    ("_imap._tcp.example.net.", "SRV"): {"0 0 0 ."},  # no STARTTLS IMAP: decidedly not available
    ("_submission._tcp.example.net.", "SRV"): {"10 1 587 smtp.example.net."},  # after implicit TLS
    ("_pop3s._tcp.example.net.", "SRV"): {"20 1 995 pop.example.net."},  # after IMAP (RFC 6186 3.4)
    ("_pop3._tcp.example.net.", "SRV"): {"0 0 0 ."},
    ("_autodiscover._tcp.example.net.", "SRV"): {"0 1 443 autoconfig.example.net."},
    ("autoconfig.example.net.", "A"): {"192.0.2.80"},
    ("autoconfig.example.net.", "AAAA"): {"2001:db8::80"},
    ("autodiscover.example.net.", "A"): {"192.0.2.80"},
    ("autodiscover.example.net.", "AAAA"): {"2001:db8::80"},
}


def test_the_demo_config_publishes_srv_and_address_records() -> None:
    assert zone_of(demo_records(), "example.net") == DEMO_OWN_ZONE


def test_records_are_relative_to_the_domain_origin() -> None:
    lines = demo_records().splitlines()
    assert lines[1] == "$ORIGIN example.net."
    assert "_imaps._tcp 3600 IN SRV 0 1 993 imap" in lines
    assert "_pop3._tcp 3600 IN SRV 0 0 0 ." in lines


def test_a_customer_domain_gets_aliases_to_the_responder(cli: Callable[..., Result]) -> None:
    result = cli("dns", "records", "example.org")
    assert result.exit_code == 0, result.output
    zone = zone_of(result.output, "example.org")
    assert zone[("autoconfig.example.org.", "CNAME")] == {"autoconfig.example.net."}
    assert zone[("autodiscover.example.org.", "CNAME")] == {"autoconfig.example.net."}
    assert zone[("_autodiscover._tcp.example.org.", "SRV")] == {"0 1 443 autoconfig.example.net."}
    assert zone[("_imaps._tcp.example.org.", "SRV")] == {"0 1 993 imap.example.net."}
    assert not any(rdtype in ("A", "AAAA") for _name, rdtype in zone)


def test_own_domains_need_the_responder_addresses(cli: Callable[..., Result]) -> None:
    result = cli("dns", "records", "example.net")
    assert result.exit_code == 1
    assert "dns.addresses: needed to publish autoconfig.example.net" in result.output


def test_mx_hosts_are_published_and_priorities_follow_the_config(
    config_data: dict[str, Any], write_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    config_data["dns"] = dns_settings(53, priority={"imaps": 5})
    config_data["servers"]["imap"].append({"host": "imap2.example.net", "port": 993, "socket": "SSL"})
    write_config(config_data)
    result = cli("dns", "records", "example.org")
    zone = zone_of(result.output, "example.org")
    # Config order is preference order: the second server comes one step later.
    assert zone[("_imaps._tcp.example.org.", "SRV")] == {"5 1 993 imap.example.net.", "6 1 993 imap2.example.net."}
    assert zone[("example.org.", "MX")] == {"10 mx1.example.net.", "10 mx2.example.net."}


ZONE_HEADER = """\
$ORIGIN {origin}.
$TTL 300
@     SOA  ns1.example.net. hostmaster.example.net. 1 3600 600 86400 300
@     NS   ns1.example.net.
"""
# The rest of the ISP's zone, which `dns records` does not own: the mail hosts.
ISP_HOSTS = """\
ns1   A    192.0.2.1
imap  A    192.0.2.143
pop   A    192.0.2.110
smtp  A    192.0.2.165
"""


def test_records_load_into_knot_unchanged_and_then_check_clean(
    config_data: dict[str, Any], write_config: Callable[..., Path], cli: Callable[..., Result], tmp_path: Path
) -> None:
    config_data["dns"] = dns_settings(53)
    write_config(config_data)
    zones = {}
    for origin, rest in (("example.net", ISP_HOSTS), ("example.org", "")):
        records = cli("dns", "records", origin)
        assert records.exit_code == 0, records.output
        path = tmp_path / f"{origin}.zone"
        path.write_text(ZONE_HEADER.format(origin=origin) + rest + records.output)
        zones[origin] = path

    with KnotServer(zones, tmp_path / "knot") as knot:
        result = cli("dns", "check", "--nameserver", knot.address, "--port", str(knot.port))

    assert result.exit_code == 0, result.output
    assert result.output == "example.net: ok\nexample.org: ok\n"


# -- the [dns] config section ------------------------------------------------------


def test_the_demo_config_keeps_hosted_domains_off() -> None:
    config = load(ROOT / "config" / "autoconfig.toml", env={})
    assert config.providers[0].mx_hosts == ()
    service = create_service(config)
    try:
        assert service.hosted is None
    finally:
        service.store.close()


def test_defaults_come_from_the_rest_of_the_config(config: Any) -> None:
    assert config.dns.responder == "autoconfig.example.net"  # the host of service.public_url
    assert config.dns.own_domains == ("example.net",)  # the served domain the responder lives in
    assert (config.dns.timeout, config.dns.lifetime) == (1.0, 2.0)
    assert config.dns.nameserver is None


BAD_DNS = [
    ({"timeout": 1.5}, "dns.timeout", "between 0.001 and 1"),
    ({"lifetime": 3}, "dns.lifetime", "between 0.001 and 2"),
    ({"timeout": 0}, "dns.timeout", "between 0.001 and 1"),
    ({"timeout": 1.0, "lifetime": 0.5}, "dns.lifetime", "at least timeout"),
    ({"timeout": "1"}, "dns.timeout", "expected a number"),
    ({"nameserver": "dns.example.net"}, "dns.nameserver", "not an IPv4 or IPv6 address"),
    ({"port": 0}, "dns.port", "between 1 and 65535"),
    ({"mx_hosts": ["192.0.2.25"]}, "dns.mx_hosts[0]", "not an IP address"),
    ({"mx_hosts": ["mx1.example.net", "MX1.example.net."]}, "dns.mx_hosts[1]", "listed twice"),
    ({"own_domains": ["example.com"]}, "dns.own_domains[0]", "not a domain of any brand"),
    ({"addresses": ["192.0.2.300"]}, "dns.addresses[0]", "not an IPv4 or IPv6 address"),
    ({"deny": ["not a domain"]}, "dns.deny[0]", "spaces"),
    ({"priority": {"imaps": 70000}}, "dns.priority.imaps", "between 0 and 65535"),
    ({"priority": {"imapz": 1}}, "dns.priority.imapz", "unknown option"),
    ({"mx_host": ["mx1.example.net"]}, "dns.mx_host", "unknown option"),
]


@pytest.mark.parametrize(("values", "key", "message"), BAD_DNS)
def test_bad_dns_settings_name_the_key(
    config_data: dict[str, Any], write_config: Callable[..., Path], values: dict[str, Any], key: str, message: str
) -> None:
    config_data["dns"] = values
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert f"{path}: {key}: " in str(error.value)
    assert message in str(error.value)
