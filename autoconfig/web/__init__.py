"""HTTP layer: the app setup, and the checks every request passes.

Request hygiene that does not depend on the client format lives here:
Host header syntax, query-string size, and plain-text answers for unknown
paths and methods (no HTML page that could echo input).  ``init_app``
registers the blueprints (one per audience) and then builds the WSGI stack
(``stack.build``).  The blueprints take what they need from ``context``
(the service, the decision, the body) and ``families`` (their headers and
error pages), never from this module: imports point one way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import unquote_to_bytes

from flask import Flask, Request, Response, current_app, request
from flask.sessions import NullSession, SessionInterface
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NotFoundPath
from werkzeug.routing import RequestRedirect

from ..errors import BadRequest, ClientError, TooManyRequests, UriTooLong
from ..ratelimit import RateLimiter
from ..resources import data_dir
from ..spec import ADMIN_PREFIX, HOST_FIELD, MAX_QUERY_STRING
from .context import FAMILY_KEY, text_response
from .families import FAMILY_ERRORS, FAMILY_HEADERS, family_render

if TYPE_CHECKING:
    from .express import ExpressLane

log = logging.getLogger(__name__)


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
    # Dovecot's questions, answered without Flask by the buffering worker (autoconfig/web/express.py);
    # None without [dovecot].
    express_lane: ExpressLane | None = None

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
    if host and not HOST_FIELD.match(host):
        raise BadRequest("the Host header is not a valid host name")


def _client_error(exc: ClientError) -> Response:
    render = family_render()
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
    render = family_render()
    response = text_response(message, exc.code or 500) if render is None else render(_HttpError(exc, message))
    if allowed:
        response.headers["Allow"] = ", ".join(allowed)  # RFC 9110, section 15.5.6: a 405 names what is allowed
    return response


def _server_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return text_response("500 Internal Server Error", 500)


def init_app(app: Flask) -> None:
    from . import admin, apple, dovecot, express, health, outlook, prometheus, setup, stack, thunderbird

    app.extensions[FAMILY_HEADERS] = {}
    app.extensions[FAMILY_ERRORS] = {}
    limits = app.extensions["autoconfig"].config.limits
    app.extensions["autoconfig_limits"] = {
        "client": RateLimiter(limits.client_rate, limits.client_burst),
        "admin": RateLimiter(limits.admin_rate, limits.admin_burst),
    }
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
    stack.build(app)
    if isinstance(app, App):
        app.express_lane = express.express_lane(app)
