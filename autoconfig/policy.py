"""The one gate: which servers an account may be shown.

Every client format renders an ``Offer`` and nothing else, so the rule
"a protocol the user has not enabled is never advertised" is enforced in
this file alone.  SMTP comes only with an incoming protocol: a document
with submission but no IMAP/POP is rejected by clients anyway, and would
only tell a stranger that the address is special.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from .address import Address
from .values import Provider, Server, Servers, Switches


@dataclass(frozen=True)
class Offer:
    """The servers one account may see: incoming in preference order (IMAP first), then SMTP."""

    incoming: tuple[Server, ...] = ()
    outgoing: tuple[Server, ...] = ()
    # Renderers keep one template per offer; the hash of every server in it
    # is worked out once here, not on each request's cache lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.incoming, self.outgoing)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def declined(self) -> bool:
        return not self.incoming

    @property
    def protocols(self) -> frozenset[str]:
        return frozenset(server.protocol for server in self.incoming)


DECLINED = Offer()


@dataclass(frozen=True)
class Decision:
    """What one request is answered with: the mailbox, its brand, and what the gate lets it see.

    Every renderer takes this and nothing else (``autoconfig.formats``), so
    no document can be written from another brand's names or servers.
    """

    address: Address
    offer: Offer
    provider: Provider

    @property
    def domains(self) -> tuple[str, ...]:
        """The domains a document lists: the address's own first, then the brand's."""
        domains = self.provider.domains
        return domains if self.address.domain in domains else (self.address.domain, *domains)


def offer(switches: Switches, servers: Servers) -> Offer:
    """What ``switches`` allow of ``servers``.  Unknown accounts arrive here as all-off."""
    incoming = (servers.imap if switches.imap else ()) + (servers.pop3 if switches.pop else ())
    if not incoming:
        return DECLINED
    return Offer(incoming=incoming, outgoing=servers.smtp)


def offer_table(servers: Servers) -> Mapping[Switches, Offer]:
    """``offer`` for every possible value of the switches, worked out once per config.

    A request then picks its row instead of building an ``Offer``; the rows
    come from ``offer`` itself, so this file stays the only gate.
    """
    every = (Switches(*values) for values in itertools.product((False, True), repeat=len(fields(Switches))))
    return {switches: offer(switches, servers) for switches in every}
