"""The gate: every combination of switches against every shape of server list."""

from __future__ import annotations

import pytest

from autoconfig.policy import offer
from autoconfig.store import Switches
from autoconfig.values import Server, Servers

IMAP = Server("imap", "imap.example.net", 993, "SSL")
IMAP_STARTTLS = Server("imap", "imap.example.net", 143, "STARTTLS")
POP = Server("pop3", "pop.example.net", 995, "SSL")
SMTP = Server("smtp", "smtp.example.net", 465, "SSL")
SUBMISSION = Server("smtp", "smtp.example.net", 587, "STARTTLS")

FULL = Servers(imap=(IMAP, IMAP_STARTTLS), pop3=(POP,), smtp=(SMTP, SUBMISSION))
IMAP_ONLY_ISP = Servers(imap=(IMAP,), pop3=(), smtp=(SMTP,))

CASES = [
    # switches,                 servers,        incoming shown,          smtp shown
    (Switches(False, False), FULL, (), ()),
    (Switches(True, False), FULL, (IMAP, IMAP_STARTTLS), (SMTP, SUBMISSION)),
    (Switches(False, True), FULL, (POP,), (SMTP, SUBMISSION)),
    (Switches(True, True), FULL, (IMAP, IMAP_STARTTLS, POP), (SMTP, SUBMISSION)),
    (Switches(False, False), IMAP_ONLY_ISP, (), ()),
    (Switches(True, False), IMAP_ONLY_ISP, (IMAP,), (SMTP,)),
    # POP enabled by the user, but the ISP runs no POP server: nothing to show.
    (Switches(False, True), IMAP_ONLY_ISP, (), ()),
    (Switches(True, True), IMAP_ONLY_ISP, (IMAP,), (SMTP,)),
]


@pytest.mark.parametrize(("switches", "servers", "incoming", "outgoing"), CASES)
def test_only_enabled_protocols_are_offered(
    switches: Switches, servers: Servers, incoming: tuple[Server, ...], outgoing: tuple[Server, ...]
) -> None:
    result = offer(switches, servers)
    assert result.incoming == incoming
    assert result.outgoing == outgoing
    assert result.declined == (not incoming)
    if not switches.imap:
        assert "imap" not in result.protocols
    if not switches.pop:
        assert "pop3" not in result.protocols


def test_imap_is_offered_before_pop() -> None:
    protocols = [s.protocol for s in offer(Switches(imap=True, pop=True), FULL).incoming]
    assert protocols == sorted(protocols, key=["imap", "pop3"].index)


def test_unknown_account_is_the_all_off_account() -> None:
    assert offer(Switches(), FULL) == offer(Switches(imap=False, pop=False), FULL)
