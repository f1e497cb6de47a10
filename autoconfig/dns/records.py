"""The DNS records each served domain should publish, derived from the config.

The SRV records follow the servers of the domain's brand, so DNS and the XML documents
can never disagree about host names and ports: implicit TLS (``_imaps``,
``_submissions``, ``_pop3s``) and STARTTLS (``_imap``, ``_submission``,
``_pop3``) each get the configured servers, in config order, at the
configured priority; a label with no server gets the RFC 2782 "decidedly not
available" record ``0 0 0 .`` rather than nothing, which would only mean "no
information" and send clients guessing.  ``autoconfig``/``autodiscover`` are
address records in the ISP's own zones and aliases to the responder in
customer zones, and ``_autodiscover._tcp`` lets Outlook reach the responder
without a certificate per customer domain.

The records are dnspython rrsets, so ``check`` compares against the very
same data that ``dns records`` prints.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.name
import dns.rrset

from ..config import Config
from ..spec import SRV_SERVICES
from ..values import Provider

# Output order: what clients should prefer first (RFC 8314: implicit TLS).
SRV_LABELS = ("imaps", "submissions", "imap", "submission", "pop3s", "pop3")
NOT_AVAILABLE = "0 0 0 ."
SRV_WEIGHT = 1
MX_PREFERENCE = 10
HOST_LABELS = ("autoconfig", "autodiscover")


class RecordsError(Exception):
    """The config lacks something a record needs; the message names the key."""


@dataclass(frozen=True)
class DomainRecords:
    domain: str
    own: bool  # the ISP's own zone (address records) or a customer's (aliases)
    rrsets: tuple[dns.rrset.RRset, ...]  # absolute owner names
    provider: Provider  # the brand whose servers the records name

    @property
    def origin(self) -> dns.name.Name:
        return dns.name.from_text(self.domain)


def srv_name(label: str, domain: str) -> dns.name.Name:
    return dns.name.from_text(f"_{label}._tcp.{domain}")


def _absolute(host: str) -> str:
    return host if host.endswith(".") else host + "."


def srv_rdatas(config: Config, provider: Provider) -> dict[str, list[str]]:
    """SRV rdata texts per service label (``imaps``...) from a brand's servers."""
    texts: dict[str, list[str]] = {label: [] for label in SRV_LABELS}
    for server in provider.servers.every:
        label = SRV_SERVICES[(server.protocol, server.socket)]
        priority = config.dns.priorities[label] + len(texts[label])  # config order is preference order
        texts[label].append(f"{priority} {SRV_WEIGHT} {server.port} {_absolute(server.host)}")
    return {label: found or [NOT_AVAILABLE] for label, found in texts.items()}


def is_own(config: Config, domain: str) -> bool:
    return domain in config.dns.own_domains


def brand_of(config: Config, domain: str, provider: Provider | None = None) -> Provider:
    """The brand listing ``domain``, else ``provider``, else the only brand.

    A hosted customer domain is listed by no brand; with several brands, which
    servers it uses is the admin's to say (``--brand``): DNS is not asked here.
    A listed domain always gets its own brand's records, whatever ``--brand``
    says, so a listed domain can never be printed another brand's servers.
    """
    found = config.provider_for(domain) or provider
    if found is not None:
        return found
    if len(config.providers) == 1:
        return config.providers[0]
    ids = ", ".join(p.id for p in config.providers)
    raise RecordsError(f"{domain} is listed by no brand; name the brand whose MX it uses with --brand ({ids})")


def expected(
    config: Config, domain: str, require_addresses: bool = True, provider: Provider | None = None
) -> DomainRecords:
    """The records ``domain`` should publish (it need not be a configured domain:
    a hosted customer domain gets the customer form), with the servers of its brand (``brand_of``).

    Address records need ``dns.addresses``; without them ``RecordsError``, or,
    with ``require_addresses=False`` (for ``check``, which can compare with the
    responder's published addresses instead), they are left out."""
    settings = config.dns
    provider = brand_of(config, domain, provider)
    ttl = settings.ttl
    own = is_own(config, domain)
    rrsets = [
        dns.rrset.from_text_list(srv_name(label, domain), ttl, "IN", "SRV", texts)
        for label, texts in srv_rdatas(config, provider).items()
    ]
    rrsets.append(
        dns.rrset.from_text_list(
            srv_name("autodiscover", domain),
            ttl,
            "IN",
            "SRV",
            [f"0 {SRV_WEIGHT} {settings.https_port} {_absolute(settings.autodiscover_target)}"],
        )
    )
    responder = dns.name.from_text(settings.responder)
    for label in HOST_LABELS:
        name = dns.name.from_text(f"{label}.{domain}")
        if own or name == responder:
            rrsets.extend(_address_rrsets(config, name, require_addresses))
        else:
            rrsets.append(dns.rrset.from_text_list(name, ttl, "IN", "CNAME", [_absolute(settings.responder)]))
    if provider.mx_hosts:
        mx = [f"{MX_PREFERENCE} {_absolute(host)}" for host in provider.mx_hosts]
        rrsets.append(dns.rrset.from_text_list(dns.name.from_text(domain), ttl, "IN", "MX", mx))
    return DomainRecords(domain, own, tuple(rrsets), provider)


def _address_rrsets(config: Config, name: dns.name.Name, required: bool) -> list[dns.rrset.RRset]:
    addresses = [ipaddress.ip_address(a) for a in config.dns.addresses]
    if not addresses and required:
        raise RecordsError(
            f"{config.source}: dns.addresses: needed to publish {name.to_text(omit_final_dot=True)} "
            "as address records (the responder's IPv4/IPv6 addresses)"
        )
    rrsets = []
    for rdtype, version in (("A", 4), ("AAAA", 6)):
        texts = [str(a) for a in addresses if a.version == version]
        if texts:
            rrsets.append(dns.rrset.from_text_list(name, config.dns.ttl, "IN", rdtype, texts))
    return rrsets


def to_text(records: DomainRecords) -> str:
    """Zone-file lines relative to the domain's origin, ready to paste into its zone."""
    kind = "the ISP's own domain: address records" if records.own else "a customer domain: aliases to the responder"
    lines = [f"; {records.domain} ({kind})", f"$ORIGIN {records.origin.to_text()}"]
    lines.extend(rrset.to_text(origin=records.origin, relativize=True) for rrset in records.rrsets)
    return "\n".join(lines) + "\n"
