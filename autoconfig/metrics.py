"""The service's Prometheus metrics, one registry per app.

Each ``create_app`` gets its own ``CollectorRegistry`` instead of the
process-wide default one: the tests build many apps in one process, and a
metric registered twice in the default registry is an error.

Under gunicorn every worker counts on its own.  When
``PROMETHEUS_MULTIPROC_DIR`` is set (config/gunicorn.conf.py sets it before
any worker imports prometheus_client), values live in files shared by the
workers and ``exposition`` adds them up, so a scrape sees the whole node and
not whichever worker happened to answer.

Labels come from small fixed sets (format, outcome, switch): never an
address, a domain or anything else a client chose.

Request counts and latencies, and Dovecot's login decisions, are tallied
in memory and written to prometheus_client by a background thread once a
second (and before this
process answers a scrape, and at exit).  Writing them on every request took
three locked writes to the shared files, about a twentieth of a request's
time under load (bench/coldcache.py).  So a scrape may miss up to a second
of the other workers' traffic, and a worker killed with SIGKILL loses its
last second of counts.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import threading
import weakref
from bisect import bisect_left
from typing import Any

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from .forking import PeriodicThread, forget_after_fork

log = logging.getLogger(__name__)

EXTENSION = "autoconfig_metrics"
OUTCOMES = ("served", "declined", "foreign_domain", "bad_request", "rate_limited", "unavailable", "error")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FLUSH_SECONDS = 1.0


_Latency = dict[str, tuple[list[float], list[int]]]  # family -> ([sum], count per bucket)


class _Tally:
    """Counted since the last flush: requests by (family, outcome); latency sum and buckets by family;
    Dovecot decisions by (command, protocol, decision); requests the express lane answered, by family."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.latency: _Latency = {}
        self.decisions: dict[tuple[str, str, str], int] = {}
        self.express: dict[str, int] = {}

    def take(self) -> tuple[dict[tuple[str, str], int], _Latency, dict[tuple[str, str, str], int], dict[str, int]]:
        with self.lock:
            taken = self.requests, self.latency, self.decisions, self.express
            self.requests, self.latency, self.decisions, self.express = {}, {}, {}, {}
        return taken


