"""Which servers a format that holds exactly one account shows.

Apple's mail payload and Thunderbird for Android's QR code each carry one
incoming server and one outgoing server, where the clientConfig and Outlook
documents list every server of an offer.  Both pick the same way, so a
person who sets up an iPhone and an Android phone from one page gets the
same account on each: IMAP when the offer has it (the page recommends it),
else POP, and implicit TLS before STARTTLS (RFC 8314).  The offer itself,
what may be shown at all, is still decided by ``policy.offer`` alone.
"""

from __future__ import annotations

from ..policy import Offer
from ..values import Server

# The incoming protocol a one-account format chooses, best first.
PREFERRED_INCOMING = ("imap", "pop3")


def incoming_server(offer: Offer) -> Server:
    """IMAP if the offer has it, else POP; the first such server, implicit TLS preferred."""
    for protocol in PREFERRED_INCOMING:
        servers = [server for server in offer.incoming if server.protocol == protocol]
        if servers:
            return _prefer_implicit_tls(servers)
    raise ValueError("a declined offer has no incoming server")


def outgoing_server(offer: Offer) -> Server:
    """The first implicit-TLS submission server, else the first STARTTLS one."""
    if not offer.outgoing:
        raise ValueError("a declined offer has no outgoing server")
    return _prefer_implicit_tls(list(offer.outgoing))


def _prefer_implicit_tls(servers: list[Server]) -> Server:
    return next((server for server in servers if server.implicit_tls), servers[0])
