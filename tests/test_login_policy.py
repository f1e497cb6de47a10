"""``WebmailNetworks``, the fast form of ``from_webmail`` the Dovecot endpoint uses, gives
``from_webmail``'s answer for every peer Dovecot could send, well-formed or not."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from autoconfig.login_policy import NotAnAddress, WebmailNetworks, from_webmail

NETWORKS = [ip_network(n) for n in ("192.0.2.10/32", "198.51.100.0/24", "2001:db8:0:1::/64", "fe80::/64")]
PEERS = [
    "",
    "192.0.2.10",
    "192.0.2.11",
    "198.51.100.7",
    "198.51.101.7",
    "::ffff:192.0.2.10",  # an IPv4 client on a dual-stack socket
    "::FFFF:198.51.100.200",
    "::ffff:203.0.113.1",
    "::192.0.2.10",  # IPv4-compatible, not mapped: an IPv6 address
    "2001:db8:0:1::25",
    "2001:DB8:0:1:ffff:ffff:ffff:ffff",
    "2001:db8:0:2::1",
    "::1",
    "127.0.0.1",
    "fe80::1%eth0",  # a zone: inet_pton cannot read it, ip_address can
    "fe80::1",
    "0.0.0.0",
    "255.255.255.255",
    # Not addresses: both refuse them.
    "01.2.3.4",
    "192.0.2.010",
    "1.2.3",
    "0x1.2.3.4",
    "192.0.2.10 ",
    " 192.0.2.10",
    "192.0.2.10\x00",
    "192.0.2.10/32",
    "2001:db8::1::2",
    "localhost",
    "é.1.2.3",
    "::ffff:999.1.2.3",
]


def reference(peer: str) -> bool | type[NotAnAddress]:
    try:
        return from_webmail(peer, NETWORKS)
    except NotAnAddress:
        return NotAnAddress


@pytest.mark.parametrize("peer", PEERS)
def test_the_fast_matcher_answers_as_from_webmail(peer: str) -> None:
    matcher = WebmailNetworks(NETWORKS)
    expected = reference(peer)
    if expected is NotAnAddress:
        with pytest.raises(NotAnAddress):
            matcher.contains(peer)
    else:
        assert matcher.contains(peer) is expected


def test_the_matcher_knows_whether_it_has_networks() -> None:
    assert not WebmailNetworks([]) and WebmailNetworks(NETWORKS)
    assert WebmailNetworks([]).contains("192.0.2.10") is False
