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

from ..address import AddressError, normalise_domain
from ..errors import (
    BadRequest,
    ClientError,
    NotFound,
    NotServed,
    Unauthorized,
    Unavailable,
)
from ..login_policy import (
    GATED_PROTOCOLS,
    NOT_OURS,
    OTHER_PROTOCOL,
    WEBMAIL,
    NotAnAddress,
    Verdict,
    WebmailNetworks,
    judge,
)
from ..metrics import metrics
from ..spec import JSON_CONTENT_TYPE, MAX_POLICY_BODY
from . import service, single_arg
from .jsonbody import read_object

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)
blueprint = Blueprint("dovecot", __name__, url_prefix="/dovecot")

COMMANDS = ("allow", "report")
# The attribute carrying Dovecot's %{real_rip} (2.4: %{real_remote_ip}): the peer of the connection itself.
REAL_REMOTE = "real_remote"
UNKNOWN = "unknown"
_LOGGABLE_LENGTH = 80
PREPARED = "autoconfig.dovecot"
# What Dovecot sends, taken as it is; anything else goes through werkzeug's parsing.
_COMMAND_QUERIES = {f"command={command}": command for command in COMMANDS}


@dataclass(frozen=True)
class _Prepared:
    """What every decision needs from ``[dovecot]``, worked out once when the app starts."""

    header: str
    environ_key: str  # the header's name in the WSGI environ
    secret: bytes
    webmail: WebmailNetworks


@blueprint.record_once
def _prepare(state: BlueprintSetupState) -> None:
    settings = state.app.extensions["autoconfig"].config.dovecot
    state.app.extensions[PREPARED] = (
        None
        if settings is None
        else _Prepared(
            header=settings.header,
            environ_key="HTTP_" + settings.header.upper().replace("-", "_"),
            secret=settings.secret.encode(),
            webmail=WebmailNetworks(settings.webmail_networks),
        )
    )


def _loggable(value: object) -> str:
    """A value from the request as it may appear in a log line: short, printable, no newlines."""
    if not isinstance(value, str) or not value:
        return "-"
    # Printable ASCII without the space, as str methods in C: a generator over the characters
    # cost more than the rest of the log line (callgrind).
    if len(value) > _LOGGABLE_LENGTH or not (value.isascii() and value.isprintable()) or " " in value:
        return f"<{len(value)} unprintable or long characters>"
    return value


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


def _from_webmail(body: dict[str, Any]) -> bool:
    """Only the connection's own peer counts: ``remote`` (``%{rip}``) is what a webmail in
    Dovecot's login_trusted_networks forwarded through IMAP ID, and must neither grant
    nor take away the exemption."""
    prepared: _Prepared | None = current_app.extensions[PREPARED]
    if prepared is None or not prepared.webmail:
        return False
    peer = body.get(REAL_REMOTE)
    if not isinstance(peer, str):
        raise BadRequest(
            f"the field {REAL_REMOTE} must be a string when [dovecot] webmail_networks is set; "
            f"include {REAL_REMOTE}=%{{real_rip}} (Dovecot 2.4: {REAL_REMOTE} = %{{real_remote_ip}}) "
            "in Dovecot's auth_policy_request_attributes"
        )
    try:
        return prepared.webmail.contains(peer)
    except NotAnAddress:
        raise BadRequest(
            f"the field {REAL_REMOTE} must be an IP address (Dovecot's %{{real_rip}}, in 2.4 %{{real_remote_ip}})"
        ) from None


def _judge(login: str, protocol: str, body: dict[str, Any]) -> Verdict:
    if protocol not in GATED_PROTOCOLS:
        return OTHER_PROTOCOL  # no store lookup: a store outage never touches SMTP or sieve logins
    if _from_webmail(body):
        return WEBMAIL  # no store lookup either: the webmail works through a store outage
    svc = service()
    try:
        decision = svc.decide(login)
    except NotServed:
        return NOT_OURS
    except BadRequest:
        if not _in_a_served_domain(svc, login):
            return NOT_OURS
        # A mailbox of ours whose name this service cannot key (john..smith@, alice.@, a@b@,
        # a local part over 64 octets): Dovecot's default auth_username_chars lets such logins
        # in, and "no opinion" would let them in with every switch off.  No switch can ever be
        # turned on for it, so it is judged as an account with every switch off.
        log.warning(
            "dovecot auth-policy: %s login %s is in a served domain but not an address this service "
            "can hold switches for; refused",
            _loggable(protocol),
            _loggable(login),
        )
        return judge(svc.nothing_enabled, protocol, svc.config.webmail_url)
    return judge(decision.offer, protocol, svc.config.webmail_url)


def _in_a_served_domain(svc: Service, login: str) -> bool:
    """Whether what follows the login's last @ (one trailing dot aside) is a domain this service serves."""
    _, at, domain = login.rpartition("@")
    if not at:
        return False
    try:
        return svc.serves(normalise_domain(domain.removesuffix(".")))
    except AddressError:
        return False


def _context(body: dict[str, Any], protocol: str, login: str) -> str:
    """The request's identifying fields for the log line, as Dovecot's own log names the login."""
    context = (
        f"{_loggable(protocol)} login {_loggable(login)}, "
        f"session={_loggable(body.get('session_id'))} remote={_loggable(body.get('remote'))}"
    )
    if REAL_REMOTE in body:
        context += f" real_remote={_loggable(body.get(REAL_REMOTE))}"
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
    verdict = _judge(login, protocol, body)
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
