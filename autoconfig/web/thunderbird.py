"""Thunderbird autoconfig endpoints (all three paths clients and the draft use)."""

from __future__ import annotations

from flask import Blueprint, Response

from ..formats import thunderbird
from ..spec import CACHE_CONTROL, THUNDERBIRD_CONTENT_TYPE, THUNDERBIRD_PATHS
from . import decide, family_headers, service, single_arg, text_response

blueprint = Blueprint("thunderbird", __name__)
family_headers(blueprint, (("Cache-Control", CACHE_CONTROL),))


def config_v11() -> Response:
    svc = service()
    decision = decide(single_arg("emailaddress"))
    if decision.offer.declined:
        # No document at all: a 2xx without an incoming server is rejected by the
        # client anyway, and this text is the same for unknown and all-off accounts.
        return text_response(svc.declined_message(), 404)
    body = thunderbird.render(
        decision.offer, svc.config.provider, svc.domains_for(decision.address), svc.config.webmail_url
    )
    return Response(body, status=200, content_type=THUNDERBIRD_CONTENT_TYPE)


for _index, _path in enumerate(THUNDERBIRD_PATHS):
    blueprint.add_url_rule(_path, view_func=config_v11, methods=["GET"], endpoint=f"config_{_index}")
