"""``dns check``: what DNS publishes for a domain, compared with what ``records`` expects.

Each difference is a ``Finding`` (data, not text) with a kind from the table
below, the record's name relative to the domain, and what was expected and
found; the command line prints them or dumps them as JSON.  A query that
failed (server failure, refused, timeout) is a ``could-not-check`` finding,
never a verdict on the record: "we could not ask" must not read as "wrong".

SRV records are compared by priority, port and target; the weight is
ignored, because it only splits load among records of equal priority.
``autoconfig``/``autodiscover`` may be either address records of the
responder or a CNAME chain that ends at the responder (or at its addresses):
both reach the service.

What must *not* be published is checked too.  PACC (draft-ietf-mailmaint-pacc)
gives a domain one configuration document, fetched from
``https://ua-auto-config.<domain>/.well-known/user-agent-configuration.json``
and pinned by a digest in the TXT record ``_ua-auto-config.<domain>``.  One
document per domain cannot follow per-account switches: a PACC document that
lists IMAP or POP3 advertises them to every account, including those that
never turned them on.  A mail server's built-in responder, enabled elsewhere,
would undo the switch without anyone here noticing, so either name existing
is a ``pacc-published`` finding that names the record.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass

import dns.name
import dns.rdatatype
import dns.rdtypes.IN.SRV
import dns.resolver
import dns.rrset

from ..config import Config
from ..values import Provider
from .hosted import MxVerdict, mx_verdict
from .lookup import Lookup, Outcome, lookup
from .records import HOST_LABELS, DomainRecords, expected

MISSING = "missing"  # an expected record is not published
EXTRA = "extra"  # an SRV record we did not expect, at a name we manage
WRONG_PRIORITY = "wrong-priority"
WRONG_PORT = "wrong-port"
WRONG_TARGET = "wrong-target"
MARKED_UNAVAILABLE = "marked-unavailable"  # DNS says "." but the service is offered
NOT_OFFERED = "not-offered"  # DNS names a server for a service the ISP does not offer
TARGET_IS_ALIAS = "target-is-alias"  # SRV target is a CNAME (RFC 2782 forbids it)
TARGET_NO_ADDRESS = "target-no-address"  # SRV target has neither A nor AAAA
WRONG_ALIAS = "wrong-alias"  # autoconfig/autodiscover alias does not lead to the responder
WRONG_ADDRESS = "wrong-address"  # autoconfig/autodiscover addresses are not the responder's
MX_NOT_ISP = "mx-not-isp"
NULL_MX = "null-mx"
NO_SUCH_DOMAIN = "no-such-domain"
PACC_PUBLISHED = "pacc-published"  # ua-auto-config / _ua-auto-config exist: PACC ignores the switches
COULD_NOT_CHECK = "could-not-check"

# PACC's names, relative to the domain (draft-ietf-mailmaint-pacc).
PACC_HOST = "ua-auto-config"
PACC_DIGEST = "_ua-auto-config"
_NO_PACC = "no record (a PACC document is one per domain and would advertise IMAP/POP to every account)"

MAX_CNAME_CHAIN = 8

# How a check step reports: kind, owner name, record type, expected, found.
_Report = Callable[[str, dns.name.Name, str, str, str], None]


@dataclass(frozen=True)
class Finding:
    domain: str
    kind: str
    name: str  # relative to the domain; "@" for the domain itself
    rdtype: str
    expected: str
    found: str

    @property
    def could_not_check(self) -> bool:
        return self.kind == COULD_NOT_CHECK

    def to_text(self) -> str:
        return f"{self.domain}: {self.kind}: {self.name} {self.rdtype}: expected {self.expected}; found {self.found}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _srv_key(rdata: dns.rdtypes.IN.SRV.SRV) -> tuple[int, int, dns.name.Name]:
    return (rdata.priority, rdata.port, rdata.target)


def _srv_text(rdata: dns.rdtypes.IN.SRV.SRV) -> str:
    return rdata.to_text()


class Checker:
    """Checks domains against one resolver; remembers SRV targets already checked."""

    def __init__(self, config: Config, resolver: dns.resolver.Resolver) -> None:
        self.config = config
        self.resolver = resolver
        self.responder = dns.name.from_text(config.dns.responder)
        self._targets: dict[dns.name.Name, tuple[str, str] | None] = {}
        self._responder_addresses: set[str] | None = None

    def check(self, domain: str, provider: Provider | None = None) -> list[Finding]:
        records = expected(self.config, domain, require_addresses=False, provider=provider)
        origin = records.origin
        findings: list[Finding] = []

        def finding(kind: str, name: dns.name.Name, rdtype: str, want: str, found: str) -> None:
            relative = name.relativize(origin).to_text() if name.is_subdomain(origin) else name.to_text()
            findings.append(Finding(domain, kind, relative, rdtype, want, found))

        apex = lookup(self.resolver, origin, "SOA")
        if apex.outcome is Outcome.NXDOMAIN:
            finding(NO_SUCH_DOMAIN, origin, "SOA", "the domain to exist", apex.outcome.value)
            return findings
        if apex.failed:
            finding(COULD_NOT_CHECK, origin, "SOA", "an answer", apex.outcome.value)
            return findings

        for rrset in records.rrsets:
            if rrset.rdtype == dns.rdatatype.SRV:
                self._check_srv(rrset, finding)
        for label in HOST_LABELS:
            self._check_host(records, dns.name.from_text(label, origin), finding)
        if records.provider.mx_hosts:
            self._check_mx(records, finding)
        self._check_no_pacc(origin, finding)
        return findings

    # -- SRV ---------------------------------------------------------------------

    def _check_srv(self, want: dns.rrset.RRset, finding: _Report) -> None:
        result = lookup(self.resolver, want.name, "SRV")
        wanted_text = ", ".join(_srv_text(r) for r in want)
        if result.failed:
            finding(COULD_NOT_CHECK, want.name, "SRV", wanted_text, result.outcome.value)
            return
        if result.rrset is None:
            finding(MISSING, want.name, "SRV", wanted_text, result.outcome.value)
            return
        expected_left = list(want)
        found_left = list(result.rrset)
        for rdata in list(found_left):
            match = next((e for e in expected_left if _same_srv(e, rdata)), None)
            if match is not None:
                expected_left.remove(match)
                found_left.remove(rdata)
        # Same target, different priority or port.
        for want_rdata in list(expected_left):
            got = next((f for f in found_left if f.target == want_rdata.target), None)
            if got is None:
                continue
            expected_left.remove(want_rdata)
            found_left.remove(got)
            if got.priority != want_rdata.priority:
                finding(WRONG_PRIORITY, want.name, "SRV", _srv_text(want_rdata), _srv_text(got))
            if got.port != want_rdata.port:
                finding(WRONG_PORT, want.name, "SRV", _srv_text(want_rdata), _srv_text(got))
        # Different targets, paired in order.
        while expected_left and found_left:
            want_rdata, got = expected_left.pop(0), found_left.pop(0)
            if want_rdata.target == dns.name.root:
                kind = NOT_OFFERED
            elif got.target == dns.name.root:
                kind = MARKED_UNAVAILABLE
            else:
                kind = WRONG_TARGET
            finding(kind, want.name, "SRV", _srv_text(want_rdata), _srv_text(got))
        for want_rdata in expected_left:
            finding(MISSING, want.name, "SRV", _srv_text(want_rdata), "no such record")
        for got in found_left:
            finding(EXTRA, want.name, "SRV", "nothing else", _srv_text(got))
        for got in result.rrset:
            if got.target != dns.name.root:
                problem = self._target_problem(got.target)
                if problem is not None:
                    finding(problem[0], want.name, "SRV", "a target with A/AAAA records, not a CNAME", problem[1])

    def _target_problem(self, target: dns.name.Name) -> tuple[str, str] | None:
        if target not in self._targets:
            self._targets[target] = self._probe_target(target)
        return self._targets[target]

    def _probe_target(self, target: dns.name.Name) -> tuple[str, str] | None:
        alias = lookup(self.resolver, target, "CNAME")
        if alias.failed:
            return (COULD_NOT_CHECK, f"{target}: {alias.outcome.value}")
        if alias.rrset is not None:
            return (TARGET_IS_ALIAS, f"{target} is a CNAME for {alias.rrset[0].to_text()}")
        results = [lookup(self.resolver, target, rdtype) for rdtype in ("A", "AAAA")]
        if any(r.rrset is not None for r in results):
            return None
        failed = next((r for r in results if r.failed), None)
        if failed is not None:
            return (COULD_NOT_CHECK, f"{target}: {failed.outcome.value}")
        return (TARGET_NO_ADDRESS, f"{target}: {results[0].outcome.value}")

    # -- autoconfig / autodiscover -------------------------------------------------

    def _check_host(self, records: DomainRecords, name: dns.name.Name, finding: _Report) -> None:
        want_alias = not records.own and name != self.responder
        want_rdtype = "CNAME" if want_alias else "A/AAAA"
        wanted = self.responder.to_text() if want_alias else self._wanted_addresses_text()
        current = name
        for _ in range(MAX_CNAME_CHAIN):
            alias = lookup(self.resolver, current, "CNAME")
            if alias.failed:
                finding(COULD_NOT_CHECK, name, "CNAME", wanted, f"{current}: {alias.outcome.value}")
                return
            if alias.rrset is None:
                break
            current = dns.name.from_text(alias.rrset[0].to_text())
            if current == self.responder:
                return  # an alias of the responder reaches it, in either kind of zone
        results = [lookup(self.resolver, current, rdtype) for rdtype in ("A", "AAAA")]
        failed = next((r for r in results if r.failed), None)
        if failed is not None:
            finding(COULD_NOT_CHECK, name, want_rdtype, wanted, f"{current}: {failed.outcome.value}")
            return
        found = _addresses(results)
        responder_addresses = self._expected_addresses()
        if found and found == responder_addresses:
            return
        if current != name:
            finding(WRONG_ALIAS, name, want_rdtype, wanted, f"CNAME {current}")
        elif not found:
            finding(MISSING, name, want_rdtype, wanted, results[0].outcome.value)
        else:
            finding(WRONG_ADDRESS, name, want_rdtype, wanted, ", ".join(sorted(found)))

    def _expected_addresses(self) -> set[str]:
        if self.config.dns.addresses:
            return set(self.config.dns.addresses)
        if self._responder_addresses is None:
            results = [lookup(self.resolver, self.responder, rdtype) for rdtype in ("A", "AAAA")]
            self._responder_addresses = _addresses(results)
        return self._responder_addresses

    def _wanted_addresses_text(self) -> str:
        return ", ".join(sorted(self._expected_addresses())) or f"the addresses of {self.responder}"

    # -- PACC: nothing may be published --------------------------------------------

    def _check_no_pacc(self, origin: dns.name.Name, finding: _Report) -> None:
        host = dns.name.from_text(PACC_HOST, origin)
        alias = lookup(self.resolver, host, "CNAME")
        if alias.failed:
            finding(COULD_NOT_CHECK, host, "CNAME", _NO_PACC, alias.outcome.value)
        elif alias.rrset is not None:
            finding(PACC_PUBLISHED, host, "CNAME", _NO_PACC, alias.rrset[0].to_text())
        else:
            results = [lookup(self.resolver, host, rdtype) for rdtype in ("A", "AAAA")]
            failed = next((r for r in results if r.failed), None)
            found = _addresses(results)
            if found:
                finding(PACC_PUBLISHED, host, "A/AAAA", _NO_PACC, ", ".join(sorted(found)))
            elif failed is not None:
                finding(COULD_NOT_CHECK, host, "A/AAAA", _NO_PACC, failed.outcome.value)
        digest = dns.name.from_text(PACC_DIGEST, origin)
        txt = lookup(self.resolver, digest, "TXT")
        if txt.failed:
            finding(COULD_NOT_CHECK, digest, "TXT", _NO_PACC, txt.outcome.value)
        elif txt.rrset is not None:
            finding(PACC_PUBLISHED, digest, "TXT", _NO_PACC, " ".join(r.to_text() for r in txt.rrset))

    # -- MX ------------------------------------------------------------------------

    def _check_mx(self, records: DomainRecords, finding: _Report) -> None:
        mx_hosts = records.provider.mx_hosts
        wanted = ", ".join(f"{host}." for host in mx_hosts)
        result = lookup(self.resolver, records.origin, "MX")
        if result.failed:
            finding(COULD_NOT_CHECK, records.origin, "MX", wanted, result.outcome.value)
            return
        verdict = mx_verdict(result.rrset, mx_hosts)
        found = ", ".join(r.to_text() for r in result.rrset) if result.rrset is not None else result.outcome.value
        if verdict is MxVerdict.NONE:
            finding(MISSING, records.origin, "MX", wanted, found)
        elif verdict is MxVerdict.NULL_MX:
            finding(NULL_MX, records.origin, "MX", wanted, found)
        elif verdict is MxVerdict.ELSEWHERE:
            finding(MX_NOT_ISP, records.origin, "MX", wanted, found)


def _same_srv(a: dns.rdtypes.IN.SRV.SRV, b: dns.rdtypes.IN.SRV.SRV) -> bool:
    if a.target == dns.name.root and b.target == dns.name.root:
        return True  # "not available": priority and port mean nothing
    return _srv_key(a) == _srv_key(b)


def _addresses(results: list[Lookup]) -> set[str]:
    return {str(ipaddress.ip_address(r.to_text())) for result in results if result.rrset for r in result.rrset}


def check_domains(
    config: Config, resolver: dns.resolver.Resolver, domains: list[str], provider: Provider | None = None
) -> list[Finding]:
    """Every domain checked against the records of its brand (``provider`` for domains no brand lists)."""
    checker = Checker(config, resolver)
    return [finding for domain in domains for finding in checker.check(domain, provider)]
