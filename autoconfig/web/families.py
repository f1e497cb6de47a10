"""Each family of endpoints (a blueprint) declares its default headers and how its errors look.

The edge middleware (``autoconfig.web.stack``) adds the headers; the app's
error handlers use the renderer for requests no route of the family took.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from ..errors import ClientError
from .context import FAMILY_KEY

# Sent on every answer unless the view chose its own value.
DEFAULT_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
FAMILY_HEADERS = "autoconfig_family_headers"  # app.extensions: blueprint name -> its own default headers
FAMILY_ERRORS = "autoconfig_family_errors"  # app.extensions: blueprint name -> how it answers a ClientError

Defaults = tuple[tuple[str, tuple[str, str]], ...]


def defaults(headers: Iterable[tuple[str, str]]) -> Defaults:
    """``headers`` then DEFAULT_HEADERS, the first of each name winning, as (lower-case name, header)."""
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (*headers, *DEFAULT_HEADERS):
        merged.setdefault(name.lower(), (name, value))
    return tuple(merged.items())


def family_headers(blueprint: Blueprint, headers: tuple[tuple[str, str], ...]) -> None:
    """Every answer of ``blueprint`` (its error pages and static files too) gets ``headers`` unless it set its own."""

    def register(state: BlueprintSetupState) -> None:
        state.app.extensions[FAMILY_HEADERS][state.name] = defaults(headers)

    blueprint.record_once(register)


def family_errors(blueprint: Blueprint, render: Callable[[ClientError], Response]) -> None:
    """Errors on ``blueprint``'s paths that no route took (404, 405) are answered by ``render`` too.

    Flask's blueprint error handlers see only requests a route of the
    blueprint took; the admin API promises JSON for every answer.
    """

    def register(state: BlueprintSetupState) -> None:
        state.app.extensions[FAMILY_ERRORS][state.name] = render

    blueprint.record_once(register)


def family_render() -> Callable[[ClientError], Response] | None:
    renderers: dict[str, Callable[[ClientError], Response]] = current_app.extensions[FAMILY_ERRORS]
    return renderers.get(request.environ.get(FAMILY_KEY, ""))
