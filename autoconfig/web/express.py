"""The express lane: Dovecot's questions answered without gunicorn's parser and Flask around them.

Every IMAP and POP3 login waits for one answer from ``/dovecot/auth-policy``,
and on the login bench (bench/dovecot_logins.py) the HTTP server around the
decision (gunicorn reading the head a second time and building the environ,
Flask's request context, routing, hooks and ``Response``) cost about three
times what the decision itself does.  The buffering worker has read the
request whole already and knows where its head and body end
(autoconfig/framing.py), so for a question that is exactly what Dovecot
sends it hands the head's fields and the body to this lane instead, and
sends what the lane answers as gunicorn would frame it.

The lane takes a question only when nothing around the decision would come
into play on the full path: ``POST /dovecot/auth-policy?command=allow`` (or
``report``), a Host header the app accepts, ``Content-Type:
application/json``, the right secret, and no field the lane does not know
(``FIELDS``; a proxy's X-Forwarded-For, say).  For anything else it answers
None and the request goes through gunicorn and Flask as before, so every
refusal (401, 415, 404 without ``[dovecot]``, a bad Host) has one
implementation.  What it answers is the ``PolicyDesk``'s, the same object
the Flask view asks, with the headers and request metrics ``stack.Edge``
gives every answer.  tests/test_express.py holds its answers, metrics and
log lines to the full path's, byte for byte but the Date.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from ..metrics import EXTENSION as METRICS
from ..metrics import Metrics
from ..spec import HOST_FIELD, JSON_CONTENT_TYPE, TEXT_CONTENT_TYPE
from .dovecot import PolicyAnswer, PolicyDesk, desk_of
from .families import FAMILY_HEADERS, defaults
from .jsonbody import parse_object
from .stack import outcome_of

log = logging.getLogger(__name__)

FAMILY = "dovecot"
PATH = "/dovecot/auth-policy"
_PLAIN_JSON = frozenset({JSON_CONTENT_TYPE.encode(), JSON_CONTENT_TYPE.encode() + b"; charset=utf-8"})
# What the full path answers a question the desk could not (a bug): web._server_error's answer.
_SERVER_ERROR = PolicyAnswer(500, b"500 Internal Server Error\n")


class ExpressAnswer:
    """An answer for the worker to send: the status line's text, the headers in order, the body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class ExpressLane:
    """Dovecot's questions, for the buffering worker (autoconfig/worker.py); see the module docstring.

    ``fields`` names every request field (lower-case) the lane knows; the
    worker sends a request with any other down the full path.
    """

    def __init__(self, app: Flask, desk: PolicyDesk) -> None:
        self.desk = desk
        self.metrics: Metrics = app.extensions[METRICS]
        self.defaults = app.extensions[FAMILY_HEADERS].get(FAMILY) or defaults(())
        self.secret_field = desk.header.lower().encode()
        # Read here: Host, Content-Type, the secret.  Known to do nothing else on the full path: the
        # rest (the worker itself reads Content-Length and Connection, and logs User-Agent).
        self.fields = frozenset(
            {b"host", b"content-type", self.secret_field, b"content-length", b"connection", b"user-agent", b"date"}
        )
        self.routes = {f"{PATH}?command={command}".encode(): command for command in ("allow", "report")}

    def __call__(
        self, method: bytes, target: bytes, fields: Mapping[bytes, bytes], body: bytes
    ) -> ExpressAnswer | None:
        """The answer to this request, or None: the full path answers it.

        ``fields`` are the request's (lower-case names; plain ASCII values,
        blanks around them off), every one of them in ``self.fields``.
        """
        command = self.routes.get(target)
        if command is None or method != b"POST" or fields.get(b"content-type") not in _PLAIN_JSON:
            return None
        host = fields.get(b"host")
        if not host or not HOST_FIELD.match(host.decode("ascii")):
            return None
        presented = fields.get(self.secret_field)
        if presented is None or not hmac.compare_digest(self.desk.secret, presented):
            return None  # counted and logged, and answered 401, on the full path
        started = time.perf_counter()
        try:
            answer = self.desk.respond(lambda: command, lambda: parse_object(body))
        except Exception:
            log.exception("unhandled error on POST %s", PATH)
            answer = _SERVER_ERROR
        headers = [
            ("Content-Type", TEXT_CONTENT_TYPE if answer is _SERVER_ERROR else JSON_CONTENT_TYPE),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
        ]
        present = {name.lower() for name, _ in headers}
        headers.extend(header for lower, header in self.defaults if lower not in present)
        status = answer.status
        self.metrics.count_request(FAMILY, outcome_of(status), time.perf_counter() - started, express=True)
        return ExpressAnswer(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}", headers, answer.body)


def express_lane(app: Flask) -> ExpressLane | None:
    """The app's lane; None when ``[dovecot]`` is not configured (the endpoint is a 404)."""
    desk = desk_of(app)
    return None if desk is None else ExpressLane(app, desk)
