"""Apple configuration profiles (``.mobileconfig``) for iOS, iPadOS and macOS Mail.

A profile holds one ``com.apple.mail.managed`` payload, because Apple's
payload describes exactly one incoming server: IMAP when the account has it,
otherwise POP.  Identifiers and UUIDs are derived from provider, address and
purpose rather than drawn at random: a device replaces an installed profile
only when ``PayloadIdentifier`` matches, and updates a payload in place only
when its UUID matches too, so a random UUID would add a second account on
every reinstall.  The payload's purpose includes the protocol, so switching
from POP to IMAP replaces the account instead of mutating a POP account.

Never a password: the device asks for it while installing.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from typing import Any

from ..address import Address
from ..config import Provider, Server
from ..policy import Offer
from ..spec import APPLE_ACCOUNT_TYPES, APPLE_AUTHENTICATION, APPLE_MAIL_PAYLOAD_TYPE

# Fixed for ever: changing it changes every identifier and duplicates accounts on devices.
_NAMESPACE = uuid.UUID("6f1c3f0e-6f4b-5b1e-9d0a-2b7c1e4a9d31")


@dataclass(frozen=True)
class Identity:
    """Identifier and UUID of one part of one account's profile."""

    identifier: str
    uuid: str


def identity(provider: Provider, address: Address, purpose: str, prefix: str) -> Identity:
    """Stable across downloads for the same (provider, account, purpose); different for any other.

    The address's normalised key is hashed, never placed in the identifier,
    so the identifier stays a plain reverse-DNS name whatever the local part holds.
    """
    value = uuid.uuid5(_NAMESPACE, "\n".join((provider.id, address.key, purpose)))
    text = str(value).upper()
    return Identity(f"{prefix}.{purpose}.{text}", text)


def incoming_server(offer: Offer) -> Server:
    """IMAP if the offer has it, else POP; the first such server, implicit TLS preferred."""
    for protocol in ("imap", "pop3"):
        servers = [server for server in offer.incoming if server.protocol == protocol]
        if servers:
            return _prefer_implicit_tls(servers)
    raise ValueError("a declined offer has no Apple profile")


def outgoing_server(offer: Offer) -> Server:
    return _prefer_implicit_tls(list(offer.outgoing))


def _prefer_implicit_tls(servers: list[Server]) -> Server:
    return next((server for server in servers if server.implicit_tls), servers[0])


def _username(server: Server, address: Address) -> str:
    return address.local if server.username == "local-part" else str(address)


def _mail_payload(offer: Offer, provider: Provider, address: Address, prefix: str) -> dict[str, Any]:
    incoming = incoming_server(offer)
    outgoing = outgoing_server(offer)
    ident = identity(provider, address, f"mail.{incoming.protocol}", prefix)
    return {
        "PayloadType": APPLE_MAIL_PAYLOAD_TYPE,
        "PayloadVersion": 1,
        "PayloadIdentifier": ident.identifier,
        "PayloadUUID": ident.uuid,
        "PayloadDisplayName": f"{provider.short_name} Mail",
        "EmailAccountDescription": provider.display_name,
        "EmailAccountType": APPLE_ACCOUNT_TYPES[incoming.protocol],
        "EmailAddress": str(address),
        "IncomingMailServerHostName": incoming.host,
        "IncomingMailServerPortNumber": incoming.port,
        # Apple's "SSL" means "require TLS": implicit TLS or STARTTLS, by port.
        # Off would allow a plain-text login, and this service offers no plain text.
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": APPLE_AUTHENTICATION[incoming.authentication],
        "IncomingMailServerUsername": _username(incoming, address),
        "OutgoingMailServerHostName": outgoing.host,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": APPLE_AUTHENTICATION[outgoing.authentication],
        "OutgoingMailServerUsername": _username(outgoing, address),
        "OutgoingPasswordSameAsIncomingPassword": True,
    }


def profile(offer: Offer, provider: Provider, address: Address, prefix: str) -> dict[str, Any]:
    """The profile as a dictionary (what ``render`` serialises; tests validate it against Apple's schema)."""
    if offer.declined:
        raise ValueError("a declined offer has no Apple profile")
    ident = identity(provider, address, "profile", prefix)
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident.identifier,
        "PayloadUUID": ident.uuid,
        "PayloadDisplayName": f"{provider.display_name}: {address}",
        "PayloadDescription": (
            f"Sets up {address} in Mail. You will be asked for your mail password; the profile does not contain it."
        ),
        "PayloadOrganization": provider.display_name,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [_mail_payload(offer, provider, address, prefix)],
    }


def render(offer: Offer, provider: Provider, address: Address, prefix: str) -> bytes:
    """The unsigned profile: an XML plist, keys sorted, so equal input gives equal bytes."""
    return plistlib.dumps(profile(offer, provider, address, prefix), fmt=plistlib.FMT_XML, sort_keys=True)


def filename(provider: Provider) -> str:
    """The download's file name: from the config only, so nothing the client sent reaches a header."""
    return f"{provider.id}-mail.mobileconfig"
