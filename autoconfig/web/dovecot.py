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
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request
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
from ..metrics import metrics
from ..spec import JSON_CONTENT_TYPE, MAX_POLICY_BODY
from .context import single_arg
from .jsonbody import read_object

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
blueprint = Blueprint("dovecot", __name__, url_prefix="/dovecot")

COMMANDS = ("allow", "report")
UNKNOWN = "unknown"
PREPARED = "autoconfig.dovecot"
# What Dovecot sends, taken as it is; anything else goes through werkzeug's parsing.
_COMMAND_QUERIES = {f"command={command}": command for command in COMMANDS}


@dataclass(frozen=True)
class _Prepared:
    """What every decision needs from ``[dovecot]``, worked out once when the app starts."""

    header: str
    environ_key: str  # the header's name in the WSGI environ
    secret: bytes
    gate: LoginGate


@blueprint.record_once
def _prepare(state: BlueprintSetupState) -> None:
    svc = state.app.extensions["autoconfig"]
    settings = svc.config.dovecot
    state.app.extensions[PREPARED] = (
        None
        if settings is None
        else _Prepared(
            header=settings.header,
            environ_key="HTTP_" + settings.header.upper().replace("-", "_"),
            secret=settings.secret.encode(),
            gate=LoginGate(svc, WebmailNetworks(settings.webmail_networks)),
        )
    )


class _Labels:
    """Metric labels from a bounded set, whatever the request sent; filled in as the request is read."""

    __slots__ = ("command", "protocol")

    def __init__(self, command: str | None = None) -> None:
        self.command = command if command in COMMANDS else UNKNOWN
        self.protocol = UNKNOWN

    def set_protocol(self, protocol: str) -> None:
        self.protocol = protocol if protocol in GATED_PROTOCOLS else "other"


def _count(labels: _Labels, decision: str) -> None:
    metrics().count_decision(labels.command, labels.protocol, decision)


def _error(exc: ClientError) -> Response:
    response = jsonify(error=exc.code, message=exc.message)
    response.status_code = exc.status
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'ApiKey realm="autoconfig-dovecot-policy"'
    if isinstance(exc, Unavailable):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@blueprint.before_request
def _authenticate() -> None:
    prepared: _Prepared | None = current_app.extensions[PREPARED]
    if prepared is None:
        raise NotFound("the Dovecot auth-policy endpoint is disabled: [dovecot] api_header is not configured")
    presented = request.environ.get(prepared.environ_key, "").strip()
    if not hmac.compare_digest(prepared.secret, presented.encode()):
        _count(_Labels(request.args.get("command")), "unauthorized")
        log.warning("dovecot auth-policy: request without the right %s header refused", prepared.header)
        raise Unauthorized(f"send the shared secret in the {prepared.header} header")


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


@lru_cache(maxsize=64)
def _answer_body(status: int, message: str) -> bytes:
    """Dovecot's answer as ``jsonify`` writes it, made once per distinct answer (there are a handful)."""
    answer: dict[str, Any] = {"status": status, "msg": message} if message else {"status": status}
    return (json.dumps(answer, ensure_ascii=True, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _json(status: int, message: str = "") -> Response:
    return Response(_answer_body(status, message), content_type=JSON_CONTENT_TYPE)


def _answer(labels: _Labels) -> Response:
    environ = request.environ
    command = _COMMAND_QUERIES.get(environ.get("QUERY_STRING", "")) or single_arg("command")
    if command not in COMMANDS:
        raise BadRequest("the query parameter command must be allow or report")
    labels.command = command
    body = read_object(MAX_POLICY_BODY)  # its pwhash field is never read, so it can never be logged
    protocol = _text(body, "protocol")
    labels.set_protocol(protocol)
    login = _text(body, "login")
    if command == "report":
        outcome = "success" if _flag(body, "success") else "failure"
        if _flag(body, "policy_reject"):
            outcome = "policy_reject"
        _count(labels, outcome)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dovecot auth-policy report: %s (%s)", outcome, _context(body, protocol, login))
        return _json(0)
    prepared: _Prepared = current_app.extensions[PREPARED]
    verdict = prepared.gate.verdict(login, protocol, body.get(REAL_REMOTE))
    _count(labels, verdict.decision)
    if log.isEnabledFor(logging.INFO):  # the line is built only when it is written
        log.info("dovecot auth-policy: %s (%s)", verdict.decision, _context(body, protocol, login))
    return _json(verdict.status, verdict.message)


@blueprint.post("/auth-policy")
def auth_policy() -> Response:
    labels = _Labels()
    try:
        return _answer(labels)
    except ClientError as exc:
        _count(labels, exc.code)
        log.warning("dovecot auth-policy: answered %d: %s", exc.status, exc.message)
        raise


blueprint.register_error_handler(ClientError, _error)
