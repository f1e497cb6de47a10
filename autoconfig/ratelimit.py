"""Per-client-IP token buckets, so one looping client cannot starve the rest.

Buckets live in each worker process: with W workers a client gets at most
W times the configured rate in the worst case (the load balancer spreads its
connections).  That is the price of needing no shared state; a global limit
belongs in the TLS front (config/nginx/autoconfig.conf has one).  The table of
buckets is bounded: when full, the least recently seen client is forgotten,
which can only ever be in that client's favour.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

MAX_CLIENTS = 65536


class RateLimiter:
    """``rate`` requests per second sustained, ``burst`` at once; rate 0 disables."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_clients = max_clients
        # A plain dict keeps insertion order, and popping and re-adding a client moves it to the end.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, client: str) -> float:
        """Take one token for ``client``: 0.0 if allowed, else the seconds until the next one."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self._max_clients:
                del self._buckets[next(iter(self._buckets))]  # the least recently seen
        return wait

    @staticmethod
    def retry_after(wait: float) -> int:
        """``Retry-After`` wants whole seconds; round up so a retry is never early."""
        return max(1, math.ceil(wait))
