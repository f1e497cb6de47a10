"""``GET /metrics`` in Prometheus text format, for the ISP's monitoring only.

Off unless ``[metrics] enabled``.  Even then it answers only clients in
``allow_networks`` (loopback by default) and, when a token is configured,
only with ``Authorization: Bearer <token>``.  Anyone else gets 404, so the
endpoint's existence is not advertised.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import NotFound
from ..metrics import metrics
from .context import service

blueprint = Blueprint("metrics", __name__)


def _allowed() -> bool:
    settings = service().config.metrics
    if not settings.enabled:
        return False
    try:
        client = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if not any(client in network for network in settings.allow_networks):
        return False
    if settings.token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), settings.token.encode())
    return True


@blueprint.get("/metrics")
def scrape() -> Response:
    if not _allowed():
        raise NotFound("404 Not Found")
    return Response(metrics().exposition(), content_type=CONTENT_TYPE_LATEST)
