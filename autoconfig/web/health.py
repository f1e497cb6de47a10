"""``/healthz`` for load balancers: 200 while the store answers, 503 when it does not.

The store check is ``ok``, ``down`` (it cannot be reached or opened) or
``replaced`` (the SQLite file this node serves was deleted or replaced
under it; see autoconfig/store/sqlite.py).

With hosted customer domains configured, a failing resolver makes the
service "degraded", still 200: every configured domain is served as usual,
and only unknown domains get a 503 until DNS answers again, so taking the
node out of the pool would only make things worse.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..store import StoreReplaced, StoreUnavailable
from .context import service

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    svc = service()
    checks: dict[str, str] = {}
    try:
        svc.store.ping()
        checks["store"] = "ok"
    except StoreReplaced:
        checks["store"] = "replaced"
    except StoreUnavailable:
        checks["store"] = "down"
    if svc.hosted is not None:
        # Recent lookups answer this; otherwise one probe, bounded by the resolver lifetime.
        checks["resolver"] = "ok" if svc.hosted.resolver_ok(svc.config.domains[0]) else "failing"
    if checks["store"] != "ok":
        status = "down"
    elif all(v == "ok" for v in checks.values()):
        status = "ok"
    else:
        status = "degraded"
    return jsonify(status=status, checks=checks), 503 if status == "down" else 200
