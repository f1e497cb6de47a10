"""One DNS query, its outcome sorted into what the answer means.

"No such name", "no record of that type", "the server failed", "the server
refused" and "no answer in time" lead to different conclusions: the first
two are facts about the domain, the last three only mean we could not ask.
dnspython reports them as five different exceptions (or none); this module
turns them into one value so callers compare instead of catching.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset


class Outcome(enum.Enum):
    ANSWER = "answer"
    NXDOMAIN = "no such name"
    NODATA = "no record of this type"
    SERVFAIL = "server failure"
    REFUSED = "refused"
    TIMEOUT = "timeout"


FAILURES = frozenset({Outcome.SERVFAIL, Outcome.REFUSED, Outcome.TIMEOUT})


@dataclass(frozen=True)
class Lookup:
    outcome: Outcome
    rrset: dns.rrset.RRset | None = None

    @property
    def failed(self) -> bool:
        """True when the answer says nothing about the name (we could not ask)."""
        return self.outcome in FAILURES

    @property
    def ttl(self) -> int:
        return self.rrset.ttl if self.rrset is not None else 0


# dnspython sleeps a back-off (0.1 s, then doubling) after every unanswered
# round before it notices that the lifetime is over, so resolve(lifetime=2)
# against a silent server takes 2.2 s, and more with shorter tries.
BACKOFF = 0.1


def lookup(resolver: dns.resolver.Resolver, name: str | dns.name.Name, rdtype: str) -> Lookup:
    """Ask ``resolver`` for ``name``/``rdtype``; never raises for DNS trouble.

    Takes at most ``resolver.lifetime``: one try (``resolver.timeout``) per
    call to dnspython, under our own deadline that leaves room for its back-off.
    """
    deadline = time.monotonic() + resolver.lifetime
    while True:
        budget = min(resolver.timeout, deadline - time.monotonic() - BACKOFF)
        if budget <= 0:
            return Lookup(Outcome.TIMEOUT)
        try:
            return _resolve_once(resolver, name, rdtype, budget)
        except dns.exception.Timeout:
            continue


def _resolve_once(resolver: dns.resolver.Resolver, name: str | dns.name.Name, rdtype: str, budget: float) -> Lookup:
    try:
        answer = resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False, lifetime=budget)
    except dns.resolver.NXDOMAIN:
        return Lookup(Outcome.NXDOMAIN)
    except dns.resolver.NoNameservers as exc:
        return Lookup(_no_nameservers_outcome(exc))
    except dns.exception.Timeout:
        raise  # the caller tries again while its deadline allows
    except dns.exception.DNSException:
        return Lookup(Outcome.SERVFAIL)
    if answer.rrset is None:
        return Lookup(Outcome.NODATA)
    return Lookup(Outcome.ANSWER, answer.rrset)


def _no_nameservers_outcome(exc: dns.resolver.NoNameservers) -> Outcome:
    # Each error is (server, tcp, port, exception or rcode text, response).
    for error in exc.kwargs.get("errors", []):
        response = error[4] if len(error) > 4 else None
        if isinstance(response, dns.message.Message) and response.rcode() == dns.rcode.REFUSED:
            return Outcome.REFUSED
    return Outcome.SERVFAIL
