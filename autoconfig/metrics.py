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
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

EXTENSION = "autoconfig_metrics"
OUTCOMES = ("served", "declined", "foreign_domain", "bad_request", "rate_limited", "unavailable", "error")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        self.dovecot_policy_decisions = Counter(
            "autoconfig_dovecot_policy_decisions",
            "Answers to Dovecot's auth-policy requests, by command, protocol and decision.",
            ["command", "protocol", "decision"],
            registry=self.registry,
        )

        # labels() validates and locks on every call; the label sets are small
        # and fixed, so each child is looked up once (a measurable share of a
        # request's time otherwise).
        self._request_children: dict[tuple[str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}

    def count_request(self, family: str, outcome: str, seconds: float | None) -> None:
        """One answered request of ``family`` with ``outcome``, and its time in the app."""
        counter = self._request_children.get((family, outcome))
        if counter is None:
            counter = self._request_children[family, outcome] = self.requests.labels(format=family, outcome=outcome)
        counter.inc()
        if seconds is not None:
            histogram = self._latency_children.get(family)
            if histogram is None:
                histogram = self._latency_children[family] = self.latency.labels(format=family)
            histogram.observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, across workers when they share a directory."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)


_pid = 0
_pid_cache_installed = False


def _cached_pid() -> int:
    return _pid


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


def _install_pid_cache() -> None:
    """In multiprocess mode prometheus_client asks ``os.getpid()``, a system call,
    on every value it writes: three per request (strace).  The process id only
    changes at fork, so it is remembered and refreshed there instead.  Installed
    once per process, before the first metric exists."""
    global _pid_cache_installed
    if _pid_cache_installed or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    _remember_pid()
    os.register_at_fork(after_in_child=_remember_pid)
    values.ValueClass = values.MultiProcessValue(process_identifier=_cached_pid)  # type: ignore[no-untyped-call]
    _pid_cache_installed = True


def init_app(app: Flask) -> Metrics:
    _install_pid_cache()
    created = Metrics()
    app.extensions[EXTENSION] = created
    return created


def metrics() -> Metrics:
    """The ``Metrics`` of the app handling this request."""
    found: Metrics = current_app.extensions[EXTENSION]
    return found
