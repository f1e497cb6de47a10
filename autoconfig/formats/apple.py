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

import hashlib
import plistlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from lxml import etree

from ..address import Address
from ..policy import Decision, Offer
from ..spec import APPLE_ACCOUNT_TYPES, APPLE_AUTHENTICATION, APPLE_MAIL_PAYLOAD_TYPE
from ..values import Provider, Server
from .one_account import incoming_server, outgoing_server

# Fixed for ever: changing it changes every identifier and duplicates accounts on devices.
_NAMESPACE = uuid.UUID("6f1c3f0e-6f4b-5b1e-9d0a-2b7c1e4a9d31")


class Identity(NamedTuple):
    """Identifier and UUID of one part of one account's profile (a tuple: two are made per download)."""

    identifier: str
    uuid: str


def identity(provider: Provider, address: Address, purpose: str, prefix: str) -> Identity:
    """Stable across downloads for the same (provider, account, purpose); different for any other.

    The address's normalised key is hashed, never placed in the identifier,
    so the identifier stays a plain reverse-DNS name whatever the local part holds.
    """
    text = uuid5_text("\n".join((provider.id, address.key, purpose)))
    return Identity(f"{prefix}.{purpose}.{text}", text)


_NAMESPACE_BYTES = _NAMESPACE.bytes


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name)).upper()``, written out (RFC 9562, section 5.5).

    Two per profile; building and formatting the ``UUID`` objects was a
    third of the address-dependent work (timeit).  A test holds it to
    ``uuid.uuid5`` over generated names.
    """
    # SHA-1 is what UUID version 5 is defined with; it identifies, it protects nothing.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
    h = digest.hex().upper()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _username(server: Server, address: Address) -> str:
    return address.local if server.username == "local-part" else str(address)


_Path = tuple[str | int, ...]
_MAIL = ("PayloadContent", 0)  # where the mail payload sits in the profile


def _address_values(offer: Offer, provider: Provider, address: Address, prefix: str) -> dict[_Path, str]:
    """Every value of the profile that depends on the address, by where it goes; nothing else does."""
    incoming, outgoing = _servers(offer)
    top = identity(provider, address, "profile", prefix)
    mail = identity(provider, address, f"mail.{incoming.protocol}", prefix)
    text = str(address)
    return {
        ("PayloadIdentifier",): top.identifier,
        ("PayloadUUID",): top.uuid,
        ("PayloadDisplayName",): f"{provider.display_name}: {text}",
        ("PayloadDescription",): (
            f"Sets up {text} in Mail. You will be asked for your mail password; the profile does not contain it."
        ),
        (*_MAIL, "PayloadIdentifier"): mail.identifier,
        (*_MAIL, "PayloadUUID"): mail.uuid,
        (*_MAIL, "EmailAddress"): text,
        (*_MAIL, "IncomingMailServerUsername"): _username(incoming, address),
        (*_MAIL, "OutgoingMailServerUsername"): _username(outgoing, address),
    }


@lru_cache(maxsize=64)
def _servers(offer: Offer) -> tuple[Server, Server]:
    if offer.declined:
        raise ValueError("a declined offer has no Apple profile")
    return incoming_server(offer), outgoing_server(offer)


def _skeleton(offer: Offer, provider: Provider) -> dict[str, Any]:
    """The profile without its address values: what every account with this offer shares."""
    incoming, outgoing = _servers(offer)
    mail = {
        "PayloadType": APPLE_MAIL_PAYLOAD_TYPE,
        "PayloadVersion": 1,
        "PayloadDisplayName": f"{provider.short_name} Mail",
        "EmailAccountDescription": provider.display_name,
        "EmailAccountType": APPLE_ACCOUNT_TYPES[incoming.protocol],
        "IncomingMailServerHostName": incoming.host,
        "IncomingMailServerPortNumber": incoming.port,
        # Apple's "SSL" means "require TLS": implicit TLS or STARTTLS, by port.
        # Off would allow a plain-text login, and this service offers no plain text.
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": APPLE_AUTHENTICATION[incoming.authentication],
        "OutgoingMailServerHostName": outgoing.host,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": APPLE_AUTHENTICATION[outgoing.authentication],
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadOrganization": provider.display_name,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [mail],
    }


def profile(decision: Decision) -> dict[str, Any]:
    """The profile as a dictionary (what ``render`` serialises; tests validate it against Apple's schema)."""
    provider = decision.provider
    return _profile(decision.offer, provider, decision.address, provider.apple.profile_identifier_prefix)


def _profile(offer: Offer, provider: Provider, address: Address, prefix: str) -> dict[str, Any]:
    document = _skeleton(offer, provider)
    for (*parents, key), value in _address_values(offer, provider, address, prefix).items():
        node: Any = document
        for step in parents:
            node = node[step]
        node[key] = value
    return document


def render(decision: Decision) -> bytes:
    """The unsigned profile: exactly the bytes ``plistlib.dumps(profile(decision), sort_keys=True)`` gives.

    plistlib's pure-Python writer took 70 µs per profile, the largest single
    cost of an Apple request (profiled).  Only the address values differ
    between two accounts with the same offer, so plistlib writes one document
    per (offer, provider, prefix) and each request sets those strings in it
    and serialises it with lxml.  tests/test_apple_profile.py holds this to
    plistlib's own bytes.
    """
    offer, provider, address = decision.offer, decision.provider, decision.address
    prefix = provider.apple.profile_identifier_prefix
    template = _template(offer, provider, prefix)
    values = _address_values(offer, provider, address, prefix)
    with template.lock:  # one shared tree: fill and serialise without another thread in between
        for path, element in template.elements.items():
            element.text = values[path]
        body = etree.tostring(template.root, encoding="UTF-8")
    return template.head + body + b"\n"


# Our own plistlib output is parsed here, never client input; still, nothing is loaded or resolved.
_TEMPLATE_PARSER = etree.XMLParser(load_dtd=False, resolve_entities=False, no_network=True, huge_tree=False)
_SAMPLE = Address("template", "example.invalid")


@dataclass(frozen=True)
class _Template:
    head: bytes  # plistlib's XML declaration and DOCTYPE
    root: etree._Element  # the <plist> element
    elements: dict[_Path, etree._Element]  # the <string> element of each address value
    lock: threading.Lock


@lru_cache(maxsize=64)
def _template(offer: Offer, provider: Provider, prefix: str) -> _Template:
    sample = _profile(offer, provider, _SAMPLE, prefix)
    document = plistlib.dumps(sample, fmt=plistlib.FMT_XML, sort_keys=True)
    root = etree.fromstring(document, _TEMPLATE_PARSER)
    strings = dict(zip(_string_paths(sample), root.iter("string"), strict=True))
    elements = {path: strings[path] for path in _address_values(offer, provider, _SAMPLE, prefix)}
    return _Template(document[: document.index(b"<plist")], root, elements, threading.Lock())


def _string_paths(value: object, path: _Path = ()) -> Iterator[_Path]:
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
