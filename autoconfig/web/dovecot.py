"""Dovecot's authentication-policy endpoint: the user's switch enforced at login.

Dovecot's auth process POSTs a JSON object to ``auth_policy_server_url``
with ``?command=allow`` (a check that may refuse the login) and
``?command=report`` (the outcome, answer ignored).  It can send ``allow``
twice, before and after verifying the password, and the two requests are
identical (Dovecot builds both without the ``success`` field), so this
endpoint cannot tell them apart.  The shipped snippets
(config/dovecot-2.3-auth-policy.conf for Dovecot 2.3,
config/dovecot-2.4-auth-policy.conf for 2.4) therefore turn the
before-auth check off: every ``allow`` that reaches us comes after a correct
password, and a stranger guessing passwords never sees an answer that
depends on the account.  Both versions send the same request (``POST
...?command=allow``, a JSON object of string attributes plus a boolean
``tls``); only the variables that fill the attributes are spelled
differently in their configs.

Only IMAP and POP3 logins are gated, through ``Service.decide`` and
``policy.offer``: the same gate the autoconfig documents pass.  Logins that
are not addresses of our domains get "no opinion" (status 0): they are not
accounts this service knows switches for.  A login in one of our domains
that is no address this service can key (``john..smith@``, ``a@b@``) is
refused: Dovecot lets such names log in, and no switch can be on for them.  When the store cannot answer we
answer 503, and Dovecot's ``auth_policy_reject_on_fail`` decides.

This is the one endpoint that answers 401: its caller is a mail server
holding a shared secret, not a mail client sending a user's password.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from ..errors import (
    BadRequest,
    ClientError,
    NotFound,
    Unauthorized,
    Unavailable,
)
from ..login_policy import GATED_PROTOCOLS, REAL_REMOTE, LoginGate, WebmailNetworks
from ..logs import loggable
from ..metrics import EXTENSION as METRICS
from ..spec import JSON_CONTENT_TYPE, MAX_POLICY_BODY
from .context import single_arg
from .jsonbody import read_object

if TYPE_CHECKING:
    from ..config import DovecotPolicy
    from ..metrics import Metrics
    from ..service import Service

log = logging.getLogger(__name__)
blueprint = Blueprint("dovecot", __name__, url_prefix="/dovecot")

COMMANDS = ("allow", "report")
UNKNOWN = "unknown"
DESK = "autoconfig.dovecot"  # app.extensions: the app's PolicyDesk, None without [dovecot]
_COMMAND_QUERIES = {f"command={command}": command for command in COMMANDS}


class PolicyAnswer:
    """One answer to Dovecot, as the Flask view and the worker's express lane (``web.express``) both send it."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status, self.body, self.headers = status, body, headers

    def response(self) -> Response:
        response = Response(self.body, status=self.status, content_type=JSON_CONTENT_TYPE)
        for name, value in self.headers:
            response.headers[name] = value
        return response


def _json_body(answer: dict[str, Any]) -> bytes:
    """``answer`` as ``jsonify`` writes it (sorted keys, compact, ASCII, a final newline)."""
    return (json.dumps(answer, ensure_ascii=True, sort_keys=True, separators=(",", ":")) + "\n").encode()


@lru_cache(maxsize=64)
def _decision(status: int, message: str) -> PolicyAnswer:
    """Dovecot's answer to one question, made once per distinct answer (there are a handful)."""
    return PolicyAnswer(200, _json_body({"status": status, "msg": message} if message else {"status": status}))


def error_answer(exc: ClientError) -> PolicyAnswer:
    headers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, Unauthorized):
        headers = (("WWW-Authenticate", 'ApiKey realm="autoconfig-dovecot-policy"'),)
    if isinstance(exc, Unavailable):
        headers = (("Retry-After", str(exc.retry_after)),)
    return PolicyAnswer(exc.status, _json_body({"error": exc.code, "message": exc.message}), headers)


class _Labels:
    """Metric labels from a bounded set, whatever the request sent; filled in as the request is read."""

    __slots__ = ("command", "protocol")

    def __init__(self, command: str | None = None) -> None:
        self.command = command if command in COMMANDS else UNKNOWN
        self.protocol = UNKNOWN

    def set_protocol(self, protocol: str) -> None:
        self.protocol = protocol if protocol in GATED_PROTOCOLS else "other"


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(
            f"the field {name} must be a string; include {name}= in Dovecot's auth_policy_request_attributes"
        )
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"the field {name} must be true or false")
    return value


def _context(body: dict[str, Any], protocol: str, login: str) -> str:
    """The request's identifying fields for the log line, as Dovecot's own log names the login."""
    context = (
        f"{loggable(protocol)} login {loggable(login)}, "
        f"session={loggable(body.get('session_id'))} remote={loggable(body.get('remote'))}"
    )
    if REAL_REMOTE in body:
        context += f" real_remote={loggable(body.get(REAL_REMOTE))}"
    return context


