"""Thunderbird for Android's account QR code: Thunderbird's "Export for Mobile" format, version 1.

Thunderbird for Android (the K-9 Mail line) asks for its autoconfig
document without the address, so this service cannot tell it which
protocols the account has enabled and declines it like an unknown address.
What it can do is import an account from a QR code (the app's "Import
settings", offered at first start).  The setup page shows that code for an
account with IMAP or POP on, built here from the ``Offer`` the policy gate
allowed, so the code holds exactly what the documents for that account
hold.

The format (thunderbird-android, feature/migration/qrcode/qr-code-format.md)
is compact JSON made of nested arrays:
``[FormatVersion, [SequenceNumber, SequenceEnd], IncomingServer, OutgoingServerGroups]``.
One code here carries one account, so the sequence is 1 of 1.  The
optional account name and password are left out: the reader then names
the account after the identity's address, and asks for the password after
the import.  This service never knows a password and a code must never
carry one; a screenshot of the page would otherwise be a credential.

The format allows ASCII host names and addresses only (an IDN domain in
its ACE form is ASCII, and ``Address.domain`` is always that form).  An
address with a non-ASCII local part has no code: ``NotRepresentable``
tells the page to explain instead of showing a code the app would refuse.
"""

from __future__ import annotations

import json

from ..address import Address
from ..policy import Decision
from ..values import Server
from .one_account import incoming_server, outgoing_server

FORMAT_VERSION = 1
ONE_OF_ONE = (1, 1)  # SequenceNumber, SequenceEnd: this code is the whole export
INCOMING_PROTOCOLS = {"imap": 0, "pop3": 1}
OUTGOING_PROTOCOLS = {"smtp": 0}
# ConnectionSecurity: 3 is TLS from the first byte, 2 is STARTTLS that must succeed.  This
# service offers no plain text (0), and 1 is reserved by the format ("do not use").
CONNECTION_SECURITY = {"SSL": 3, "STARTTLS": 2}
AUTHENTICATION_TYPES = {"password-cleartext": 1, "password-encrypted": 2}
# The identity's display name is the person's name, which this service does not know;
# the format requires a string, and the app lets the user fill it in.
DISPLAY_NAME = ""


class NotRepresentable(ValueError):
    """The format cannot carry this account (it allows ASCII addresses and host names only)."""


def payload(decision: Decision) -> str:
    """The QR code's text for the decision's address: the one account its offer allows, and no password.

    Raises ``ValueError`` for a declined offer (it has no code) and
    ``NotRepresentable`` when the format cannot carry the address.
    """
    offer, address = decision.offer, decision.address
    if offer.declined:
        raise ValueError("a declined offer has no QR code")
    incoming, outgoing = incoming_server(offer), outgoing_server(offer)
    identity = [str(address), DISPLAY_NAME]
    document = [
        FORMAT_VERSION,
        list(ONE_OF_ONE),
        [INCOMING_PROTOCOLS[incoming.protocol], *_endpoint(incoming, address)],
        [[[OUTGOING_PROTOCOLS[outgoing.protocol], *_endpoint(outgoing, address)], identity]],
    ]
    # Compact separators: every byte saved makes the code smaller and quicker to scan.
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        raise NotRepresentable("Thunderbird's QR code format allows ASCII addresses and host names only")
    return text


def _endpoint(server: Server, address: Address) -> list[str | int]:
    """Hostname, Port, ConnectionSecurity, AuthenticationType, Username: the fields both server kinds share."""
    username = address.local if server.username == "local-part" else str(address)
    return [
        server.host,
        server.port,
        CONNECTION_SECURITY[server.socket],
        AUTHENTICATION_TYPES[server.authentication],
        username,
    ]
