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
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lxml import etree

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
    """The unsigned profile: exactly the bytes ``plistlib.dumps(profile(...), sort_keys=True)`` gives.

    plistlib's pure-Python writer took 70 µs per profile, the largest single
    cost of an Apple request (profiled).  Which keys a profile has, and every
    value but the strings, depend only on the offer, provider and prefix, so
    plistlib writes one document per such triple and each request sets the
    strings in it and serialises it with lxml.  tests/test_apple_profile.py
    holds this to plistlib's own bytes.
    """
    template = _template(offer, provider, prefix)
    values = profile(offer, provider, address, prefix)
    with template.lock:  # one shared tree: fill and serialise without another thread in between
        for element, path in template.strings:
            value: Any = values
            for step in path:
                value = value[step]
            element.text = value
        body = etree.tostring(template.root, encoding="UTF-8")
    return template.head + body + b"\n"


# Our own plistlib output is parsed here, never client input; still, nothing is loaded or resolved.
_TEMPLATE_PARSER = etree.XMLParser(load_dtd=False, resolve_entities=False, no_network=True, huge_tree=False)
_SAMPLE = Address("template", "example.invalid")


@dataclass(frozen=True)
class _Template:
    head: bytes  # plistlib's XML declaration and DOCTYPE
    root: etree._Element  # the <plist> element
    strings: tuple[tuple[etree._Element, tuple[str | int, ...]], ...]  # each <string> and where its value is
    lock: threading.Lock


@lru_cache(maxsize=64)
def _template(offer: Offer, provider: Provider, prefix: str) -> _Template:
    sample = profile(offer, provider, _SAMPLE, prefix)
    document = plistlib.dumps(sample, fmt=plistlib.FMT_XML, sort_keys=True)
    root = etree.fromstring(document, _TEMPLATE_PARSER)
    strings = tuple(zip(root.iter("string"), _string_paths(sample), strict=True))
    return _Template(document[: document.index(b"<plist")], root, strings, threading.Lock())


def _string_paths(value: object, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Where the strings in ``value`` are, in the order plistlib writes them (dictionary keys sorted)."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from _string_paths(value[key], (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _string_paths(item, (*path, index))


def filename(provider: Provider) -> str:
    """The download's file name: from the config only, so nothing the client sent reaches a header."""
    return f"{provider.id}-mail.mobileconfig"
