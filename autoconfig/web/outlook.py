"""Outlook autodiscover: the POX endpoint and the JSON pointer newer Outlook asks first.

The POX endpoint reads an XML body from anyone, so the body is size-checked
before it is read (Content-Length) and while it is read (chunked), and goes
to the hardened parser in ``autoconfig.xmlinput`` only after that.

Outlook and Thunderbird send Basic credentials here.  Nothing in this module
reads ``Authorization``, and no answer is ever 401 or carries
``WWW-Authenticate``.

Clients vary the case of ``/autodiscover/autodiscover.xml``; the path
segments before the address (``/autodiscover/autodiscover.json/v1.0/``
included) are folded to lower case before routing
(``_FoldAutodiscoverCase``), so the routes below name one spelling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import BadRequest, ClientError, NotServed, Unavailable
from ..formats import outlook
from ..service import declined_message
from ..spec import (
    AUTODISCOVER_BASE_NS,
    AUTODISCOVER_V1,
    CACHE_CONTROL,
    OUTLOOK_CONTENT_TYPE,
    OUTLOOK_ERROR_ADDRESS_NOT_FOUND,
    OUTLOOK_ERROR_INVALID_REQUEST,
    OUTLOOK_ERROR_NO_CONFIGURATION,
    OUTLOOK_ERROR_SCHEMA_UNAVAILABLE,
    OUTLOOK_ERROR_SERVER,
    OUTLOOK_JSON_ERROR_NOT_SERVED,
    OUTLOOK_JSON_ERROR_PROTOCOL,
    OUTLOOK_JSON_ERROR_REQUEST,
    OUTLOOK_JSON_ERROR_UNAVAILABLE,
    OUTLOOK_JSON_ERROR_USER,
    OUTLOOK_JSON_PATH,
    OUTLOOK_JSON_V1_PATH,
    OUTLOOK_POX_PATH,
    OUTLOOK_REQUEST_MIMETYPES,
)
from .context import decide, read_body, service, single_arg
from .families import family_headers

if TYPE_CHECKING:
    pass

blueprint = Blueprint("outlook", __name__)
family_headers(blueprint, (("Cache-Control", CACHE_CONTROL),))
_pox = Blueprint("pox", __name__)
_json = Blueprint("json", __name__)


class InvalidProtocol(BadRequest):
    """The JSON pointer was asked for a protocol other than AutodiscoverV1."""


# --- POX --------------------------------------------------------------------------------------------------------


def _pox_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type=OUTLOOK_CONTENT_TYPE)


def _pox_error(code: str, message: str, status: int = 200, response_ns: str = AUTODISCOVER_BASE_NS) -> Response:
    body = outlook.render_error(code, message, service().config.public_url, datetime.now(UTC), response_ns)
    return _pox_response(body, status)


# Content-Type values accepted as they are, without werkzeug parsing the header.
_PLAIN_CONTENT_TYPES = frozenset(
    f"{mimetype}{params}"
    for mimetype in OUTLOOK_REQUEST_MIMETYPES
    for params in ("", "; charset=utf-8", "; charset=UTF-8")
)


def _read_body(cap: int) -> bytes:
    """At most ``cap`` bytes of an XML body in UTF-8, or 413 (``read_body``)."""
    environ = request.environ
    if environ.get("CONTENT_TYPE") not in _PLAIN_CONTENT_TYPES:  # what clients send needs no parsing
        mimetype = request.mimetype
        if mimetype and mimetype not in OUTLOOK_REQUEST_MIMETYPES:
            raise BadRequest("send the request as Content-Type: text/xml")
        charset = request.mimetype_params.get("charset")
        if charset is not None and charset.lower() not in ("utf-8", "utf8"):
            raise BadRequest("the request must be encoded as UTF-8")
    return read_body(cap)


@_pox.post(OUTLOOK_POX_PATH)
def pox_post() -> Response:
    svc = service()
    try:
        asked = outlook.read_request(_read_body(svc.config.outlook.max_body_bytes))
    except outlook.RequestError as exc:  # malformed: 200 with error 600, as Outlook and ActiveSync expect
        return _pox_error(OUTLOOK_ERROR_INVALID_REQUEST, str(exc), response_ns=exc.response_ns)
    try:
        decision = decide(asked.email_address)
    except ClientError as exc:  # answered in the namespace the client can read
        return _pox_client_error(exc, asked.response_ns)
    if not asked.wants_outlook_settings:
        # ActiveSync (its request namespace or its schema) and any other schema: there is no provider for them.
        return _pox_error(OUTLOOK_ERROR_SCHEMA_UNAVAILABLE, _SCHEMA_UNAVAILABLE, response_ns=asked.response_ns)
    if decision.offer.declined:
        # The same bytes (but for Error/@Time) for unknown and all-off accounts.
        return _pox_error(OUTLOOK_ERROR_NO_CONFIGURATION, declined_message(decision.provider))
    return _pox_response(outlook.render(decision))


_SCHEMA_UNAVAILABLE = "Only Outlook's response schema 2006a is served here (no Exchange ActiveSync); use IMAP or POP."


@_pox.get(OUTLOOK_POX_PATH)
def pox_get() -> Response:
    return _pox_error(OUTLOOK_ERROR_INVALID_REQUEST, "Autodiscover requests are sent with POST.")


@_pox.errorhandler(ClientError)
def _pox_client_error(exc: ClientError, response_ns: str = AUTODISCOVER_BASE_NS) -> Response:
    if isinstance(exc, NotServed):
        return _pox_error(OUTLOOK_ERROR_ADDRESS_NOT_FOUND, exc.message, 404, response_ns)  # let the client move on
    if isinstance(exc, Unavailable):
        response = _pox_error(OUTLOOK_ERROR_SERVER, exc.message, exc.status, response_ns)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    # Malformed requests are answered 200 with error 600, as Outlook expects; size limits keep their status.
    status = 200 if exc.status == 400 else exc.status
    return _pox_error(OUTLOOK_ERROR_INVALID_REQUEST, exc.message, status, response_ns)


@_pox.errorhandler(HTTPException)
def _pox_http_error(exc: HTTPException) -> Response:
    return _pox_error(OUTLOOK_ERROR_INVALID_REQUEST, f"{exc.code} {exc.name}", exc.code or 400)


# --- JSON pointer -----------------------------------------------------------------------------------------------


def _pointer(raw_address: str | None) -> Response:
    protocols = request.args.getlist("Protocol")
    if len(protocols) != 1 or protocols[0].lower() != AUTODISCOVER_V1.lower():
        raise InvalidProtocol(f"only the protocol {AUTODISCOVER_V1} is available")
    svc = service()
    decide(raw_address)  # the address and domain checks every format makes; the answer is the same for all
    return jsonify(Protocol=AUTODISCOVER_V1, Url=svc.config.public_url + OUTLOOK_POX_PATH)


@_json.get(OUTLOOK_JSON_PATH)
def json_query() -> Response:
    return _pointer(single_arg("Email"))


@_json.get(OUTLOOK_JSON_V1_PATH + "<path:address>")
def json_v1(address: str) -> Response:
    return _pointer(address)


@_json.errorhandler(ClientError)
def _json_client_error(exc: ClientError) -> Response:
    if isinstance(exc, InvalidProtocol):
        code = OUTLOOK_JSON_ERROR_PROTOCOL
    elif isinstance(exc, NotServed):
        code = OUTLOOK_JSON_ERROR_NOT_SERVED
    elif isinstance(exc, Unavailable):
        code = OUTLOOK_JSON_ERROR_UNAVAILABLE
    elif isinstance(exc, BadRequest):
        code = OUTLOOK_JSON_ERROR_USER
    else:
        code = OUTLOOK_JSON_ERROR_REQUEST
    response = jsonify(ErrorCode=code, ErrorMessage=exc.message)
    response.status_code = exc.status
    if isinstance(exc, Unavailable):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


blueprint.register_blueprint(_pox)
blueprint.register_blueprint(_json)
