"""The test reader of Thunderbird's "Export for Mobile" format refuses what the specification refuses.

tests/test_android_qr.py trusts tests/support/export_for_mobile.py to say
whether Thunderbird for Android would import a code; these tests hold the
reader to the specification with payloads built here by hand: a valid one,
and the same one broken in one place per rule.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.export_for_mobile import Identity, Refused, Server, read

# One POP3 account with STARTTLS submission, in the specification's layout.
VALID: list[Any] = [
    1,
    [1, 1],
    [1, "pop.example.org", 995, 3, 1, "kim@example.org"],
    [[[0, "smtp.example.org", 587, 2, 1, "kim@example.org"], ["kim@example.org", "Kim"]]],
]


def payload(document: object) -> bytes:
    return json.dumps(document).encode()


def test_a_valid_payload_is_read_field_by_field() -> None:
    export = read(payload(VALID))
    assert (export.sequence_number, export.sequence_end) == (1, 1)
    [account] = export.accounts
    assert account.incoming == Server(
        "POP3", "pop.example.org", 995, "Tls", "PasswordCleartext", "kim@example.org", None, 6
    )
    assert account.account_name is None
    [group] = account.outgoing
    assert group.server == Server(
        "SMTP", "smtp.example.org", 587, "AlwaysStartTls", "PasswordCleartext", "kim@example.org", None, 6
    )
    assert group.identities == (Identity("kim@example.org", "Kim"),)


def test_optional_account_name_and_password_are_read_and_empty_ones_mean_absent() -> None:
    document = copy.deepcopy(VALID)
    document[2] += ["Work", "secret"]
    document[3][0][0].append("")
    [account] = read(payload(document)).accounts
    assert (account.account_name, account.incoming.password, account.incoming.elements) == ("Work", "secret", 8)
    assert account.outgoing[0].server.password is None


def test_two_accounts_in_one_code() -> None:
    document = copy.deepcopy(VALID)
    document += copy.deepcopy(VALID[2:])
    assert len(read(payload(document)).accounts) == 2


def _set(path: tuple[int, ...], value: object) -> Callable[[list[Any]], None]:
    def change(document: list[Any]) -> None:
        node = document
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return change


def _append(path: tuple[int, ...], value: object) -> Callable[[list[Any]], None]:
    def change(document: list[Any]) -> None:
        node = document
        for step in path:
            node = node[step]
        node.append(value)

    return change


INCOMING, OUTGOING, IDENTITY = (2,), (3, 0, 0), (3, 0, 1)
BROKEN: dict[str, Callable[[list[Any]], None]] = {
    "format version 2": _set((0,), 2),
    "format version as a string": _set((0,), "1"),
    "format version as true": _set((0,), True),
    "sequence number 0": _set((1, 0), 0),
    "sequence past its end": _set((1, 0), 2),
    "an extra miscellaneous value": _append((1,), 0),
    "an account without outgoing servers": lambda d: d.pop(),
    "no outgoing server groups": _set((3,), []),
    "incoming protocol 2": _set((*INCOMING, 0), 2),
    "outgoing protocol 1": _set((*OUTGOING, 0), 1),
    "non-ASCII host name": _set((*INCOMING, 1), "pöp.example.org"),
    "host name with a space": _set((*INCOMING, 1), "pop example.org"),
    "host name label over 63": _set((*OUTGOING, 1), "a" * 64 + ".example.org"),
    "port 0": _set((*INCOMING, 2), 0),
    "port 65536": _set((*OUTGOING, 2), 65536),
    "port as a string": _set((*INCOMING, 2), "995"),
    "security 1 (reserved)": _set((*INCOMING, 3), 1),
    "security 4": _set((*OUTGOING, 3), 4),
    "authentication GSSAPI": _set((*INCOMING, 4), 3),
    "authentication NTLM": _set((*OUTGOING, 4), 4),
    "authentication 7": _set((*INCOMING, 4), 7),
    "user name with a line break": _set((*INCOMING, 5), "kim\n@example.org"),
    "user name missing": lambda d: d[2].pop(),
    "account name with a line break": _append(INCOMING, "Work\r"),
    "an element after the password": lambda d: d[2].extend(["Work", "", 1]),
    "outgoing password with a line break": _append(OUTGOING, "a\nb"),
    "no identity": lambda d: d[3][0].pop(),
    "identity with a quoted local part": _set((*IDENTITY, 0), '"kim lee"@example.org'),
    "identity with a non-ASCII address": _set((*IDENTITY, 0), "kïm@example.org"),
    "identity with an address literal": _set((*IDENTITY, 0), "kim@[192.0.2.1]"),
    "identity local part over 64": _set((*IDENTITY, 0), "k" * 65 + "@example.org"),
    "identity address over 254": _set((*IDENTITY, 0), "k@" + ("d" * 60 + ".") * 5 + "org"),
    "identity with an empty dot-atom": _set((*IDENTITY, 0), "kim..lee@example.org"),
    "identity display name null": _set((*IDENTITY, 1), None),
    "identity display name with a line break": _set((*IDENTITY, 1), "Kim\nLee"),
    "identity with an extra element": _append(IDENTITY, "x"),
}


@pytest.mark.parametrize("change", list(BROKEN.values()), ids=list(BROKEN))
def test_each_broken_rule_is_refused(change: Callable[[list[Any]], None]) -> None:
    document = copy.deepcopy(VALID)
    change(document)
    with pytest.raises(Refused):
        read(payload(document))


@pytest.mark.parametrize("raw", [b"", b"{}", b"[1]", b"\xff[1]", b"not json"])
def test_what_is_not_a_payload_is_refused(raw: bytes) -> None:
    with pytest.raises(Refused):
        read(raw)
