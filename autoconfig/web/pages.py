"""HTML answers for people in a browser: the setup page and the Apple profile's human fallback.

Both blueprints render through here, so every HTML response gets the same
headers (a CSP that allows no script at all) and every error becomes the
same page: the form again, with a reason that never echoes the input.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import segno
from flask import Blueprint, Response, render_template

from ..address import Address
from ..errors import ClientError, Unavailable
from ..service import Decision
from ..spec import APPLE_PROFILE_PATHS, CACHE_CONTROL
from . import family_headers, service

# No script anywhere; styles only from our own static file; QR codes are data: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def page(status: int = 200, **context: Any) -> Response:
    """The setup template with the config's names and links filled in."""
    config = service().config
    html = render_template(
        "setup.html",
        provider=config.provider,
        webmail_url=config.webmail_url,
        **context,
    )
    return Response(html, status=status, content_type="text/html; charset=utf-8")


PROTOCOL_NAMES = {"imap": "IMAP", "pop3": "POP", "smtp": "SMTP"}
SECURITY_NAMES = {"SSL": "SSL/TLS", "STARTTLS": "STARTTLS"}
AUTHENTICATION_NAMES = {"password-cleartext": "Normal password", "password-encrypted": "Encrypted password"}


def decision_page(decision: Decision, declined_status: int) -> Response:
    """Settings for an offer, or the way forward for a declined one (the same page for unknown addresses)."""
    address = decision.address
    if decision.offer.declined:
        return page(status=declined_status, address=str(address), declined=True)
    return page(
        address=str(address),
        local_part=address.local,
        offer=decision.offer,
        protocol_names=PROTOCOL_NAMES,
        security_names=SECURITY_NAMES,
        authentication_names=AUTHENTICATION_NAMES,
        profile_href=_profile_path(address),
        qr_code=qr_data_uri(profile_url(address)),
    )


def _profile_path(address: Address) -> str:
    return f"{APPLE_PROFILE_PATHS[0]}?{urlencode({'emailaddress': str(address)})}"


def profile_url(address: Address) -> str:
    """Absolute URL of the profile, from the configured public URL: never from the Host header."""
    return f"{service().config.public_url}{_profile_path(address)}"


def qr_data_uri(text: str) -> str:
    """An SVG QR code as a data: URI, so the CSP needs no inline markup exception."""
    return str(segno.make(text, error="m").svg_data_uri(scale=5, border=4, title="QR code of the profile link"))


HTML_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", CACHE_CONTROL),
)


def _error(exc: ClientError) -> Response:
    response = page(status=exc.status, error=exc.message)
    if isinstance(exc, Unavailable):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def serve_html(blueprint: Blueprint) -> None:
    """Give ``blueprint`` the HTML error page and the security headers."""
    family_headers(blueprint, HTML_HEADERS)
    blueprint.register_error_handler(ClientError, _error)
