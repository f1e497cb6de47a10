"""DNS: the records an admin publishes, a check of what DNS says, and hosted
customer domains recognised by their MX.

One module per job: ``lookup`` (one query, its outcome classified),
``records`` (what to publish, from the config), ``check`` (published versus
expected), ``hosted`` (is this unknown domain one of our customers?).
Every function takes its resolver as an argument, so tests aim it at a
real authoritative server and production at the ISP's own resolver.
"""

from __future__ import annotations

import dns.resolver

from ..config import DnsSettings


def make_resolver(
    settings: DnsSettings, nameserver: str | None = None, port: int | None = None
) -> dns.resolver.Resolver:
    """A resolver with the configured address and time limits.

    Without a configured nameserver the system's (``/etc/resolv.conf``) is
    used, but the time limits are always ours: dnspython's defaults (2 s per
    try, 5 s in all) would hold a web worker far too long.
    """
    nameserver = nameserver or settings.nameserver
    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        resolver.nameservers = [nameserver]
    resolver.port = port or settings.port
    resolver.timeout = settings.timeout
    resolver.lifetime = settings.lifetime
    resolver.cache = None  # callers keep their own caches, with their own rules
    return resolver
