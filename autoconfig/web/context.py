"""What a view asks of the request and the app: the service, the decision, the body, one parameter.

Every blueprint imports these from here, and nothing here imports a
blueprint or the app setup in ``autoconfig.web``: the dependencies point
one way.
"""

from __future__ import annotations

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import get_content_length

from ..errors import BadRequest, NotServed, PayloadTooLarge, Unavailable
from ..metrics import metrics
from ..service import Decision, Service
from ..spec import TEXT_CONTENT_TYPE
from ..values import Provider

# Per-request facts the edge middleware reads after the app has answered.
FAMILY_KEY = "autoconfig.family"  # endpoint family (blueprint name) for the metrics
OUTCOME_KEY = "autoconfig.outcome"  # served / declined / foreign_domain, set by ``decide``


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
