"""Thunderbird's ``clientConfig`` v1.1 document (also read by K-9, Evolution,
KMail, FairEmail and Delta Chat).

Thunderbird drops the whole document if any required element is missing,
so every server gets all five of hostname, port, socketType,
authentication and username.  User names are Thunderbird's placeholders,
which keeps the document free of anything the client sent.
"""

from __future__ import annotations

from functools import lru_cache

from lxml import etree
from lxml.builder import E

from ..policy import Decision, Offer
from ..spec import CLIENTCONFIG_VERSION, SETUP_PATH, THUNDERBIRD_SERVER_TYPES, USERNAME_PLACEHOLDERS
from ..values import Provider, Server


def declined_text(declined_message: str, public_url: str) -> str:
    """The plain text of the 404 that replaces the document (Thunderbird shows no body; admins'
    curl and the CLI do).  It names the setup page without an address: the same bytes for
    all-off, unknown and address-less requests, and the way to a phone's QR code."""
    return f"{declined_message} For a phone, including a QR code for Thunderbird for Android: {public_url}{SETUP_PATH}"


def _server(tag: str, server: Server) -> etree._Element:
    element: etree._Element = E(
        tag,
        E.hostname(server.host),
        E.port(str(server.port)),
        E.socketType(server.socket),
        E.authentication(server.authentication),
        E.username(USERNAME_PLACEHOLDERS[server.username]),
        type=THUNDERBIRD_SERVER_TYPES[server.protocol],
    )
    return element


def render(decision: Decision) -> bytes:
    """The document for an offer the policy gate allowed; a declined offer has no document."""
    return _document(decision.offer, decision.provider, decision.domains)


# The document depends only on its arguments (no address: user names are
# placeholders), so each distinct offer is built once per worker.  Bounded,
# because hosted customer domains make the domain list vary.
@lru_cache(maxsize=1024)
def _document(offer: Offer, provider: Provider, domains: tuple[str, ...]) -> bytes:
    if offer.declined:
        raise ValueError("a declined offer has no clientConfig document")
    document = E.clientConfig(
        E.emailProvider(
            *(E.domain(domain) for domain in domains),
            E.displayName(provider.display_name),
            E.displayShortName(provider.short_name),
            *(_server("incomingServer", server) for server in offer.incoming),
            *(_server("outgoingServer", server) for server in offer.outgoing),
            E.documentation(E.descr("Mail settings and the POP/IMAP switches", lang="en"), url=provider.webmail_url),
            id=provider.id,
        ),
        version=CLIENTCONFIG_VERSION,
    )
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8", pretty_print=True)
