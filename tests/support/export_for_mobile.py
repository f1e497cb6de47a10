"""A reader for Thunderbird's "Export for Mobile" QR code format, version 1, written from its specification.

The specification is ``feature/migration/qrcode/qr-code-format.md`` in the
thunderbird-android repository.  This reader is the tests' stand-in for
Thunderbird for Android: it refuses a payload wherever the specification
(or the app's validator, which the specification asks every reader to
match) would refuse or skip any part of it, so a code that passes here is
imported whole.  It is written independently of ``autoconfig.formats.android``
and shares nothing with it: the numbers below are the specification's.

It is strict in one more way: it reads as the writer's check too.  The
specification lets readers skip unknown trailing elements but forbids a
writer of version 1 to add any, so an element beyond the ones version 1
defines is refused here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# FormatVersion.
VERSION = 1
# IncomingProtocol and OutgoingProtocol.
INCOMING_PROTOCOLS = {0: "IMAP", 1: "POP3"}
OUTGOING_PROTOCOLS = {0: "SMTP"}
# ConnectionSecurity.  1 is reserved ("legacy, do not use"): a writer must not send it.
CONNECTION_SECURITY = {0: "Plain", 2: "AlwaysStartTls", 3: "Tls"}
# AuthenticationType.  The specification lists 3 (Gssapi) and 4 (Ntlm), but Thunderbird for
# Android refuses the whole code when it meets either, so they count as refused here.
AUTHENTICATION_TYPES = {0: "None", 1: "PasswordCleartext", 2: "PasswordEncrypted", 5: "TlsCertificate", 6: "OAuth2"}

INCOMING_FIELDS = 6  # protocol, hostname, port, security, authentication, username
INCOMING_OPTIONAL = 2  # AccountName, Password
OUTGOING_FIELDS = 6
OUTGOING_OPTIONAL = 1  # Password
IDENTITY_FIELDS = 2  # EmailAddress, DisplayName

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}$")
# RFC 5322 atext: a dot-atom local part, which is all a user's address may be (no quoted strings).
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
MAX_LOCAL_PART = 64
MAX_ADDRESS = 254
MAX_HOSTNAME = 253


class Refused(ValueError):
    """Thunderbird for Android would not import this code (or would skip part of it)."""


@dataclass(frozen=True)
class Server:
    protocol: str
    hostname: str
    port: int
    security: str
    authentication: str
    username: str
    password: str | None  # None when omitted, null or empty: the app asks for it
    elements: int  # how many elements its array had: 6 means nothing optional (no password) was sent


@dataclass(frozen=True)
class Identity:
    email: str
    display_name: str


@dataclass(frozen=True)
class OutgoingGroup:
    server: Server
    identities: tuple[Identity, ...]


@dataclass(frozen=True)
class Account:
    incoming: Server
    account_name: str | None  # None: the app uses the first identity's address
    outgoing: tuple[OutgoingGroup, ...]


@dataclass(frozen=True)
class Export:
    sequence_number: int
    sequence_end: int
    accounts: tuple[Account, ...]


def read(payload: bytes) -> Export:
    """The payload as Thunderbird for Android reads it, or ``Refused`` with the rule it breaks."""
    try:
        root = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(f"the payload is not JSON in UTF-8: {exc}") from None
    _require(isinstance(root, list), "the root element is an array")
    _require(len(root) >= 4, "the root holds the version, the miscellaneous data and at least one account")
    _require(_integer(root[0]) and root[0] == VERSION, f"FormatVersion is {VERSION}")
    misc = root[1]
    _require(isinstance(misc, list) and len(misc) == 2, "MiscellaneousData holds SequenceNumber and SequenceEnd")
    number, end = misc
    _require(_integer(number) and _integer(end), "SequenceNumber and SequenceEnd are integers")
    _require(1 <= number <= end, "SequenceNumber is a 1-based index no larger than SequenceEnd")
    rest = root[2:]
    _require(len(rest) % 2 == 0, "IncomingServer and OutgoingServerGroups come in pairs")
    accounts = tuple(_account(rest[i], rest[i + 1]) for i in range(0, len(rest), 2))
    return Export(number, end, accounts)


def _account(incoming: object, groups: object) -> Account:
    _require(isinstance(incoming, list), "IncomingServer is an array")
    _require(
        INCOMING_FIELDS <= len(incoming) <= INCOMING_FIELDS + INCOMING_OPTIONAL,
        "IncomingServer has its six fields and at most AccountName and Password after them",
    )
    protocol = _choice(incoming[0], INCOMING_PROTOCOLS, "IncomingProtocol")
    server = _server(protocol, incoming, incoming[INCOMING_FIELDS + 1 : INCOMING_FIELDS + 2])
    account_name = _optional_text(incoming[INCOMING_FIELDS] if len(incoming) > INCOMING_FIELDS else None, "AccountName")
    _require(isinstance(groups, list) and len(groups) >= 1, "OutgoingServerGroups holds at least one group")
    return Account(server, account_name, tuple(_group(group) for group in groups))


def _group(group: object) -> OutgoingGroup:
    _require(isinstance(group, list) and len(group) >= 2, "an OutgoingServerGroup is an OutgoingServer and identities")
    outgoing = group[0]
    _require(isinstance(outgoing, list), "OutgoingServer is an array")
    _require(
        OUTGOING_FIELDS <= len(outgoing) <= OUTGOING_FIELDS + OUTGOING_OPTIONAL,
        "OutgoingServer has its six fields and at most a Password after them",
    )
    protocol = _choice(outgoing[0], OUTGOING_PROTOCOLS, "OutgoingProtocol")
    server = _server(protocol, outgoing, outgoing[OUTGOING_FIELDS:])
    return OutgoingGroup(server, tuple(_identity(identity) for identity in group[1:]))


def _server(protocol: str, array: list[object], password: list[object]) -> Server:
    """The five fields after the protocol, which incoming and outgoing servers share, and the password."""
    hostname, port, security, authentication, username = array[1:6]
    _require(isinstance(hostname, str) and _is_hostname(hostname), "Hostname is an ASCII host name or IP address")
    _require(_integer(port) and 1 <= port <= 65535, "Port is 1-65535")
    return Server(
        protocol=protocol,
        hostname=str(hostname),
        port=int(port),
        security=_choice(security, CONNECTION_SECURITY, "ConnectionSecurity"),
        authentication=_choice(authentication, AUTHENTICATION_TYPES, "AuthenticationType"),
        username=_text(username, "Username"),
        password=_optional_text(password[0] if password else None, "Password"),
        elements=len(array),
    )


def _identity(identity: object) -> Identity:
    _require(
        isinstance(identity, list) and len(identity) == IDENTITY_FIELDS, "an Identity is [EmailAddress, DisplayName]"
    )
    email, display_name = identity
    _require(isinstance(email, str) and _is_user_address(email), "EmailAddress is an ASCII dot-atom address")
    return Identity(str(email), _text(display_name, "DisplayName"))


def _is_hostname(text: str) -> bool:
    if not text.isascii() or not text:
        return False
    if _IPV4.match(text):
        return True
    name = text.removesuffix(".")
    return len(name) <= MAX_HOSTNAME and all(_LABEL.match(label) for label in name.split("."))


def _is_user_address(text: str) -> bool:
    """What the app accepts for an identity: ASCII, a dot-atom local part, a host-name domain, RFC 5321's lengths."""
    if not text.isascii() or len(text) > MAX_ADDRESS or text.count("@") != 1:
        return False
    local, domain = text.split("@")
    if not local or len(local) > MAX_LOCAL_PART or not all(_ATOM.match(atom) for atom in local.split(".")):
        return False
    return not domain.startswith("[") and _is_hostname(domain) and not _IPV4.match(domain)


def _choice(value: object, table: dict[int, str], name: str) -> str:
    _require(_integer(value) and value in table, f"{name} is one of {sorted(table)}")
    return table[value]


def _text(value: object, name: str) -> str:
    _require(isinstance(value, str), f"{name} is a string")
    _require("\r" not in value and "\n" not in value, f"{name} holds no line break")
    return value


def _optional_text(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    return _text(value, name)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, rule: str) -> None:
    if not condition:
        raise Refused(rule)
