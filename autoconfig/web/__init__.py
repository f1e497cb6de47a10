"""HTTP layer: blueprints per audience, and the checks every request passes.

Request hygiene that does not depend on the client format lives here:
Host header syntax, query-string size, security headers, and plain-text
answers for unknown paths and methods (no HTML page that could echo input).
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from ..errors import BadRequest, ClientError, UriTooLong
from ..service import Service
from ..spec import MAX_QUERY_STRING, TEXT_CONTENT_TYPE

log = logging.getLogger(__name__)

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def service() -> Service:
    """The ``Service`` of the app handling this request."""
    svc: Service = current_app.extensions["autoconfig"]
    return svc


def text_response(message: str, status: int) -> Response:
    return Response(message + "\n", status=status, content_type=TEXT_CONTENT_TYPE)


def single_arg(name: str) -> str | None:
    """A query parameter that must appear at most once (two values are ambiguous, so 400)."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"the parameter {name} was given more than once")
    return values[0] if values else None


def _check_request() -> None:
    if len(request.query_string) > MAX_QUERY_STRING:
        raise UriTooLong(f"the query string is longer than {MAX_QUERY_STRING} bytes")
    host = request.headers.get("Host", "")
    if host and not _HOST.match(host):
        raise BadRequest("the Host header is not a valid host name")


def _client_error(exc: ClientError) -> Response:
    response = text_response(exc.message, exc.status)
    if exc.status == 503:
        response.headers["Retry-After"] = "5"
    return response


def _http_error(exc: HTTPException) -> Response:
    # Werkzeug's own pages are HTML and some echo the method or URL; answer plainly instead.
    return text_response(f"{exc.code} {exc.name}", exc.code or 500)


def _server_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return text_response("500 Internal Server Error", 500)


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    from . import admin, health, outlook, thunderbird

    app.before_request(_check_request)
    app.after_request(_security_headers)
    app.register_error_handler(ClientError, _client_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.register_blueprint(thunderbird.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(outlook.blueprint)
