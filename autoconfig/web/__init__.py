"""HTTP layer: blueprints per audience, and the checks every request passes.

Request hygiene that does not depend on the client format lives here:
Host header syntax, query-string size, security headers, and plain-text
answers for unknown paths and methods (no HTML page that could echo input).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import unquote_to_bytes

from flask import Blueprint, Flask, Request, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from flask.sessions import NullSession, SessionInterface
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.exceptions import NotFound as NotFoundPath
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import RequestRedirect
from werkzeug.wsgi import get_content_length

from ..errors import BadRequest, ClientError, NotServed, PayloadTooLarge, TooManyRequests, Unavailable, UriTooLong
from ..metrics import EXTENSION as METRICS
from ..metrics import Metrics, metrics
from ..ratelimit import RateLimiter
from ..resources import data_dir
from ..service import Decision, Service
from ..spec import MAX_QUERY_STRING, TEXT_CONTENT_TYPE
from ..values import Provider

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

# Per-request facts the edge middleware reads after the app has answered.
FAMILY_KEY = "autoconfig.family"  # endpoint family (blueprint name) for the metrics
OUTCOME_KEY = "autoconfig.outcome"  # served / declined / foreign_domain, set by ``decide``


class _NoSessions(SessionInterface):
    """Nothing here keeps state in a cookie: every request gets the same empty, read-only session.

    Flask's default interface looks for a signing key and builds a new empty
    session on every request even when, as here, there is no key.
    """

    _session = NullSession()

    def open_session(self, app: Flask, request: Any) -> NullSession:
        return self._session

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


class App(Flask):
    """Flask, with the answer of ``ensure_sync`` remembered per function, no sessions and no redirects.

    Flask asks ``inspect`` whether every hook and view is a coroutine function
    on every request; the answer never changes, and asking cost about 10 µs of
    a 150 µs request (profiled).  Async views still work: the first call
    stores whatever Flask's own ``ensure_sync`` returns.

    Werkzeug's router answers ``/mail//config-v1.1.xml`` (merged slashes) and
    a missing trailing slash with a 308 whose Location it builds from the
    request's Host header, in an HTML page that bypasses every error
    handler.  Every URL this service emits comes from ``[service]
    public_url``, so the router never redirects: a doubled slash anywhere
    in the path (leading ones too, which the router would otherwise ignore:
    see ``_before_request``) is a path we do not serve, 404 like any unknown
    path, and should a future rule make the router want a redirect anyway,
    that becomes a 404 as well.
    """

    session_interface = _NoSessions()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_functions: dict[Callable[..., Any], Callable[..., Any]] = {}
        # Before any rule is added: each rule takes the map's setting when it is bound.
        self.url_map.merge_slashes = False

    def raise_routing_exception(self, request: Any) -> NoReturn:
        exc = request.routing_exception
        if isinstance(exc, RequestRedirect):
            raise NotFoundPath() from None
        raise exc

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync_functions[func]
        except KeyError:
            wrapped = self._sync_functions[func] = super().ensure_sync(func)
            return wrapped


_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def service() -> Service:
    """The ``Service`` of the app handling this request."""
    svc: Service = current_app.extensions["autoconfig"]
    return svc


def provider_of_host(svc: Service) -> Provider:
    """The brand a request names no mailbox of (a bare form, an address-less Thunderbird request) is shown.

    The brand whose domain the Host header is in (``autoconfig.brand.example``
    is brand.example's), else the first brand in the config.  The header is
    only looked up, never repeated in an answer.
    """
    host = request.environ.get("HTTP_HOST", "").partition(":")[0].rstrip(".").lower()
    while host:
        provider = svc.config.provider_for(host)
        if provider is not None:
            return provider
        host = host.partition(".")[2]
    return svc.config.providers[0]


def decide(raw: str | None) -> Decision:
    """``Service.decide``, with the outcome noted for the request metrics."""
    environ = request.environ
    try:
        decision = service().decide(raw)
    except NotServed:
        environ[OUTCOME_KEY] = "foreign_domain"
        raise
    except Unavailable:
        metrics().store_errors.inc()
        raise
    environ[OUTCOME_KEY] = "declined" if decision.offer.declined else "served"
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


def read_body(cap: int) -> bytes:
    """At most ``cap`` bytes of the request body, or ``PayloadTooLarge``.

    A chunked body is read no further than ``cap + 1`` bytes.  A declared
    length is read exactly, from the server's own stream: WSGI forbids
    reading past it and nothing here does, and werkzeug's wrapper around
    the stream cost about 10 µs a request under load (bench/).
    """
    environ = request.environ
    length = get_content_length(environ)  # None when chunked
    if length is not None and length > cap:
        raise _too_large(cap)
    if length is None:
        stream, wanted = request.stream, cap + 1
    else:
        stream, wanted = environ["wsgi.input"], length
    chunks: list[bytes] = []
    total = 0
    try:
        while total < wanted:
            chunk = stream.read(wanted - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except RequestEntityTooLarge:  # werkzeug's own cap (MAX_CONTENT_LENGTH) on a chunked body
        raise _too_large(cap) from None
    if total > cap:
        raise _too_large(cap)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(cap: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {cap} bytes")


def single_arg(name: str) -> str | None:
    """A query parameter that must appear at most once (two values are ambiguous, so 400)."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"the parameter {name} was given more than once")
    return values[0] if values else None


# Blueprints whose callers are trusted machines (load balancer health checks,
# the mail server's login hook) or that have their own limit.
UNLIMITED_BLUEPRINTS = frozenset({"health", "dovecot", "metrics"})


# An escape of a byte outside ASCII: without one (and without raw bytes outside ASCII) the
# decoded query is ASCII, so valid UTF-8, and the common "%40" needs no decoding (2 -> 0.3 µs).
_HIGH_ESCAPE = re.compile(rb"%[89A-Fa-f][0-9A-Fa-f]")


def _utf8_query(query: bytes) -> bool:
    """Whether every name and value in ``query`` decodes as UTF-8 once its %XX escapes are undone.

    Werkzeug keeps an undecodable escape as literal text (``al%ffice`` is
    read as the characters ``al%FFice``, which are valid in an address), and
    raw bytes that are not UTF-8 make it raise.  Checked once here, so no
    endpoint and no parameter can see either.
    """
    try:
        unquote_to_bytes(query).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


ADMIN_PREFIX = "/admin/v1"


def _unrouted_family(req: Request) -> str:
    """The family of a request no route took, so its error answer looks like the family's others.

    A wrong method (405) belongs to the family of the path's route; any path
    under the admin API's prefix belongs to the admin API.  Only requests
    that found no route pay for this.
    """
    exc = req.routing_exception
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        adapter = current_app.create_url_adapter(req)
        try:
            endpoint, _ = adapter.match(method=sorted(exc.valid_methods)[0])  # type: ignore[union-attr]
        except HTTPException:
            pass
        else:
            return str(endpoint).partition(".")[0]
    path = req.path
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return "admin"
    return "unknown"


def _before_request() -> None:
    """Every request's checks, in one hook (each Flask hook call has a measurable cost).

    The rate limit comes first, so a client flooding us with malformed
    requests is slowed down like any other.
    """
    req = request._get_current_object()  # type: ignore[attr-defined]
    if "//" in req.environ.get("PATH_INFO", ""):
        # The router drops leading slashes before matching, so "//mail/config-v1.1.xml" found
        # the Thunderbird view: unroute it, and it is answered as an unknown path (App's docstring).
        req.url_rule = req.view_args = None
        req.routing_exception = NotFoundPath()
    blueprint = req.blueprint
    # "outlook.pox" counts as outlook
    family = blueprint.partition(".")[0] if blueprint is not None else _unrouted_family(req)
    req.environ[FAMILY_KEY] = family
    if family not in UNLIMITED_BLUEPRINTS:
        limiters: dict[str, RateLimiter] = current_app.extensions["autoconfig_limits"]
        wait = limiters["admin" if family == "admin" else "client"].acquire(req.remote_addr or "-")
        if wait:
            raise TooManyRequests(
                "too many requests from your address; slow down", retry_after=RateLimiter.retry_after(wait)
            )
    query = req.query_string
    if len(query) > MAX_QUERY_STRING:
        raise UriTooLong(f"the query string is longer than {MAX_QUERY_STRING} bytes")
    if (not query.isascii() or _HIGH_ESCAPE.search(query)) and not _utf8_query(query):
        raise BadRequest("the query string is not valid UTF-8 (after percent-decoding)")
    host = req.environ.get("HTTP_HOST", "")  # the Host header, without werkzeug's header lookup
    if host and not _HOST.match(host):
        raise BadRequest("the Host header is not a valid host name")


# Sent on every answer unless the view chose its own value.
DEFAULT_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
FAMILY_HEADERS = "autoconfig_family_headers"  # app.extensions: blueprint name -> its own default headers
FAMILY_ERRORS = "autoconfig_family_errors"  # app.extensions: blueprint name -> how it answers a ClientError

_Defaults = tuple[tuple[str, tuple[str, str]], ...]


def _defaults(headers: Iterable[tuple[str, str]]) -> _Defaults:
    """``headers`` then DEFAULT_HEADERS, the first of each name winning, as (lower-case name, header)."""
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (*headers, *DEFAULT_HEADERS):
        merged.setdefault(name.lower(), (name, value))
    return tuple(merged.items())


def family_headers(blueprint: Blueprint, headers: tuple[tuple[str, str], ...]) -> None:
    """Every answer of ``blueprint`` (its error pages and static files too) gets ``headers`` unless it set its own."""

    def register(state: BlueprintSetupState) -> None:
        state.app.extensions[FAMILY_HEADERS][state.name] = _defaults(headers)

    blueprint.record_once(register)


def family_errors(blueprint: Blueprint, render: Callable[[ClientError], Response]) -> None:
    """Errors on ``blueprint``'s paths that no route took (404, 405) are answered by ``render`` too.

    Flask's blueprint error handlers see only requests a route of the
    blueprint took; the admin API promises JSON for every answer.
    """

    def register(state: BlueprintSetupState) -> None:
        state.app.extensions[FAMILY_ERRORS][state.name] = render

    blueprint.record_once(register)


class _Edge:
    """WSGI middleware around the whole app: default headers, then the request metrics.

    Done at the WSGI level on the plain header list because Flask's
    ``after_request`` hook and werkzeug's ``Headers`` cost about 20 µs per
    request (profiled), a tenth of the whole request's time in the app.
    Every answer passes here, error pages and unknown paths included.
    """

    def __init__(self, app: WSGIApplication, flask_app: Flask) -> None:
        self.app = app
        self.flask_app = flask_app
        self.family_defaults: dict[str, _Defaults] = flask_app.extensions[FAMILY_HEADERS]
        self.defaults = _defaults(())

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
                outcome = environ.get(OUTCOME_KEY) or _outcome(status_code)
                registry: Metrics = self.flask_app.extensions[METRICS]
                registry.count_request(family, outcome, time.perf_counter() - started)


def _family_render() -> Callable[[ClientError], Response] | None:
    renderers: dict[str, Callable[[ClientError], Response]] = current_app.extensions[FAMILY_ERRORS]
    return renderers.get(request.environ.get(FAMILY_KEY, ""))


def _client_error(exc: ClientError) -> Response:
    render = _family_render()
    if render is not None:
        return render(exc)
    response = text_response(exc.message, exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


class _HttpError(ClientError):
    """A routing error (404, 405) as the ClientError a family's renderer takes."""

    def __init__(self, exc: HTTPException, message: str) -> None:
        super().__init__(message)
        self.status = exc.code or 500
        self.code = (exc.name or "error").lower().replace(" ", "_")


def _http_error(exc: HTTPException) -> Response:
    # Werkzeug's own pages are HTML and some echo the method or URL; answer plainly instead.
    allowed = sorted(exc.valid_methods) if isinstance(exc, MethodNotAllowed) and exc.valid_methods else None
    message = f"{exc.code} {exc.name}"
    if allowed:
        message += f": use {', '.join(allowed)}"
    render = _family_render()
    response = text_response(message, exc.code or 500) if render is None else render(_HttpError(exc, message))
    if allowed:
        response.headers["Allow"] = ", ".join(allowed)  # RFC 9110, section 15.5.6: a 405 names what is allowed
    return response


def _server_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return text_response("500 Internal Server Error", 500)


def init_app(app: Flask) -> None:
    from . import admin, apple, dovecot, health, outlook, prometheus, setup, thunderbird

    app.extensions[FAMILY_HEADERS] = {}
    app.extensions[FAMILY_ERRORS] = {}
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
    app.register_error_handler(ClientError, _client_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.register_blueprint(thunderbird.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(dovecot.blueprint)
    app.register_blueprint(prometheus.blueprint)
    app.register_blueprint(apple.blueprint)
    # Read when the blueprint is registered (the static route is added then).
    setup.blueprint.static_folder = data_dir("static")
    app.register_blueprint(setup.blueprint)
    app.register_blueprint(outlook.blueprint)
    app.wsgi_app = _Edge(app.wsgi_app, app)  # type: ignore[method-assign]
