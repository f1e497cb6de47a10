"""DNS test helpers: a resolver that never answers, and one that counts queries.

The silent server binds UDP and TCP on one loopback port and then does
nothing: datagrams are never read and connections are never accepted, which
is what a dead or firewalled resolver looks like to a client (no ICMP, no
RST, only silence).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import dns.resolver

from tests.support.ports import free_port


class SilentDnsServer:
    """A UDP socket that reads nothing and a TCP listener that accepts nothing."""

    address = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> SilentDnsServer:
        for _attempt in range(5):
            port = free_port()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                udp.bind((self.address, port))
                tcp.bind((self.address, port))
                tcp.listen(1)
            except OSError:
                udp.close()
                tcp.close()
                continue
            self.port = port
            self._sockets = [udp, tcp]
            return self
        raise RuntimeError("no free port for the silent DNS server")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sock in self._sockets:
            sock.close()

    def resolver(self, timeout: float = 0.5, lifetime: float = 1.0) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.address]
        resolver.port = self.port
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        return resolver


class CountingResolver(dns.resolver.Resolver):
    """A resolver that records every query it is asked, optionally slowly."""

    def __init__(self, base: dns.resolver.Resolver, delay: float = 0.0) -> None:
        super().__init__(configure=False)
        self.nameservers = base.nameservers
        self.port = base.port
        self.timeout = base.timeout
        self.lifetime = base.lifetime
        self.delay = delay
        self.queries: list[tuple[str, str]] = []
        self._count_lock = threading.Lock()

    def resolve(self, qname: Any, rdtype: Any = "A", *args: Any, **kwargs: Any) -> dns.resolver.Answer:
        with self._count_lock:
            self.queries.append((str(qname).rstrip("."), str(rdtype)))
        if self.delay:
            time.sleep(self.delay)
        return super().resolve(qname, rdtype, *args, **kwargs)


def dns_settings(port: int, **extra: Any) -> dict[str, Any]:
    """A ``[dns]`` config table for the test ISP, its resolver on 127.0.0.1:``port``."""
    return {
        "addresses": ["192.0.2.80", "2001:db8::80"],
        "mx_hosts": ["mx1.example.net", "mx2.example.net"],
        "nameserver": "127.0.0.1",
        "port": port,
        **extra,
    }