class PolicyDesk:
    """Everything about one of Dovecot's questions after the HTTP layer has read it: the secret,
    the command, the body, the verdict, its count and its log line, and the answer.

    Framework-free, so that the Flask view and the worker's express lane
    (``autoconfig.web.express``), which answers Dovecot's questions without
    Flask, are one code path and cannot drift apart.  ``[dovecot]`` is
    worked out once, when the app starts.
    """

    def __init__(self, settings: DovecotPolicy, service: Service, registry: Metrics) -> None:
        self.header = settings.header
        self.environ_key = "HTTP_" + settings.header.upper().replace("-", "_")  # the header's name in the environ
        self.secret = settings.secret.encode()
        self.gate = LoginGate(service, WebmailNetworks(settings.webmail_networks))
        self.metrics = registry

    def authentic(self, presented: str, command: str | None) -> bool:
        """Whether ``presented`` (the header's value) is the secret; a refusal is counted and logged."""
        if hmac.compare_digest(self.secret, presented.strip().encode()):
            return True
        self.metrics.count_decision(_Labels(command).command, UNKNOWN, "unauthorized")
        log.warning("dovecot auth-policy: request without the right %s header refused", self.header)
        return False

    def refusal(self) -> Unauthorized:
        return Unauthorized(f"send the shared secret in the {self.header} header")

    def respond(self, read_command: Callable[[], str | None], read_body: Callable[[], dict[str, Any]]) -> PolicyAnswer:
        """The answer to an authenticated question.  The HTTP layer says how to read its command (from
        the query string) and its body (as a JSON object); either raises ClientError for what it refuses."""
        labels = _Labels()
        try:
            return self._answer(labels, read_command(), read_body)
        except ClientError as exc:
            self.metrics.count_decision(labels.command, labels.protocol, exc.code)
            log.warning("dovecot auth-policy: answered %d: %s", exc.status, exc.message)
            return error_answer(exc)

    def _answer(self, labels: _Labels, command: str | None, read_body: Callable[[], dict[str, Any]]) -> PolicyAnswer:
        if command not in COMMANDS:
            raise BadRequest("the query parameter command must be allow or report")
        labels.command = command
        body = read_body()  # its pwhash field is never read, so it can never be logged
        protocol = _text(body, "protocol")
        labels.set_protocol(protocol)
        login = _text(body, "login")
        if command == "report":
            outcome = "success" if _flag(body, "success") else "failure"
            if _flag(body, "policy_reject"):
                outcome = "policy_reject"
            self.metrics.count_decision(labels.command, labels.protocol, outcome)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("dovecot auth-policy report: %s (%s)", outcome, _context(body, protocol, login))
            return _decision(0, "")
        verdict = self.gate.verdict(login, protocol, body.get(REAL_REMOTE))
        self.metrics.count_decision(labels.command, labels.protocol, verdict.decision)
        if log.isEnabledFor(logging.INFO):  # the line is built only when it is written
            log.info("dovecot auth-policy: %s (%s)", verdict.decision, _context(body, protocol, login))
        return _decision(verdict.status, verdict.message)


@blueprint.record_once
def _prepare(state: BlueprintSetupState) -> None:
    svc = state.app.extensions["autoconfig"]
    settings = svc.config.dovecot
    state.app.extensions[DESK] = None if settings is None else PolicyDesk(settings, svc, state.app.extensions[METRICS])


def desk_of(app: Flask) -> PolicyDesk | None:
    """The app's ``PolicyDesk``; None when ``[dovecot]`` is not configured (the endpoint answers 404)."""
    desk: PolicyDesk | None = app.extensions[DESK]
    return desk


def _error(exc: ClientError) -> Response:
    return error_answer(exc).response()


@blueprint.before_request
def _authenticate() -> None:
    desk = desk_of(current_app)
    if desk is None:
        raise NotFound("the Dovecot auth-policy endpoint is disabled: [dovecot] api_header is not configured")
    if not desk.authentic(request.environ.get(desk.environ_key, ""), request.args.get("command")):
        raise desk.refusal()


def _command() -> str | None:
    # What Dovecot sends, taken as it is; anything else goes through werkzeug's parsing.
    return _COMMAND_QUERIES.get(request.environ.get("QUERY_STRING", "")) or single_arg("command")


def _body() -> dict[str, Any]:
    return read_object(MAX_POLICY_BODY)


@blueprint.post("/auth-policy")
def auth_policy() -> Response:
    desk: PolicyDesk = current_app.extensions[DESK]
    return desk.respond(_command, _body).response()


blueprint.register_error_handler(ClientError, _error)
