"""The JSON API the webmail calls when a user flips POP or IMAP.

Bearer tokens from the config are compared in constant time, against every
configured token, so timing tells nothing about which one was close.  With
no token configured the API does not exist (404): an open admin API is
worse than none.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from ..errors import BadRequest, ClientError, Conflict, NotFound, Unauthorized, Unavailable
from ..metrics import metrics
from ..spec import ADMIN_PREFIX, MAX_ADMIN_BODY
from ..store import SWITCHES, Account, ReadOnlyStore, StoreUnavailable
from .context import service
from .families import family_errors
from .jsonbody import read_object

log = logging.getLogger(__name__)
blueprint = Blueprint("admin", __name__, url_prefix=ADMIN_PREFIX)
_ACTOR = re.compile(r"^[\x21-\x7e]{1,64}$")


def _error(exc: ClientError) -> Response:
    response = jsonify(error=exc.code, message=exc.message)
    response.status_code = exc.status
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="autoconfig-admin"'
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@blueprint.before_request
def _authenticate() -> None:
    tokens = service().config.admin_tokens
    if not tokens:
        raise NotFound("the admin API is disabled: no admin token is configured")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'")
    matched = None
    for token in tokens:  # no early exit: every token is compared
        if hmac.compare_digest(token.token.encode(), presented.strip().encode()):
            matched = token
    if matched is None:
        raise Unauthorized("the admin token is not valid")
    actor = request.headers.get("X-Autoconfig-Actor")
    if actor is not None and not _ACTOR.match(actor):
        raise BadRequest("X-Autoconfig-Actor must be 1-64 printable ASCII characters without spaces")
    g.actor = f"api:{matched.name}" + (f"/{actor}" if actor else "")


def _body(required: tuple[str, ...]) -> dict[str, bool]:
    data = read_object(MAX_ADMIN_BODY, example='{"imap": true, "pop": false}')
    for name, value in data.items():
        if name not in SWITCHES:
            raise BadRequest(f"unknown field {json.dumps(name)[:70]}; allowed fields: imap, pop")
        if not isinstance(value, bool):
            raise BadRequest(f"field {name} must be true or false")
    missing = [name for name in required if name not in data]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    if not data:
        raise BadRequest("the body names no switch; send imap and/or pop")
    return data


def _key(address: str) -> str:
    return service().parse(address).key


def _store_call(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except ReadOnlyStore as exc:
        raise Conflict(str(exc)) from None
    except StoreUnavailable:
        metrics().store_errors.inc()
        raise Unavailable("the account store is unavailable; retry shortly") from None


def _change(address: str, required: tuple[str, ...]) -> Response:
    # Reads and resets take any address (rows stored before this check can still be removed).
    key = service().account_address(address).key
    changes = _body(required)
    account: Account = _store_call(service().store.update, key, changes, g.actor)
    for name, value in changes.items():
        metrics().admin_changes.labels(switch=name, value="on" if value else "off").inc()
    log.info(
        "switches of %s set by %s: %s",
        key,
        g.actor,
        " ".join(f"{name}={'on' if value else 'off'}" for name, value in changes.items()),
    )
    return jsonify(account.as_json())


@blueprint.get("/accounts/<path:address>")
def get_account(address: str) -> Response:
    account: Account = _store_call(service().store.get, _key(address))
    return jsonify(account.as_json())


@blueprint.put("/accounts/<path:address>")
def put_account(address: str) -> Response:
    return _change(address, required=SWITCHES)


@blueprint.patch("/accounts/<path:address>")
def patch_account(address: str) -> Response:
    return _change(address, required=())


@blueprint.delete("/accounts/<path:address>")
def delete_account(address: str) -> Response:
    key = _key(address)
    existed = _store_call(service().store.reset, key)
    log.info("switches of %s reset by %s", key, g.actor)
    return jsonify(address=key, imap=False, pop=False, existed=existed)


def _unrouted_error(exc: ClientError) -> Response:
    if exc.status == 404:
        exc = NotFound(f"no such admin API path; switches are at {ADMIN_PREFIX}/accounts/<address>")
    return _error(exc)


blueprint.register_error_handler(ClientError, _error)
family_errors(blueprint, _unrouted_error)  # unknown admin paths (404) and wrong methods (405) answer JSON too
