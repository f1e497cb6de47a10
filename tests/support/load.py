"""A small, bounded load generator for the load and fault tests.

Threads with keep-alive connections send a mix of client requests for a
fixed time.  Every answer is classified; connection failures are counted
rather than raised, because the fault tests cause some on purpose.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# A request is (method, path, body, headers); the check sees (request, status, headers, body).
Request = tuple[str, str, bytes | None, dict[str, str]]
Check = Callable[[Request, int, dict[str, str], bytes], None]


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0  # seconds, the longest single request

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def run_load(
    port: int,
    make_request: Callable[[random.Random], Request],
    seconds: float,
    threads: int = 4,
    check: Check | None = None,
    max_requests: int = 200_000,
    keep_alive: bool = True,
) -> LoadResult:
    """Load 127.0.0.1:``port`` for ``seconds`` (and at most ``max_requests``).

    Without ``keep_alive`` every request opens a new connection, so the kernel
    spreads them over all gunicorn workers (a warm-up must reach every one).
    """
    result = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline and result.total < max_requests:
            request = make_request(rng)
            method, path, body, headers = request
            started = time.monotonic()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                with lock:
                    result.connection_errors += 1
                continue
            elapsed = time.monotonic() - started
            with lock:
                result.statuses[response.status] += 1
                result.slowest = max(result.slowest, elapsed)
            if not keep_alive:
                conn.close()
            if check is not None:
                try:
                    check(request, response.status, dict(response.getheaders()), data)
                except AssertionError as error:
                    with lock:
                        result.failures.append(f"{method} {path}: {error}")
        conn.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(seconds + 30)
    return result
