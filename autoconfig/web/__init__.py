"""HTTP layer: blueprints per audience, and the checks every request passes.

Request hygiene that does not depend on the client format lives here:
Host header syntax, query-string size, security headers, and plain-text
answers for unknown paths and methods (no HTML page that could echo input).
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from ..errors import BadRequest, ClientError, NotServed, TooManyRequests, Unavailable, UriTooLong
from ..metrics import metrics
from ..ratelimit import RateLimiter
from ..service import Decision, Service
from ..spec import MAX_QUERY_STRING, TEXT_CONTENT_TYPE

log = logging.getLogger(__name__)

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def service() -> Service:
    """The ``Service`` of the app handling this request."""
    svc: Service = current_app.extensions["autoconfig"]
    return svc


def decide(raw: str | None) -> Decision:
    """``Service.decide``, with the outcome noted for the request metrics."""
    try:
        decision = service().decide(raw)
    except NotServed:
        g.outcome = "foreign_domain"
        raise
    except Unavailable:
        metrics().store_errors.inc()
        raise
    g.outcome = "declined" if decision.offer.declined else "served"
    return decision


def _outcome(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "unavailable"
    if status >= 500:
        return "error"
    return "bad_request" if status >= 400 else "served"


def text_response(message: str, status: int) -> Response:
    return Response(message + "\n", status=status, content_type=TEXT_CONTENT_TYPE)


def single_arg(name: str) -> str | None:
    """A query parameter that must appear at most once (two values are ambiguous, so 400)."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"the parameter {name} was given more than once")
    return values[0] if values else None


# Blueprints whose callers are trusted machines (load balancer health checks,
# the mail server's login hook) or that have their own limit.
UNLIMITED_BLUEPRINTS = frozenset({"health", "dovecot", "metrics"})


def _before_request() -> None:
    """Every request's checks, in one hook (each Flask hook call has a measurable cost).

    The rate limit comes first, so a client flooding us with malformed
    requests is slowed down like any other.
    """
    g.started = time.perf_counter()
    req = request._get_current_object()  # type: ignore[attr-defined]
    family = req.blueprint
    if family not in UNLIMITED_BLUEPRINTS:
        limiters: dict[str, RateLimiter] = current_app.extensions["autoconfig_limits"]
        wait = limiters["admin" if family == "admin" else "client"].acquire(req.remote_addr or "-")
        if wait:
            raise TooManyRequests(
                "too many requests from your address; slow down", retry_after=RateLimiter.retry_after(wait)
            )
    if len(req.query_string) > MAX_QUERY_STRING:
        raise UriTooLong(f"the query string is longer than {MAX_QUERY_STRING} bytes")
    host = req.headers.get("Host", "")
    if host and not _HOST.match(host):
        raise BadRequest("the Host header is not a valid host name")


# Sent on every answer unless the view chose its own value.
DEFAULT_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def _after_request(response: Response) -> Response:
    """Default headers, then the request metrics (outcome by endpoint family, time in the app)."""
    headers = response.headers
    present = {key.lower() for key in headers.keys()}  # noqa: SIM118 - Headers.keys() lists every header
    for name, value in DEFAULT_HEADERS:
        if name.lower() not in present:
            headers.add(name, value)
    family = request.blueprint or "unknown"
    if family != "metrics":
        state = g._get_current_object()
        outcome = getattr(state, "outcome", None) or _outcome(response.status_code)
        started = getattr(state, "started", None)
        metrics().count_request(family, outcome, None if started is None else time.perf_counter() - started)
    return response


def _client_error(exc: ClientError) -> Response:
    response = text_response(exc.message, exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _http_error(exc: HTTPException) -> Response:
    # Werkzeug's own pages are HTML and some echo the method or URL; answer plainly instead.
    return text_response(f"{exc.code} {exc.name}", exc.code or 500)


def _server_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return text_response("500 Internal Server Error", 500)


def init_app(app: Flask) -> None:
    from . import admin, apple, dovecot, health, outlook, prometheus, setup, thunderbird

    limits = app.extensions["autoconfig"].config.limits
    app.extensions["autoconfig_limits"] = {
        "client": RateLimiter(limits.client_rate, limits.client_burst),
        "admin": RateLimiter(limits.admin_rate, limits.admin_burst),
    }
    if limits.trusted_proxies:
        # Only the configured number of hops is believed; anything a client
        # puts further left in X-Forwarded-For is ignored.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=limits.trusted_proxies, x_proto=limits.trusted_proxies
        )
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_error_handler(ClientError, _client_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.register_blueprint(thunderbird.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(dovecot.blueprint)
    app.register_blueprint(prometheus.blueprint)
    app.register_blueprint(apple.blueprint)
    app.register_blueprint(setup.blueprint)
    app.register_blueprint(outlook.blueprint)
