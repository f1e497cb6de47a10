"""The WSGI stack around the Flask app, built in one place and in one order.

From the outside in: ``Edge`` (default headers and request metrics, for
every answer), then the Autodiscover path folding (``/AutoDiscover/...``
routes as ``/autodiscover/...``), then, only when ``[limits]
trusted_proxies`` is set, werkzeug's ``ProxyFix`` (the client address the
rate limits and logs use), then Flask.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from ..metrics import EXTENSION as METRICS
from ..metrics import Metrics
from ..spec import AUTODISCOVER_PREFIX, OUTLOOK_JSON_PATH
from .context import FAMILY_KEY, OUTCOME_KEY
from .families import FAMILY_HEADERS, Defaults, defaults

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_PREFIX_LENGTH = len(AUTODISCOVER_PREFIX)


def build(app: Flask) -> None:
    """Wrap ``app.wsgi_app`` in the whole stack, once all blueprints are registered."""
    wsgi: WSGIApplication = app.wsgi_app
    trusted = app.extensions["autoconfig"].config.limits.trusted_proxies
    if trusted:
        # Only the configured number of hops is believed; anything a client
        # puts further left in X-Forwarded-For is ignored.
        wsgi = ProxyFix(wsgi, x_for=trusted, x_proto=trusted)
    wsgi = FoldAutodiscoverCase(wsgi)
    app.wsgi_app = Edge(wsgi, app)  # type: ignore[method-assign]


def outcome_of(status: int) -> str:
    """The request metrics' outcome for an answer whose view noted none."""
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "unavailable"
    if status >= 500:
        return "error"
    return "bad_request" if status >= 400 else "served"


class Edge:
    """WSGI middleware around the whole app: default headers, then the request metrics.

    Done at the WSGI level on the plain header list because Flask's
    ``after_request`` hook and werkzeug's ``Headers`` cost about 20 µs per
    request (profiled), a tenth of the whole request's time in the app.
    Every answer passes here, error pages and unknown paths included.
    """

    def __init__(self, app: WSGIApplication, flask_app: Flask) -> None:
        self.app = app
        self.flask_app = flask_app
        self.family_defaults: dict[str, Defaults] = flask_app.extensions[FAMILY_HEADERS]
        self.defaults = defaults(())

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        status_code = 500

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status_code
            status_code = int(status[:3])
            present = {name.lower() for name, _ in headers}
            defaults = self.family_defaults.get(environ.get(FAMILY_KEY, ""), self.defaults)
            headers.extend(header for lower, header in defaults if lower not in present)
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            family = environ.get(FAMILY_KEY, "unknown")
            if family != "metrics":  # scrapes are not client traffic
                outcome = environ.get(OUTCOME_KEY) or outcome_of(status_code)
                registry: Metrics = self.flask_app.extensions[METRICS]
                registry.count_request(family, outcome, time.perf_counter() - started)


class FoldAutodiscoverCase:
    """WSGI middleware: ``/AutoDiscover/AutoDiscover.XML`` routes as ``/autodiscover/autodiscover.xml``,
    and ``/AutoDiscover/AutoDiscover.JSON/V1.0/<address>`` as ``/autodiscover/autodiscover.json/v1.0/<address>``.

    Only those segments are folded; the address in the JSON v1.0 path
    reaches the view as sent.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        # Every request passes here, so plain string tests instead of a regular
        # expression (which cost about 10 µs a request under load; bench/).
        if path[:_PREFIX_LENGTH].lower() == AUTODISCOVER_PREFIX:
            end = path.find("/", _PREFIX_LENGTH)
            if end > 0 and path[:end].lower() == OUTLOOK_JSON_PATH:
                end = path.find("/", end + 1)  # the version segment too: /AutoDiscover.JSON/V1.0/<address>
            head = path if end < 0 else path[:end]
            if head.isascii() and not head.islower():  # ASCII only: Unicode case mapping can change lengths
                environ["PATH_INFO"] = head.lower() + path[len(head) :]
        return self.app(environ, start_response)
