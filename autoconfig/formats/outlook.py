"""Outlook's autodiscover "plain old XML" ([MS-OXDSCLI]): the request it
sends and the two kinds of answer; and ActiveSync's autodiscover request
([MS-ASCMD] 2.2.1.1), which only ever gets an error here.

Every protocol carries ``SPA off`` (absent means on, and Outlook then tries
NTLM), ``DomainRequired off`` and an explicit ``Encryption``: ``SSL`` for
implicit TLS, ``TLS`` for STARTTLS.  Without ``Encryption`` Outlook reads
``SSL on`` as implicit TLS and fails against a STARTTLS port.

The answers never contain text the client sent: login names are built from
the validated ``Address``, and error messages are fixed sentences.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from lxml import etree
from lxml.builder import ElementMaker

from .. import xmlinput
from ..address import Address
from ..policy import Decision, Offer
from ..spec import (
    AUTODISCOVER_BASE_NS,
    MOBILESYNC_REQUEST_NS,
    MOBILESYNC_RESPONSE_NS,
    OUTLOOK_ENCRYPTION,
    OUTLOOK_PROTOCOL_TYPES,
    OUTLOOK_REQUEST_NS,
    OUTLOOK_RESPONSE_NS,
)
from ..values import Server

_BASE = ElementMaker(namespace=AUTODISCOVER_BASE_NS, nsmap={None: AUTODISCOVER_BASE_NS})
_OUTLOOK = ElementMaker(namespace=OUTLOOK_RESPONSE_NS, nsmap={None: OUTLOOK_RESPONSE_NS})
_XML_SPACE = " \t\r\n"


class RequestError(ValueError):
    """The body is not an autodiscover request (answered with error 600).  Safe to show.

    ``response_ns`` is the namespace the answer's ``Response`` goes in: the
    mobilesync one once the root showed an ActiveSync request, so the phone
    can read why it was refused.
    """

    def __init__(self, message: str, response_ns: str = AUTODISCOVER_BASE_NS) -> None:
        super().__init__(message)
        self.response_ns = response_ns


@dataclass(frozen=True)
class Request:
    """What an autodiscover request asks: untrusted text, to go through ``Service.parse`` next.

    ``request_ns`` is Outlook's request namespace or ActiveSync's
    ([MS-ASCMD] 2.2.1.1); both carry the same two fields.
    """

    email_address: str
    response_schema: str
    request_ns: str = OUTLOOK_REQUEST_NS

    @property
    def wants_outlook_settings(self) -> bool:
        """Only Outlook asking for Outlook's 2006a schema gets settings; anything else is error 601."""
        return self.request_ns == OUTLOOK_REQUEST_NS and self.response_schema == OUTLOOK_RESPONSE_NS

    @property
    def response_ns(self) -> str:
        """Where an error answer's ``Response`` goes: the mobilesync namespace for an ActiveSync
        request or for anyone asking for that schema (they can read nothing else), else the base one."""
        if self.request_ns == MOBILESYNC_REQUEST_NS or self.response_schema == MOBILESYNC_RESPONSE_NS:
            return MOBILESYNC_RESPONSE_NS
        return AUTODISCOVER_BASE_NS


@dataclass(frozen=True)
class _Names:
    """The qualified names of one request namespace."""

    request_ns: str
    response_ns: str  # of a 600 answer to a malformed request in this namespace
    request: str
    fields: dict[str, str]  # qualified name -> local name


def _names(namespace: str, response_ns: str) -> _Names:
    fields = ("EMailAddress", "AcceptableResponseSchema")
    return _Names(namespace, response_ns, f"{{{namespace}}}Request", {f"{{{namespace}}}{f}": f for f in fields})


_ROOTS = {
    f"{{{OUTLOOK_REQUEST_NS}}}Autodiscover": _names(OUTLOOK_REQUEST_NS, AUTODISCOVER_BASE_NS),
    f"{{{MOBILESYNC_REQUEST_NS}}}Autodiscover": _names(MOBILESYNC_REQUEST_NS, MOBILESYNC_RESPONSE_NS),
}


