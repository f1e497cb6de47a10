"""One mailbox, one key: the store key is canonical and idempotent (issue 17, class 2).

The key used to be ``NFC(local).lower()``, and for some sequences lowering
an NFC string leaves it no longer NFC, so the key of a key was another key.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from autoconfig.address import AddressError, canonical_local, parse_address
from autoconfig.store.rekey import canonical_key

# Sequences where NFC and lower() disagree: Greek capitals with a combining
# ypogegrammeni (U+0345) or accents, U+0130 before a cedilla, and their parts.
TRICKY = [
    "\u0386\u0345",  # Ά + ypogegrammeni: the old key was ά + U+0345, not NFC
    "\u1fbc",  # ᾼ
    "\u1fb4",  # ᾴ
    "\u03aa\u0301",  # Ϊ + acute
    "\u0130\u0327",  # İ + cedilla: the old key had the marks out of canonical order
    "\u0130",
    "\u0345",
    "\u0307",
    "\u0327",
    "\u0301",
    "\u0313",
    "\u0342",
    "\u03a3",  # Σ (final and non-final sigma)
    "\u00df",  # ß: lower case already; must not become ss
    "\u1e9e",  # ẞ
    "\u212a",  # Kelvin sign: NFC makes it K
    "\u2126",  # Ohm sign
    "\u01c5",  # Dž (title case)
    "\uff41",  # full-width a: NFKC would make it a; the key must not
]
LOCAL_CHARACTERS = st.one_of(
    st.sampled_from(TRICKY),
    st.characters(codec="utf-8", categories=("L", "M", "N")),
    st.sampled_from("abcXYZ019!#$%&'*+/=?^_`{|}~-"),
)
local_parts = st.lists(LOCAL_CHARACTERS, min_size=1, max_size=12).map("".join)


def old_key(local: str) -> str:
    """How releases before schema 2 keyed an address."""
    return unicodedata.normalize("NFC", local).lower()


@settings(max_examples=800, deadline=None)
@given(local=local_parts)
@example(local="\u0386\u0345").via("the issue's Greek example")
@example(local="\u0130\u0327").via("the issue's U+0130 with a cedilla")
def test_one_mailbox_has_one_key_whatever_its_spelling(local: str) -> None:
    try:
        key = parse_address(f"{local}@example.net").key
    except AddressError:
        return  # not an address; the parser's own tests cover refusals
    # Idempotent: the key is itself an accepted address, and its own key.
    again = parse_address(key)
    assert again.key == key
    assert str(again) == key
    assert unicodedata.is_normalized("NFC", key)
    # Canonically equivalent spellings, other letter case in the domain, and the old key's spelling: one key.
    for form in ("NFC", "NFD"):
        assert parse_address(f"{unicodedata.normalize(form, local)}@EXAMPLE.net").key == key
    assert parse_address(f"{local.lower()}@example.net").key == key
    # The migration moves the row the old key wrote to this key.
    assert canonical_key(f"{old_key(local)}@example.net") == key


def _cased_composed_or_combining(char: str) -> bool:
    if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}:
        return False
    changes_case = char.lower() != char or char.upper() != char
    return changes_case or bool(unicodedata.decomposition(char)) or unicodedata.combining(char) > 0


def test_over_every_cased_composed_or_combining_character_one_round_is_enough() -> None:
    """Exhaustive where hypothesis samples: each such code point alone and before the marks that misbehave."""
    interesting = [char for char in map(chr, range(0x80, 0x110000)) if _cased_composed_or_combining(char)]
    assert len(interesting) > 5000
    for char in interesting:
        for marks in ("", "\u0345", "\u0307", "\u0327\u0301", "\u0301\u0345", "\u0313\u0342\u0345"):
            text = unicodedata.normalize("NFC", char + marks)
            once = unicodedata.normalize("NFC", text.lower())
            assert canonical_local(text) == once, ascii(text)
            assert canonical_local(once) == once, ascii(text)


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("\u0386\u0345@example.net", "\u1fb4@example.net"),  # the old key was "\u03ac\u0345"
        ("\u1fb4@example.net", "\u1fb4@example.net"),
        ("\u0130\u0327@example.net", "i\u0327\u0307@example.net"),  # the old key was "i\u0307\u0327"
        ("STRASSE@example.net", "strasse@example.net"),
        ("Stra\u00dfe@example.net", "stra\u00dfe@example.net"),  # ß and ss stay two mailboxes
        ("\uff41lice@example.net", "\uff41lice@example.net"),  # full-width a stays itself
        ("\u212aelvin@example.net", "kelvin@example.net"),  # the Kelvin sign is canonically K
    ],
)
def test_known_spellings(typed: str, key: str) -> None:
    assert parse_address(typed).key == key


def test_a_local_part_whose_lower_case_is_too_long_is_refused() -> None:
    """32 times U+0130 is 64 octets as typed and 96 in lower case: the key would not be an address."""
    with pytest.raises(AddressError, match="in lower case"):
        parse_address("\u0130" * 32 + "@example.net")
    assert parse_address("\u0130" * 21 + "@example.net").key == "i\u0307" * 21 + "@example.net"
