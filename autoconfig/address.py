"""Email addresses as they arrive from the network: parsed once, normalised once.

Every format and the store see the same ``Address``, so ``Alice@EXAMPLE.net``
and ``alice@example.net`` are one account everywhere.  The checks are strict
on purpose: the address comes from anyone on the Internet and ends up in
documents, logs and database keys.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property, lru_cache

import idna

MAX_ADDRESS_OCTETS = 254  # RFC 5321 path limit minus the angle brackets
MAX_LOCAL_OCTETS = 64  # RFC 5321 section 4.5.3.1.1
MAX_DOMAIN_OCTETS = 253
MAX_LABEL_OCTETS = 63

# RFC 5322 atext, plus any non-ASCII character (RFC 6532 allows UTF-8 local parts).
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+$")
_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned, separators.
_ASCII_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_REJECTED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class AddressError(ValueError):
    """The input is not an address we can answer for; the message is safe to show."""


# More than enough: over every code point, with and without the combining marks
# that misbehave, one round already gives the fixed point (tests/test_address_key.py).
_MAX_KEY_ROUNDS = 4


def canonical_local(local: str) -> str:
    """The local part as the store keys it: lower case and NFC, at a point where neither changes it.

    One mailbox is one key however it is spelled.  Lowering an NFC string
    can leave it no longer NFC (a Greek capital with a combining
    ypogegrammeni, U+0130 before a cedilla), so the key ``NFC(local).lower()``
    used before this was not idempotent: the same mailbox, written once as
    typed and once as its own key, got two store rows.  Lowering and NFC
    are applied until the text stops changing, so ``key(key(x)) == key(x)``.

    ``str.lower``, not ``casefold``, and NFC, not NFKC, on purpose: those
    would also merge addresses that mail systems keep apart (``straße``
    and ``strasse``; the full-width a, U+FF41, and ``a``), and the key must
    never make two mailboxes one.  Only spellings that differ by letter
    case or by Unicode's canonical equivalence are one key.
    """
    if local.isascii():
        return local.lower()
    key = local
    for _ in range(_MAX_KEY_ROUNDS):
        lowered = unicodedata.normalize("NFC", key.lower())
        if lowered == key:
            return key
        key = lowered
    raise AddressError("the part before @ has no stable lower-case form")


@dataclass(frozen=True)
class Address:
    """A validated address.  ``key`` identifies the account in the store (see ``canonical_local``)."""

    local: str  # as the user typed it (case kept, for login names)
    domain: str  # lower-case, IDNA (A-label) form

    @cached_property  # asked for up to three times per request
    def key(self) -> str:
        return f"{canonical_local(self.local)}@{self.domain}"

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def _has_control(text: str) -> bool:
    if text.isascii():  # the common case, without a per-character table lookup
        return _ASCII_CONTROL_OR_SPACE.search(text) is not None
    return any(unicodedata.category(ch) in _REJECTED_CATEGORIES or ch.isspace() for ch in text)


@lru_cache(maxsize=1024)  # few distinct domains, asked constantly; only successes are kept
def normalise_domain(text: str) -> str:
    """Lower-case, IDNA-encoded, LDH-only domain with at least two labels."""
    if not text:
        raise AddressError("the domain is empty")
    if _has_control(text):
        raise AddressError("the domain contains spaces or control characters")
    if text.startswith("[") or text.replace(".", "").isdigit():
        raise AddressError("IP address literals are not accepted as a domain")
    if text.endswith("."):
        raise AddressError("the domain must not end with a dot")
    try:
        ascii_domain = text.lower() if text.isascii() else idna.encode(text, uts46=True).decode()
    except idna.IDNAError:
        raise AddressError("the domain is not a valid internationalised domain name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise AddressError("the domain needs at least two labels (like example.net)")
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"the domain is longer than {MAX_DOMAIN_OCTETS} characters")
    for label in labels:
        if not _LDH_LABEL.match(label):
            raise AddressError("the domain has an invalid label (letters, digits and inner hyphens only)")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise AddressError("the domain has an invalid internationalised label") from None
    if labels[-1].isdigit():
        raise AddressError("IP address literals are not accepted as a domain")
    return ascii_domain


# Clients ask for the same addresses over and over (one setup makes several
# requests; misconfigured clients loop).  Only successes are cached: an
# exception is never stored, so hostile input cannot fill the cache with errors.
@lru_cache(maxsize=2048)
def parse_address(text: str | None) -> Address:
    """Parse untrusted input into an ``Address`` or raise ``AddressError``."""
    if text is None or text == "":
        raise AddressError("an email address is required")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ADDRESS_OCTETS * 4:
        raise AddressError(f"the address is longer than {MAX_ADDRESS_OCTETS} characters")
    if "\ufffd" in text:
        raise AddressError("the address is not valid UTF-8")
    if _has_control(text):
        raise AddressError("the address contains spaces or control characters")
    if text.count("@") != 1:
        raise AddressError("the address must contain exactly one @")
    local, domain_text = text.split("@")
    if not local:
        raise AddressError("the part before @ is empty")
    if local.startswith('"'):
        raise AddressError("quoted local parts are not supported")
    local = unicodedata.normalize("NFC", local)
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise AddressError(f"the part before @ is longer than {MAX_LOCAL_OCTETS} characters")
    if not all(_LOCAL_ATOM.match(atom) for atom in local.split(".")):
        raise AddressError("the part before @ contains characters not allowed in an address")
    domain = normalise_domain(domain_text)
    address = Address(local, domain)
    # The key must itself be an accepted address (lower case can be longer: U+0130 is 2 octets, i̇ 3).
    longest = max(len(str(address).encode("utf-8")), len(address.key.encode("utf-8")))
    if longest > MAX_ADDRESS_OCTETS:
        raise AddressError(f"the address is longer than {MAX_ADDRESS_OCTETS} characters")
    if len(address.key.encode("utf-8")) - len(domain) - 1 > MAX_LOCAL_OCTETS:
        raise AddressError(f"the part before @ is longer than {MAX_LOCAL_OCTETS} characters in lower case")
    return address
