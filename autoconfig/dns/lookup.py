"""One DNS query, its outcome sorted into what the answer means.

"No such name", "no record of that type", "the server failed", "the server
refused" and "no answer in time" lead to different conclusions: the first
two are facts about the domain, the last three only mean we could not ask.
dnspython reports them as five different exceptions (or none); this module
turns them into one value so callers compare instead of catching.
"""

from __future__ import annotations

import enum
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


def lookup(resolver: dns.resolver.Resolver, name: str | dns.name.Name, rdtype: str) -> Lookup:
    """Ask ``resolver`` for ``name``/``rdtype``; never raises for DNS trouble."""
    try:
        answer = resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return Lookup(Outcome.NXDOMAIN)
    except dns.exception.Timeout:
        return Lookup(Outcome.TIMEOUT)
    except dns.resolver.NoNameservers as exc:
        return Lookup(_no_nameservers_outcome(exc))
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
