"""Hosted customer domains: a domain we do not list is served when its MX
points at the ISP.

Thunderbird, after a domain's own autoconfig fails, follows the domain's
most-preferred MX to ``autoconfig.<MX base domain>``, so a customer domain
whose mail the ISP hosts reaches this service with no DNS change at the
customer.  The rule (the same one Thunderbird applies) is: take the MX
records with the lowest preference; every exchange among them must be one
of a brand's MX hosts (names compared, never resolved), and the domain is
that brand's.  An MX host belongs to one brand (the config reader checks),
so a domain whose best MX mix two brands' hosts is no brand's.  A Null MX (RFC 7505),
no such name and no MX at all all mean "not hosted".

The domain arrives from anyone on the Internet, so before any query it must
be a plain host name that is not an IP literal, not one of the ISP's own
zones and not on the deny list; and every answer is cached (positive for the
record's TTL but at most an hour, negative for ten minutes, failures for
thirty seconds) in a bounded LRU, with concurrent requests for one domain
sharing a single query.  Together that keeps a flood of random names from
turning into a flood of queries at third-party servers, and a slow resolver
from holding more than one worker thread per domain for more than the
resolver's lifetime.

"MX points here" is unauthenticated and anyone can set it.  It is good
enough to decide whether to answer with the ISP's own server names, and for
nothing stronger (never, for example, to issue a TLS certificate).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import dns.name
import dns.rdtypes.ANY.MX
import dns.resolver
import dns.rrset

from ..address import AddressError, normalise_domain
from ..ratelimit import RateLimiter
from .lookup import Lookup, lookup

log = logging.getLogger(__name__)

POSITIVE_TTL_MAX = 3600.0
NEGATIVE_TTL = 600.0
FAILURE_TTL = 30.0
HEALTH_WINDOW = FAILURE_TTL
# Special-use and non-public names (RFC 6761, RFC 6762, RFC 7686, RFC 9476):
# nothing a customer's mail domain can be, and queries for them only leak.
RESERVED_SUFFIXES = ("arpa", "invalid", "local", "localhost", "onion", "alt", "internal", "home.arpa")


class MxVerdict(enum.Enum):
    ISP = "the ISP's MX"
    NULL_MX = "null MX (the domain accepts no mail)"
    ELSEWHERE = "MX points elsewhere"
    NONE = "no MX"


def mx_verdict(rrset: dns.rrset.RRset | None, mx_hosts: Iterable[str]) -> MxVerdict:
    """Whether the most-preferred MX set of a domain is entirely the ISP's."""
    if rrset is None or len(rrset) == 0:
        return MxVerdict.NONE
    records = [rdata for rdata in rrset if isinstance(rdata, dns.rdtypes.ANY.MX.MX)]
    if not records:
        return MxVerdict.NONE
    if any(rdata.exchange == dns.name.root for rdata in records):
        return MxVerdict.NULL_MX
    best = min(rdata.preference for rdata in records)
    ours = {dns.name.from_text(host) for host in mx_hosts}
    exchanges = {rdata.exchange for rdata in records if rdata.preference == best}
    return MxVerdict.ISP if exchanges <= ours else MxVerdict.ELSEWHERE


_ALL_CLIENTS = "*"  # the lookup budget is one bucket for the whole worker


class LookupFailed(Exception):
    """The resolver could not say (timeout, SERVFAIL, REFUSED): neither yes nor no."""


class Rejected(Exception):
    """The domain is not looked up at all; the message says why (for logs and tests)."""


@dataclass
class _Entry:
    brand: str | None  # the id of the brand whose MX hosts the domain uses; None: not hosted
    expires: float
    failed: bool = False  # the lookup failed: neither yes nor no


