"""Addresses from the network: one account per address however it is spelled,
and a clear refusal for anything that is not an address."""

from __future__ import annotations

import pytest

from autoconfig.address import AddressError, parse_address


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("alice@example.net", "alice@example.net"),
        ("Alice@EXAMPLE.net", "alice@example.net"),
        ("ALICE@Example.Net", "alice@example.net"),
        ("first.last+tag@example.net", "first.last+tag@example.net"),
        ("o'brien@example.net", "o'brien@example.net"),
        ("user@Bücher.example", "user@xn--bcher-kva.example"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("jörg@example.net", "jörg@example.net"),
        ("a" * 64 + "@example.net", "a" * 64 + "@example.net"),
    ],
)
def test_valid_addresses_normalise_to_one_key(given: str, key: str) -> None:
    assert parse_address(given).key == key


LONG_DOMAIN = ".".join(["a" * 60] * 4) + ".net"  # 249 characters of domain

INVALID = {
    "missing": None,
    "empty": "",
    "no at": "alice.example.net",
    "two at": "alice@bob@example.net",
    "empty local part": "@example.net",
    "empty domain": "alice@",
    "local part over 64": "a" * 65 + "@example.net",
    "address over 254": "a@" + LONG_DOMAIN + "x" * 10,
    "NUL": "alice\x00@example.net",
    "newline": "alice@example.net\r\nX-Injected: 1",
    "tab": "al\tice@example.net",
    "space": "al ice@example.net",
    "DEL": "alice\x7f@example.net",
    "right-to-left override": "alice\u202e@example.net",
    "zero-width space": "ali\u200bce@example.net",
    "quoted local part": '"alice smith"@example.net',
    "angle brackets": "<alice>@example.net",
    "markup": "<script>@example.net",
    "double dot": "alice..smith@example.net",
    "leading dot": ".alice@example.net",
    "IP literal": "alice@[192.0.2.1]",
    "bare IP": "alice@192.0.2.1",
    "single label": "alice@localhost",
    "underscore domain": "alice@exa_mple.net",
    "trailing dot": "alice@example.net.",
    "label over 63": "alice@" + "a" * 64 + ".net",
    "hyphen label": "alice@-example.net",
    "invalid IDN": "alice@xn--zz.example",
    "disallowed IDN code point": "alice@\u2665\ufe0f.example",
    "huge": "a" * 5000 + "@example.net",
}


@pytest.mark.parametrize("given", list(INVALID.values()), ids=list(INVALID))
def test_invalid_addresses_are_refused_with_a_reason(given: str | None) -> None:
    with pytest.raises(AddressError) as error:
        parse_address(given)
    message = str(error.value)
    assert message
    # The reason never echoes the input back.
    if given:
        assert given not in message
