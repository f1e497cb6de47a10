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

``LoginGate.verdict`` is the whole decision for one login; the Dovecot
blueprint (``autoconfig.web.dovecot``) only reads the request and writes the
answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from socket import AF_INET, AF_INET6, inet_pton
from typing import TYPE_CHECKING

from .errors import BadRequest, NotServed
from .logs import loggable
from .policy import Offer

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)

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


# The attribute carrying Dovecot's %{real_rip} (2.4: %{real_remote_ip}): the peer of the connection itself.
REAL_REMOTE = "real_remote"


class LoginGate:
    """One login's verdict, from its name, its protocol and the connection's real peer.

    ``real_remote`` is the request's value as Dovecot sent it (``None`` when
    it sent none); it is read only when webmail networks are configured.
    """

    def __init__(self, service: Service, webmail: WebmailNetworks) -> None:
        self.service = service
        self.webmail = webmail

    def verdict(self, login: str, protocol: str, real_remote: object) -> Verdict:
        if protocol not in GATED_PROTOCOLS:
            return OTHER_PROTOCOL  # no store lookup: a store outage never touches SMTP or sieve logins
        if self._from_webmail(real_remote):
            return WEBMAIL  # no store lookup either: the webmail works through a store outage
        try:
            decision = self.service.decide(login)
        except NotServed:
            return NOT_OURS
        except BadRequest:
            provider = self.service.provider_named(login, look_up=True)
            if provider is None:
                return NOT_OURS
            # A mailbox of ours whose name this service cannot key (john..smith@, alice.@, a@b@,
            # a local part over 64 octets): Dovecot's default auth_username_chars lets such logins
            # in, and "no opinion" would let them in with every switch off.  No switch can ever be
            # turned on for it, so it is judged as an account with every switch off.
            log.warning(
                "dovecot auth-policy: %s login %s is in a served domain but not an address this service "
                "can hold switches for; refused",
                loggable(protocol),
                loggable(login),
            )
            return judge(self.service.nothing_enabled(provider), protocol, provider.webmail_url)
        return judge(decision.offer, protocol, decision.provider.webmail_url)

    def _from_webmail(self, peer: object) -> bool:
        """Only the connection's own peer counts: ``remote`` (``%{rip}``) is what a webmail in
        Dovecot's login_trusted_networks forwarded through IMAP ID, and must neither grant
        nor take away the exemption."""
        if not self.webmail:
            return False
        if not isinstance(peer, str):
            raise BadRequest(
                f"the field {REAL_REMOTE} must be a string when [dovecot] webmail_networks is set; "
                f"include {REAL_REMOTE}=%{{real_rip}} (Dovecot 2.4: {REAL_REMOTE} = %{{real_remote_ip}}) "
                "in Dovecot's auth_policy_request_attributes"
            )
        try:
            return self.webmail.contains(peer)
        except NotAnAddress:
            raise BadRequest(
                f"the field {REAL_REMOTE} must be an IP address (Dovecot's %{{real_rip}}, in 2.4 %{{real_remote_ip}})"
            ) from None
