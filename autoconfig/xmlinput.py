"""Parsing XML that anyone on the Internet may send.

libxml2 can be talked into reading local files (external entities), the
network (external DTDs) or gigabytes of memory (nested entities, "billion
laughs").  Clients of this service never need a DTD, so a document type
declaration is refused outright, before libxml2 sees the body, and the
parser itself is also configured to load, resolve and fetch nothing, in case
a declaration slipped past the check.  Only UTF-8 is read: one encoding to
reason about, and it is what every mail client sends.

The caller caps the body size before calling ``parse``; ``huge_tree`` stays
off so libxml2's own limits on depth and text size apply as well.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from lxml import etree

# Markup that only exists to declare a DTD or entities.  XML keywords are
# case-sensitive, but libxml2's recovery paths are not worth trusting on that.
_DECLARATIONS = re.compile(r"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_DECLARED_ENCODING = re.compile(r"""^\ufeff?<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")


class XMLInputError(ValueError):
    """The body is not a document we accept.  The message describes the problem and never quotes the input."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        encoding="utf-8",  # read as UTF-8 whatever the declaration says (checked separately)
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        strip_cdata=True,
        collect_ids=False,
        recover=False,
    )


_local = threading.local()


def _thread_parser() -> etree.XMLParser:
    """One parser per thread: lxml parsers may be reused, but not by two threads at once."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = _parser()
    return parser


def parse(body: bytes) -> etree._Element:
    """The root element of ``body``, or ``XMLInputError``."""
    if not body.strip():
        raise XMLInputError("the request body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise XMLInputError("the request body is not UTF-8") from None
    declared = _DECLARED_ENCODING.match(text)
    if declared and declared.group(1).lower() not in ("utf-8", "utf8"):
        raise XMLInputError("the request declares an encoding other than UTF-8")
    if "<!" in text and _DECLARATIONS.search(text):  # every declaration starts "<!"; most bodies have none
        raise XMLInputError("document type and entity declarations are not accepted")
    try:
        root = etree.fromstring(body, _thread_parser())
    except (etree.XMLSyntaxError, etree.ParserError):
        raise XMLInputError("the request body is not well-formed XML") from None
    docinfo: Any = root.getroottree().docinfo  # lxml-stubs lack DocInfo.doctype
    if docinfo.doctype or docinfo.internalDTD is not None:  # pragma: no cover - refused above
        raise XMLInputError("document type declarations are not accepted")
    return root
