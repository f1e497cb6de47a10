"""``/healthz`` for load balancers: 200 while the store answers, 503 when it does not."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..store import StoreUnavailable
from . import service

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks: dict[str, str] = {}
    try:
        service().store.ping()
        checks["store"] = "ok"
    except StoreUnavailable:
        checks["store"] = "down"
    status = "ok" if all(v == "ok" for v in checks.values()) else "down"
    return jsonify(status=status, checks=checks), 200 if status == "ok" else 503
