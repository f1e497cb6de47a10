"""State never crosses a fork: the child forgets what belongs to its parent.

gunicorn imports the app and may open a store before it forks its workers.
A SQLite connection or a PostgreSQL pool (its sockets, its threads) used by
two processes at once corrupts both, so every object that holds connections
registers here and is told in each forked child to let go of them before
anything else runs there.  Network connections are dropped without being
touched: closing one would end the parent's session on the shared socket,
so the pools keep the child's copies referenced, never collected.  SQLite
connections are closed, which is what SQLite's locks need
(autoconfig/store/sqlite.py says why).  The request metrics forget their
in-memory tally (the parent writes it) and the process id their files are
named after.  Learning of the fork this way costs nothing per request,
where comparing ``os.getpid()`` on each use was a system call every time.

The background writers (the log's and the metrics') are ``PeriodicThread``s:
before a fork each is stopped and does its work once more in the forking
thread, so no thread of ours runs when the process forks and nothing waits
to be written.  A thread caught inside a write at the fork would leave the
locks it holds (the stream's, the handler's) held forever in the child,
which is why Python 3.12 and later warn (``DeprecationWarning``) about a
fork in a multi-threaded process.  Python 3.13 looks after the fork hooks
have run in the parent, so the writers are not started again there either:
in both processes a writer starts again with the next line or request.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Protocol


class ForgetsAtFork(Protocol):
    def forget_after_fork(self) -> None:
        """In a forked child: let go of what the parent holds (connections, tallies), never using it."""


_OWNERS: weakref.WeakSet[ForgetsAtFork] = weakref.WeakSet()


def forget_after_fork(owner: ForgetsAtFork) -> None:
    """Call ``owner.forget_after_fork()`` in every process forked from this one, while ``owner`` lives."""
    _OWNERS.add(owner)


# How long a fork waits for a writer to finish the write it is in (it then forks anyway).
STOP_TIMEOUT = 2.0


class PeriodicThread:
    """A daemon thread calling ``work()`` every ``interval()`` seconds, started by ``start()``.

    Not running across a fork: before one it is stopped and ``work()`` runs
    once in the forking thread; afterwards it is not running, in the parent
    or the child, until ``start()`` is called again.  ``thread`` is None while
    it is not running, so a caller on a hot path checks it before ``start()``.
    """

    def __init__(self, name: str, interval: Callable[[], float], work: Callable[[], None]) -> None:
        self.name = name
        self.interval = interval
        self.work = work
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        _PERIODIC.add(self)

    def start(self) -> None:
        with self._lock:
            if self.thread is None:
                self._stop = threading.Event()
                self.thread = threading.Thread(target=self._run, args=(self._stop,), name=self.name, daemon=True)
                self.thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval()):
            self.work()

    def _before_fork(self) -> None:
        with self._lock:
            thread, self.thread = self.thread, None
            self._stop.set()
        if thread is not None:
            thread.join(STOP_TIMEOUT)
            self.work()  # what it would have written next, written by the parent alone

    def _after_fork_in_child(self) -> None:
        self.thread, self._lock = None, threading.Lock()


_PERIODIC: weakref.WeakSet[PeriodicThread] = weakref.WeakSet()


def _stop_periodic() -> None:
    for periodic in list(_PERIODIC):
        periodic._before_fork()


def _forget_all() -> None:
    for periodic in list(_PERIODIC):
        periodic._after_fork_in_child()
    for owner in list(_OWNERS):
        owner.forget_after_fork()


os.register_at_fork(before=_stop_periodic, after_in_child=_forget_all)
