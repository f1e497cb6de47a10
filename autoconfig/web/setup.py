"""``/setup``: the page a help article points people to.

It answers from the same policy decision as every client format: the
settings for what the account has enabled, or the way to enable it.
"""

from __future__ import annotations

from flask import Blueprint, Response

from ..spec import SETUP_PATH
from .context import decide, single_arg
from .pages import decision_page, page, serve_html

# static_folder is set by ``init_app``: where static/ is depends on how the package was installed.
blueprint = Blueprint("setup", __name__, static_url_path="/setup/static")
serve_html(blueprint)


@blueprint.get(SETUP_PATH)
def setup() -> Response:
    raw = single_arg("emailaddress")
    if raw is None:
        return page()
    return decision_page(decide(raw), declined_status=200)