class HostedDomains:
    """Decides, and remembers, whether unknown domains are hosted by the ISP.

    Thread-safe: one instance per process, shared by the worker's threads.
    """

    def __init__(
        self,
        resolver: dns.resolver.Resolver,
        mx_hosts: Mapping[str, Iterable[str]],
        own_domains: Iterable[str] = (),
        deny: Iterable[str] = (),
        cache_size: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        lookup_rate: float = 0.0,
        lookup_burst: int = 1,
    ) -> None:
        self.resolver = resolver
        self.mx_hosts = {brand: tuple(hosts) for brand, hosts in mx_hosts.items() if hosts}  # brand id -> MX hosts
        self.own_domains = tuple(own_domains)
        self.deny = tuple(deny)
        self.cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._last_outcome: tuple[float, bool] | None = None  # (when, resolver answered)
        # Cached answers cost nothing; new names are what a flood of random
        # domains ("water torture") turns into queries at third-party servers.
        self._budget = RateLimiter(lookup_rate, lookup_burst, clock=clock)

    # -- input hygiene ---------------------------------------------------------

    def check_name(self, domain: str) -> str:
        """The domain in canonical form, or ``Rejected`` if it must never be looked up."""
        try:
            name = normalise_domain(domain)
        except AddressError as exc:
            raise Rejected(str(exc)) from None
        for suffix in (*RESERVED_SUFFIXES, *self.own_domains, *self.deny):
            if name == suffix or name.endswith("." + suffix):
                raise Rejected(f"{name} is within {suffix}, which is never looked up")
        return name

    # -- the decision ----------------------------------------------------------

    def is_hosted(self, domain: str) -> bool:
        """True if ``domain``'s MX is the ISP's.  Raises ``LookupFailed`` if DNS could not say."""
        return self.hosted_by(domain) is not None

    def hosted_by(self, domain: str) -> str | None:
        """The id of the brand whose MX hosts ``domain`` uses, or None.  ``LookupFailed`` if DNS could not say."""
        try:
            name = self.check_name(domain)
        except Rejected as exc:
            log.debug("not looked up: %s", exc)
            return None
        while True:
            with self._lock:
                entry = self._cached(name)
                if entry is not None:
                    return self._answer(entry)
                event = self._inflight.get(name)
                if event is None:
                    if self._budget.acquire(_ALL_CLIENTS):
                        log.warning("MX lookup for %s not made: over the lookup budget ([dns] lookup_rate)", name)
                        raise LookupFailed("too many new domains to look up right now")
                    event = self._inflight[name] = threading.Event()
                    leader = True
                else:
                    leader = False
            if not leader:
                # Another thread is asking; its answer lands in the cache.  Bounded wait,
                # because the leader's query is itself bounded by the resolver lifetime.
                event.wait(self.resolver.lifetime + 1.0)
                with self._lock:
                    entry = self._cached(name)
                if entry is not None:
                    return self._answer(entry)
                raise LookupFailed(f"the MX lookup for {name} did not finish")
            try:
                entry = self._query(name)
                with self._lock:
                    self._store(name, entry)
            finally:
                with self._lock:
                    self._inflight.pop(name, None)
                event.set()
            return self._answer(entry)

    def _answer(self, entry: _Entry) -> str | None:
        if entry.failed:
            raise LookupFailed("the resolver did not answer the MX lookup")
        return entry.brand

    def _query(self, name: str) -> _Entry:
        result = lookup(self.resolver, name, "MX")
        now = self._clock()
        self._note(result, now)
        if result.failed:
            log.warning("MX lookup for %s failed: %s", name, result.outcome.value)
            return _Entry(None, now + FAILURE_TTL, failed=True)
        verdict = MxVerdict.NONE
        for brand, hosts in self.mx_hosts.items():
            verdict = mx_verdict(result.rrset, hosts)
            if verdict is MxVerdict.ISP:
                log.info("MX lookup for %s: %s (%s)", name, verdict.value, brand)
                return _Entry(brand, now + min(float(result.ttl), POSITIVE_TTL_MAX))
            if verdict is not MxVerdict.ELSEWHERE:
                break  # a null MX or no MX is the same against every brand
        log.info("MX lookup for %s: %s", name, verdict.value)
        return _Entry(None, now + NEGATIVE_TTL)

    def _cached(self, name: str) -> _Entry | None:
        entry = self._cache.get(name)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._cache[name]
            return None
        self._cache.move_to_end(name)
        return entry

    def _store(self, name: str, entry: _Entry) -> None:
        self._cache[name] = entry
        self._cache.move_to_end(name)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- health ------------------------------------------------------------------

    def _note(self, result: Lookup, now: float) -> None:
        with self._lock:
            self._last_outcome = (now, not result.failed)

    def resolver_ok(self, probe_name: str) -> bool:
        """Whether the resolver answered lately.  Uses the last real lookup when it
        is recent; otherwise asks once (``probe_name``/MX, bounded by the lifetime)
        and remembers the result for the same short window as a failure."""
        with self._lock:
            last = self._last_outcome
        now = self._clock()
        if last is not None and now - last[0] < HEALTH_WINDOW:
            return last[1]
        result = lookup(self.resolver, probe_name, "MX")
        self._note(result, self._clock())
        return not result.failed

    def __len__(self) -> int:
        return len(self._cache)
