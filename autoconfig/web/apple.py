"""Apple configuration profiles: ``/apple/mail.mobileconfig`` and ``/mobileconfig``.

The signer is loaded when the blueprint is registered, that is when the app
starts, so a broken certificate setup stops the service before the first
download instead of failing every one.  A declined or unknown address gets
a 404 with the human page, because the person who tapped the link is
looking at Safari, not at a mail client.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

from ..formats import apple
from ..signing import Signers, load_signers
from ..spec import APPLE_CONTENT_TYPE, APPLE_PROFILE_PATHS
from .context import decide, single_arg
from .pages import decision_page, serve_html

SIGNER = "autoconfig.apple_signer"

blueprint = Blueprint("apple", __name__)
serve_html(blueprint)


@blueprint.record_once
def _load_signer(state: BlueprintSetupState) -> None:
    state.app.extensions[SIGNER] = load_signers(state.app.extensions["autoconfig"].config)


def profile() -> Response:
    decision = decide(single_arg("emailaddress"))
    if decision.offer.declined:
        return decision_page(decision, declined_status=404)
    body = apple.render(decision)
    signers: Signers = current_app.extensions[SIGNER]
    signer = signers.get(decision.provider.id)
    if signer is not None:
        body = signer.sign(body)
    disposition = f'attachment; filename="{apple.filename(decision.provider)}"'
    return Response(body, status=200, content_type=APPLE_CONTENT_TYPE, headers={"Content-Disposition": disposition})


for _index, _path in enumerate(APPLE_PROFILE_PATHS):
    blueprint.add_url_rule(_path, view_func=profile, methods=["GET"], endpoint=f"profile_{_index}")
