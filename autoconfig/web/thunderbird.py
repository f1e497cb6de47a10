"""Thunderbird autoconfig endpoints (all three paths clients and the draft use).

``?emailaddress=`` is optional (draft-ietf-mailmaint-autoconfig), and
Thunderbird for Android leaves it out by default.  A request without it
names no account, so it can be shown no server: it gets the very answer an
unknown address gets, the decline, which points to the setup page, where
Android users find a QR code for the app.  That answer is the same bytes
for every account, so answering it without an address tells nobody anything.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..formats import thunderbird
from ..service import Service, declined_message
from ..spec import CACHE_CONTROL, THUNDERBIRD_CONTENT_TYPE, THUNDERBIRD_PATHS
from ..values import Provider
from .context import OUTCOME_KEY, decide, provider_of_host, service, single_arg, text_response
from .families import family_headers

blueprint = Blueprint("thunderbird", __name__)
family_headers(blueprint, (("Cache-Control", CACHE_CONTROL),))


def declined(svc: Service, provider: Provider) -> Response:
    """No document at all: a 2xx without an incoming server is rejected by the client anyway.

    The text names neither the address nor anything about it, so all-off,
    unknown and address-less requests of one brand get the same bytes.
    """
    return text_response(thunderbird.declined_text(declined_message(provider), svc.config.public_url), 404)


def config_v11() -> Response:
    svc = service()
    raw = single_arg("emailaddress")
    if raw is None:
        request.environ[OUTCOME_KEY] = "declined"  # counted as what it is answered as
        return declined(svc, provider_of_host(svc))
    decision = decide(raw)
    if decision.offer.declined:
        return declined(svc, decision.provider)
    return Response(thunderbird.render(decision), status=200, content_type=THUNDERBIRD_CONTENT_TYPE)


for _index, _path in enumerate(THUNDERBIRD_PATHS):
    blueprint.add_url_rule(_path, view_func=config_v11, methods=["GET"], endpoint=f"config_{_index}")