def read_request(body: bytes) -> Request:
    """The request in ``body``; ``RequestError`` for anything that is not one."""
    try:
        root = xmlinput.parse(body)
    except xmlinput.XMLInputError as exc:
        raise RequestError(str(exc)) from None
    names = _ROOTS.get(root.tag)
    if names is None:
        raise RequestError("the root element must be Autodiscover in the Outlook or ActiveSync request namespace")
    # Children by tag, not ``findall``: ElementPath is Python code, and cost
    # about a tenth of the request's parsing under load (bench/).
    requests = list(root.iterchildren(names.request))
    if len(requests) != 1:
        raise RequestError("Autodiscover must contain exactly one Request element", names.response_ns)
    found: dict[str, str] = {}
    for element in requests[0]:  # one pass over the children; other elements are allowed and ignored
        local = names.fields.get(element.tag)
        if local is None:
            continue
        if local in found:
            raise RequestError(f"the request has more than one {local} element", names.response_ns)
        if len(element):
            raise RequestError(f"{local} must contain text only", names.response_ns)
        found[local] = (element.text or "").strip(_XML_SPACE)
    for local in names.fields.values():
        if local not in found:
            raise RequestError(f"the request has no {local} element in its namespace", names.response_ns)
    return Request(found["EMailAddress"], found["AcceptableResponseSchema"], names.request_ns)


def _login_name(server: Server, address: Address) -> str:
    return address.local if server.username == "local-part" else str(address)


def _protocol(server: Server) -> etree._Element:
    o = _OUTLOOK
    element: etree._Element = o.Protocol(
        o.Type(OUTLOOK_PROTOCOL_TYPES[server.protocol]),
        o.Server(server.host),
        o.Port(str(server.port)),
        o.DomainRequired("off"),
        o.LoginName(),  # filled per address in render_settings
        o.SPA("off"),
        o.SSL("on"),
        o.Encryption(OUTLOOK_ENCRYPTION[server.socket]),
        o.AuthRequired("on"),
    )
    return element


def _serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


@dataclass(frozen=True)
class _Template:
    root: etree._Element
    login_names: tuple[tuple[etree._Element, Server], ...]  # each LoginName element and its server
    lock: threading.Lock


@lru_cache(maxsize=64)
def _settings_template(offer: Offer) -> _Template:
    """Everything of the answer but the login names, built once per distinct offer.

    Building with ElementMaker was half of the request's cost (profiled), and
    copying the finished tree a tenth; each request now sets the login names
    in this one tree and serialises it, under its lock.
    """
    o = _OUTLOOK
    servers = (*offer.incoming, *offer.outgoing)
    document: etree._Element = _BASE.Autodiscover(
        o.Response(
            o.Account(
                o.AccountType("email"),
                o.Action("settings"),
                *(_protocol(server) for server in servers),
            )
        )
    )
    login_names = tuple(zip(document.iter(f"{{{OUTLOOK_RESPONSE_NS}}}LoginName"), servers, strict=True))
    return _Template(document, login_names, threading.Lock())


def render(decision: Decision) -> bytes:
    """The ``Action settings`` answer: one Protocol per server the policy gate allowed."""
    offer, address = decision.offer, decision.address
    if offer.declined:
        raise ValueError("a declined offer is answered with error 501, not settings")
    template = _settings_template(offer)
    with template.lock:  # one shared tree: fill and serialise without another thread in between
        for element, server in template.login_names:
            element.text = _login_name(server, address)
        return _serialise(template.root)


_ERROR_MAKERS = {
    namespace: ElementMaker(namespace=namespace, nsmap={None: namespace})
    for namespace in (AUTODISCOVER_BASE_NS, MOBILESYNC_RESPONSE_NS)
}


def server_id(public_url: str) -> str:
    """``Error/@Id``: "an unsigned integer that uniquely identifies the server" ([MS-ASCMD] 2.2.3.63).

    A CRC-32 of this service's public URL, in decimal: the same for every
    brand, account and request, so it tells nothing about any of them.
    """
    return str(zlib.crc32(public_url.encode()))


def render_error(
    code: str, message: str, public_url: str, now: datetime, response_ns: str = AUTODISCOVER_BASE_NS
) -> bytes:
    """An error answer: ``Autodiscover`` in the base namespace, ``Response`` and its ``Error`` in ``response_ns``.

    Outlook reads errors in the base namespace ([MS-OXDSCLI] 2.2.4.1.1.3);
    ActiveSync reads them in the mobilesync response namespace, as the
    example of [MS-ASCMD] 4.2.x (error 600/601) shows.  ``Time`` is the only
    part that varies between requests.
    """
    e = _ERROR_MAKERS[response_ns]
    document = _BASE.Autodiscover(
        e.Response(
            e.Error(
                e.ErrorCode(code),
                e.Message(message),
                e.DebugData(),
                Time=now.strftime("%H:%M:%S"),
                Id=server_id(public_url),
            )
        )
    )
    return _serialise(document)
