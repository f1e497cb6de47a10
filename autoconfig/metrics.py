"""The service's Prometheus metrics, one registry per app.

Each ``create_app`` gets its own ``CollectorRegistry`` instead of the
process-wide default one: the tests build many apps in one process, and a
metric registered twice in the default registry is an error.  Views reach
the registry through ``metrics()``; exposing it over HTTP is the job of a
separate endpoint, not of this module.
"""

from __future__ import annotations

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter

EXTENSION = "autoconfig_metrics"


class Metrics:
    """Every metric the service keeps, registered in ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.dovecot_policy_decisions = Counter(
            "autoconfig_dovecot_policy_decisions",
            "Answers to Dovecot's auth-policy requests, by command, protocol and decision.",
            ["command", "protocol", "decision"],
            registry=self.registry,
        )


def init_app(app: Flask) -> Metrics:
    created = Metrics()
    app.extensions[EXTENSION] = created
    return created


def metrics() -> Metrics:
    """The ``Metrics`` of the app handling this request."""
    found: Metrics = current_app.extensions[EXTENSION]
    return found
