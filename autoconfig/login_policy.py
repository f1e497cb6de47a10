"""The login decision Dovecot asks for, derived from the same ``Offer`` the
autoconfig documents render.

A protocol may be logged in to exactly when ``policy.offer`` would advertise
it, so an account's settings document and its login never disagree: a POP
switch that is on still refuses POP logins when the ISP runs no POP server,
because no document would ever show one.  Only IMAP and POP3 are gated;
submission, sieve and the rest belong to every account.

One kind of login is never gated: the webmail's own.  The webmail reads mail
over IMAP as the user, and it is where the user turns the switches on, so
gating it would lock a new customer (everything off) out of the very page
that lets them in.  It is recognised by the connection's real peer address
alone (Dovecot's ``%{real_rip}``), never by an address a client forwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from socket import AF_INET, AF_INET6, inet_pton

from .policy import Offer

# Dovecot's service name (%s in auth_policy_request_attributes) -> Offer protocol.
GATED_PROTOCOLS = {"imap": "imap", "pop3": "pop3"}
DISPLAY_NAMES = {"imap": "IMAP", "pop3": "POP"}

# Dovecot's auth-policy answer: -1 refuses the login; 0 lets it through.
REJECT = -1
ACCEPT = 0


@dataclass(frozen=True)
class Verdict:
    """What to answer Dovecot, and the metric/log label for it."""

    decision: str  # allow | reject | other_protocol | not_ours
    status: int
    message: str = ""


OTHER_PROTOCOL = Verdict("other_protocol", ACCEPT)
NOT_OURS = Verdict("not_ours", ACCEPT)
WEBMAIL = Verdict("webmail", ACCEPT)


class NotAnAddress(ValueError):
    """The peer address Dovecot sent is not an IP address."""


def from_webmail(peer: str, networks: Iterable[IPv4Network | IPv6Network]) -> bool:
    """Whether the connection's real peer lies in one of the webmail's networks.

    ``peer`` is ``%{real_rip}``: empty for a login that came over no IP
    connection, which is never the webmail.  An IPv4 client on a dual-stack
    socket arrives as ``::ffff:a.b.c.d`` and is compared as IPv4.
    """
    if not peer:
        return False
    try:
        address: IPv4Address | IPv6Address = ip_address(peer)
    except ValueError:
        raise NotAnAddress(peer) from None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


_V4_MAPPED = bytes(10) + b"\xff\xff"


class WebmailNetworks:
    """``from_webmail`` for one set of networks, the same answers at a fraction of the cost.

    Every gated login asks it.  ``ip_address`` parses in Python, about
    26,000 instructions per peer (callgrind); here the networks are worked
    out once as (prefix, mask) integers and the peer is read by
    ``socket.inet_pton`` in C.  inet_pton is as strict as ``ip_address``
    (no leading zeros, no short forms); what it cannot read at all (an
    IPv6 zone, or garbage) goes to ``from_webmail`` itself.
    """

    def __init__(self, networks: Iterable[IPv4Network | IPv6Network]) -> None:
        self.networks = tuple(networks)
        self._v4 = tuple((int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4)
        self._v6 = tuple((int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 6)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, peer: str) -> bool:
        """``from_webmail(peer, networks)``; ``NotAnAddress`` likewise."""
        if not peer:
            return False
        try:
            packed = inet_pton(AF_INET, peer)
            ranges = self._v4
        except (OSError, ValueError):
            try:
                packed = inet_pton(AF_INET6, peer)
            except (OSError, ValueError):
                return from_webmail(peer, self.networks)
            if packed[:12] == _V4_MAPPED:
                packed, ranges = packed[12:], self._v4
            else:
                ranges = self._v6
        value = int.from_bytes(packed, "big")
        return any(value & mask == prefix for prefix, mask in ranges)


def refusal(protocol: str, webmail_url: str) -> str:
    """The reason the user's mail program shows (IMAP: ``[ALERT] …``, POP3: ``-ERR [AUTH] …``)."""
    name = DISPLAY_NAMES[protocol]
    # The text ends up on one IMAP/POP3 response line: nothing that could end or split it.
    url = "".join(ch for ch in webmail_url if ch.isprintable())
    return f"{name} is turned off for this mailbox. Sign in to webmail at {url} and enable {name}, then try again."


def judge(offer: Offer, protocol: str, webmail_url: str) -> Verdict:
    """Allow ``protocol`` exactly when ``offer`` advertises it; never gate anything but IMAP/POP3."""
    gated = GATED_PROTOCOLS.get(protocol)
    if gated is None:
        return OTHER_PROTOCOL
    if gated in offer.protocols:
        return Verdict("allow", ACCEPT)
    return Verdict("reject", REJECT, refusal(protocol, webmail_url))