class Metrics:
    """Every metric the service keeps, registered in ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "autoconfig_requests",
            "HTTP requests by endpoint family (thunderbird, outlook, apple, setup, admin, ...) and outcome.",
            ["format", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "autoconfig_request_duration_seconds",
            "Time spent in the app per request, by endpoint family.",
            ["format"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "autoconfig_store_errors",
            "Requests that could not be answered because the account store was unavailable.",
            registry=self.registry,
        )
        self.admin_changes = Counter(
            "autoconfig_admin_changes",
            "Switch changes made through the admin API, by switch and new value.",
            ["switch", "value"],
            registry=self.registry,
        )
        self.express_requests = Counter(
            "autoconfig_express_requests",
            "Of autoconfig_requests, those the worker's express lane answered without Flask, by endpoint family.",
            ["format"],
            registry=self.registry,
        )
        self.dovecot_policy_decisions = Counter(
            "autoconfig_dovecot_policy_decisions",
            "Answers to Dovecot's auth-policy requests, by command, protocol and decision.",
            ["command", "protocol", "decision"],
            registry=self.registry,
        )

        self._tally = _Tally()
        _LIVE.add(self)
        forget_after_fork(self)

    def count_request(self, family: str, outcome: str, seconds: float | None, express: bool = False) -> None:
        """One answered request of ``family`` with ``outcome``, and its time in the app; written out by ``flush``.

        ``express``: the worker's express lane answered it (autoconfig/web/express.py).
        """
        tally = self._tally
        with tally.lock:
            tally.requests[family, outcome] = tally.requests.get((family, outcome), 0) + 1
            if express:
                tally.express[family] = tally.express.get(family, 0) + 1
            if seconds is not None:
                latency = tally.latency.get(family)
                if latency is None:
                    latency = tally.latency[family] = ([0.0], [0] * (len(LATENCY_BUCKETS) + 1))
                latency[0][0] += seconds
                latency[1][bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        if _FLUSHER.thread is None:
            _FLUSHER.start()

    def count_decision(self, command: str, protocol: str, decision: str) -> None:
        """One answer to Dovecot's auth-policy client (labels from bounded sets); written out by ``flush``.

        Every IMAP and POP3 login waits for one, so it is tallied like the
        request counts instead of written to the shared files each time.
        """
        tally = self._tally
        key = (command, protocol, decision)
        with tally.lock:
            tally.decisions[key] = tally.decisions.get(key, 0) + 1
        if _FLUSHER.thread is None:
            _FLUSHER.start()

    def flush(self) -> None:
        """Write the tallied requests and decisions to prometheus_client."""
        requests, latency, decisions, express = self._tally.take()
        for (family, outcome), count in requests.items():
            self.requests.labels(format=family, outcome=outcome).inc(count)
        for family, count in express.items():
            self.express_requests.labels(format=family).inc(count)
        for (command, protocol, decision), count in decisions.items():
            self.dovecot_policy_decisions.labels(command=command, protocol=protocol, decision=decision).inc(count)
        for family, (total, buckets) in latency.items():
            child = self.latency.labels(format=family)
            # prometheus_client adds observations one at a time only; its
            # histogram keeps a sum and a count per bucket (bounds as given,
            # then +Inf), which are added to here.  tests/test_metrics.py holds
            # this to observe() one by one.
            child._sum.inc(total[0])
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent writes what it had tallied."""
        self._tally = _Tally()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, across workers when they share a directory."""
        self.flush()  # this process's own requests, up to this one
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            _WrittenFiles(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)


class _WrittenFiles(MultiProcessCollector):
    """The workers' files, leaving out one another worker is creating this instant.

    prometheus_client creates a worker's file empty and only then sizes it;
    a scrape that read it in between failed with ``struct.error`` (a 500 on
    /metrics, seen once in CI).  A file without its 8-byte header holds no
    value yet, so leaving it out loses nothing.
    """

    def collect(self) -> Any:
        files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if _size(path) >= _HEADER]
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


_HEADER = 8  # prometheus_client's mmap file: the bytes used, then padding, before the first value


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # gone meanwhile (a worker's files are removed when it exits)
        return 0


class _ProcessId:
    """This process's id, remembered, and learnt again in a forked child (``forking``)."""

    def __init__(self) -> None:
        self.value = os.getpid()

    def __call__(self) -> int:
        return self.value

    def forget_after_fork(self) -> None:
        self.value = os.getpid()


_process_id: _ProcessId | None = None


def _install_pid_cache() -> None:
    """In multiprocess mode prometheus_client asks ``os.getpid()``, a system call,
    on every value it writes: three per request (strace).  The process id only
    changes at fork, so it is remembered and refreshed there instead.  Installed
    once per process, before the first metric exists."""
    global _process_id
    if _process_id is not None or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    _process_id = _ProcessId()
    forget_after_fork(_process_id)
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)  # type: ignore[no-untyped-call]


_LIVE: weakref.WeakSet[Metrics] = weakref.WeakSet()


def flush_all() -> None:
    for registry in list(_LIVE):
        registry.flush()


def _flush_logged() -> None:
    try:
        flush_all()
    except Exception:  # the thread must outlive one failed write, or no count is written again
        log.exception("could not write the request metrics; the last second's counts are lost")


# The process's one writer thread, started by its first counted request (in gunicorn: in each
# worker); stopped across a fork, and started again in a child by the child's first request.
_FLUSHER = PeriodicThread("metrics-flush", lambda: FLUSH_SECONDS, _flush_logged)
_exit_flush_installed = False


def _install_exit_flush() -> None:
    """A graceful exit writes the last second; once per process."""
    global _exit_flush_installed
    if not _exit_flush_installed:
        atexit.register(flush_all)
        _exit_flush_installed = True


def init_app(app: Flask) -> Metrics:
    _install_pid_cache()
    _install_exit_flush()
    created = Metrics()
    app.extensions[EXTENSION] = created
    return created


def metrics() -> Metrics:
    """The ``Metrics`` of the app handling this request."""
    found: Metrics = current_app.extensions[EXTENSION]
    return found
