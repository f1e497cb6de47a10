"""A small per-process pool for the blocking drivers (MySQL, LDAP) that have none.

psycopg brings its own pool (``pgpool``); mysqlclient and python-ldap do
not, and what this service needs from one is little: at most ``size``
connections per process, a connection used by one thread at a time, and
the store's failure contract.

- A connection that fails with one of the driver's connection errors
  (server gone, restarted, timed out) is thrown away, never reused.  If it
  came from the idle list and failed at once, it may simply have gone stale
  while the server restarted, so the work is tried once more on a fresh
  connection; one that failed by timing out is not retried, so a request
  never waits much longer than ``timeout``.
- A connection that cannot be made, a failure on a fresh connection, or no
  free connection within ``timeout`` becomes ``StoreUnavailable`` (503): no
  guess, no hang.  Nothing runs in the background; the next request after
  the server is back connects again, so recovery needs no restart.
- gunicorn forks after the app may have connected: a child forgets the
  parent's connections and keeps them referenced (never closed, never
  collected), because closing one would send a goodbye down a socket the
  parent still uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from ..forking import forget_after_fork
from .base import StoreUnavailable

log = logging.getLogger(__name__)
C = TypeVar("C")
T = TypeVar("T")

# Connections inherited across forks, kept alive so that their destructors never run in a child.
_INHERITED: list[object] = []


class ConnectionPool(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        *,
        size: int,
        timeout: float,
        lost: Callable[[BaseException], bool],
        what: str,
    ) -> None:
        self._connect = connect
        self._close = close
        self.size = size
        self.timeout = timeout
        self.lost = lost
        self.what = what
        self._idle: list[C] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        forget_after_fork(self)

    def forget_after_fork(self) -> None:
        _INHERITED.extend(self._idle)
        self._idle = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.size)

    def _take(self) -> tuple[C, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            return self._connect(), False
        except Exception as exc:
            if not self.lost(exc):
                raise
            raise StoreUnavailable(f"{self.what}: cannot connect: {describe(exc)}") from exc

    def _discard(self, conn: C) -> None:
        try:
            self._close(conn)
        except Exception:  # the connection is already broken; closing it is a courtesy
            log.debug("%s: closing a broken connection failed", self.what, exc_info=True)

    def run(self, work: Callable[[C], T]) -> T:
        """``work(conn)`` on a pooled connection; a connection error costs that connection, and one retry."""
        if not self._slots.acquire(timeout=self.timeout):
            raise StoreUnavailable(f"{self.what}: no free connection within {self.timeout:g} s")
        try:
            started = time.monotonic()
            for attempt in (1, 2):
                conn, reused = self._take()
                try:
                    result = work(conn)
                except BaseException as exc:
                    if not (isinstance(exc, Exception) and self.lost(exc)):
                        # The driver answered (a rejected query, a bad filter): the connection is fine.
                        self._give_back(conn)
                        raise
                    self._discard(conn)
                    # A stale socket fails at once; a server too slow to answer has used the budget up.
                    if reused and attempt == 1 and time.monotonic() - started < self.timeout / 2:
                        log.warning("%s: connection lost (%s); retrying once on a new one", self.what, describe(exc))
                        continue
                    raise StoreUnavailable(f"{self.what}: {describe(exc)}") from exc
                self._give_back(conn)
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    def _give_back(self, conn: C) -> None:
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)


def describe(exc: BaseException) -> str:
    """A driver error as one line, without the URL or credentials a driver may repeat."""
    parts = []
    for part in exc.args:
        if isinstance(part, dict):  # python-ldap: {"desc": ..., "info": ...}
            parts += [str(part[key]) for key in ("desc", "info") if part.get(key)]
        else:
            parts.append(str(part))
    text = " ".join(parts) if parts else type(exc).__name__
    return text.replace("\n", " ")[:300]
