"""HTML answers for people in a browser: the setup page and the Apple profile's human fallback.

Both blueprints render through here, so every HTML response gets the same
headers (a CSP that allows no script at all) and every error becomes the
same page: the form again, with a reason that never echoes the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import segno
from flask import Blueprint, Response, render_template, request

from ..address import Address
from ..errors import ClientError, Unavailable
from ..formats import android
from ..service import Decision
from ..spec import APPLE_PROFILE_PATHS, CACHE_CONTROL
from ..values import Provider
from .context import provider_of_host, service
from .families import family_headers

# No script anywhere; styles only from our own static file; QR codes are data: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def page(provider: Provider | None = None, status: int = 200, **context: Any) -> Response:
    """The setup template with a brand's names and links filled in: the mailbox's, else the Host's."""
    provider = provider or provider_of_host(service())
    html = render_template("setup.html", provider=provider, webmail_url=provider.webmail_url, **context)
    return Response(html, status=status, content_type="text/html; charset=utf-8")


PROTOCOL_NAMES = {"imap": "IMAP", "pop3": "POP", "smtp": "SMTP"}
SECURITY_NAMES = {"SSL": "SSL/TLS", "STARTTLS": "STARTTLS"}
AUTHENTICATION_NAMES = {"password-cleartext": "Normal password", "password-encrypted": "Encrypted password"}


def decision_page(decision: Decision, declined_status: int) -> Response:
    """Settings for an offer, or the way forward for a declined one (the same page for unknown addresses).

    A declined page gets no QR code of any kind: a code is settings, and the
    declined page must be the same bytes for an all-off and an unknown address.
    """
    address = decision.address
    if decision.offer.declined:
        return page(decision.provider, status=declined_status, address=str(address), declined=True)
    return page(
        decision.provider,
        address=str(address),
        local_part=address.local,
        offer=decision.offer,
        protocol_names=PROTOCOL_NAMES,
        security_names=SECURITY_NAMES,
        authentication_names=AUTHENTICATION_NAMES,
        profile_href=_profile_path(address),
        apple_qr=qr_image(profile_url(address), "QR code: the Apple Mail profile, for iPhone and iPad"),
        android_qr=_android_qr(decision),
    )


def _android_qr(decision: Decision) -> QrImage | None:
    """Thunderbird for Android's code for the offer, or None where its format cannot carry the address."""
    try:
        text = android.payload(decision)
    except android.NotRepresentable:
        return None
    return qr_image(text, "QR code: the account settings, for Thunderbird for Android")


def _profile_path(address: Address) -> str:
    return f"{APPLE_PROFILE_PATHS[0]}?{urlencode({'emailaddress': str(address)})}"


def profile_url(address: Address) -> str:
    """Absolute URL of the profile, from the configured public URL: never from the Host header."""
    return f"{service().config.public_url}{_profile_path(address)}"


QR_SCALE = 5  # CSS pixels per module: a phone camera reads it off a laptop screen at arm's length
QR_BORDER = 4  # the quiet zone ISO/IEC 18004 asks for


@dataclass(frozen=True)
class QrImage:
    """A QR code as the page embeds it: the image and its natural width (= height) in CSS pixels."""

    src: str
    size: int


# Drawing a code costs 6-8 ms (segno tries all eight masks), 30 ms for the longest address,
# and a person reloads the page or checks again from the form: the same code is drawn once.
@lru_cache(maxsize=256)
def qr_image(text: str, title: str) -> QrImage:
    """An SVG QR code as a data: URI, so the CSP needs no inline markup exception.

    Its size follows the code's version: a long address makes a denser code,
    which gets more pixels instead of smaller modules (the stylesheet still
    shrinks it to a narrow screen).
    """
    code = segno.make(text, error="m")
    width, _ = code.symbol_size(scale=QR_SCALE, border=QR_BORDER)
    return QrImage(str(code.svg_data_uri(scale=QR_SCALE, border=QR_BORDER, title=title)), int(width))


HTML_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", CACHE_CONTROL),
)


def _error(exc: ClientError) -> Response:
    # No decision to take the brand from: the brand the address names (a store outage, x@brand.example.),
    # else the Host's.  Only listed domains: an error page asks DNS nothing.
    values = request.args.getlist("emailaddress")
    provider = service().provider_named(values[0] if len(values) == 1 else None, look_up=False)
    response = page(provider, status=exc.status, error=exc.message)
    if isinstance(exc, Unavailable):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def serve_html(blueprint: Blueprint) -> None:
    """Give ``blueprint`` the HTML error page and the security headers."""
    family_headers(blueprint, HTML_HEADERS)
    blueprint.register_error_handler(ClientError, _error)
