"""Outlook's autodiscover "plain old XML" ([MS-OXDSCLI]): the request it
sends and the two kinds of answer.

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
from ..config import Server
from ..policy import Offer
from ..spec import (
    AUTODISCOVER_BASE_NS,
    OUTLOOK_ENCRYPTION,
    OUTLOOK_PROTOCOL_TYPES,
    OUTLOOK_REQUEST_NS,
    OUTLOOK_RESPONSE_NS,
)

_BASE = ElementMaker(namespace=AUTODISCOVER_BASE_NS, nsmap={None: AUTODISCOVER_BASE_NS})
_OUTLOOK = ElementMaker(namespace=OUTLOOK_RESPONSE_NS, nsmap={None: OUTLOOK_RESPONSE_NS})
_XML_SPACE = " \t\r\n"


class RequestError(ValueError):
    """The body is not an Outlook autodiscover request (answered with error 600).  Safe to show."""


@dataclass(frozen=True)
class Request:
    """What an autodiscover request asks: untrusted text, to go through ``Service.parse`` next."""

    email_address: str
    response_schema: str


def _qname(local: str) -> str:
    return f"{{{OUTLOOK_REQUEST_NS}}}{local}"


_AUTODISCOVER, _REQUEST = _qname("Autodiscover"), _qname("Request")
_FIELDS = {_qname("EMailAddress"): "EMailAddress", _qname("AcceptableResponseSchema"): "AcceptableResponseSchema"}


def read_request(body: bytes) -> Request:
    """The request in ``body``; ``RequestError`` for anything that is not one."""
    try:
        root = xmlinput.parse(body)
    except xmlinput.XMLInputError as exc:
        raise RequestError(str(exc)) from None
    if root.tag != _AUTODISCOVER:
        raise RequestError("the root element must be Autodiscover in the Outlook request namespace")
    # Children by tag, not ``findall``: ElementPath is Python code, and cost
    # about a tenth of the request's parsing under load (bench/).
    requests = list(root.iterchildren(_REQUEST))
    if len(requests) != 1:
        raise RequestError("Autodiscover must contain exactly one Request element")
    found: dict[str, str] = {}
    for element in requests[0]:  # one pass over the children; other elements are allowed and ignored
        local = _FIELDS.get(element.tag)
        if local is None:
            continue
        if local in found:
            raise RequestError(f"the request has more than one {local} element")
        if len(element):
            raise RequestError(f"{local} must contain text only")
        found[local] = (element.text or "").strip(_XML_SPACE)
    for local in _FIELDS.values():
        if local not in found:
            raise RequestError(f"the request has no {local} element in the Outlook request namespace")
    return Request(email_address=found["EMailAddress"], response_schema=found["AcceptableResponseSchema"])


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


def render_settings(offer: Offer, address: Address) -> bytes:
    """The ``Action settings`` answer: one Protocol per server the policy gate allowed."""
    if offer.declined:
        raise ValueError("a declined offer is answered with error 501, not settings")
    template = _settings_template(offer)
    with template.lock:  # one shared tree: fill and serialise without another thread in between
        for element, server in template.login_names:
            element.text = _login_name(server, address)
        return _serialise(template.root)


def render_error(code: str, message: str, provider_id: str, now: datetime) -> bytes:
    """An error answer in the base namespace.

    ``Time`` is the only part that varies between requests; ``Id`` names this
    service (a checksum of the provider id), never the account or the request.
    """
    b = _BASE
    document = b.Autodiscover(
        b.Response(
            b.Error(
                b.ErrorCode(code),
                b.Message(message),
                b.DebugData(),
                Time=now.strftime("%H:%M:%S"),
                Id=format(zlib.crc32(provider_id.encode()), "08X"),
            )
        )
    )
    return _serialise(document)
