"""JSON request bodies: one reader for the admin API and Dovecot's auth-policy endpoint.

Both endpoints take one small JSON object, and both must answer every other
body with a 4xx that says what is wrong, never a 5xx.  Python's ``json``
recurses once per nesting level, so about a thousand ``[`` in a 4 KiB body
raise ``RecursionError``, and how deep it gets before that depends on the
stack the request already uses.  The depth is therefore measured on the raw
bytes before anything is parsed, in linear time, and anything deeper than
the bodies these endpoints need is refused by name.

Duplicate names are refused too: ``{"imap": false, "imap": true}`` means
whatever the parser's last-wins rule says, and a caller who sends it has a
bug we should show, not guess around.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

from flask import request

from ..errors import BadRequest, UnsupportedMediaType
from ..spec import MAX_JSON_DEPTH
from .context import read_body

JSON_MIMETYPE = "application/json"
_PLAIN_CONTENT_TYPES = frozenset({JSON_MIMETYPE, f"{JSON_MIMETYPE}; charset=utf-8"})

# Every byte except the four brackets, for bytes.translate(None, delete).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Opening brackets become 2 and closing ones 0, so "byte - 1" is the change in depth.
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class _DuplicateName(ValueError):
    pass


def nesting_depth(raw: bytes) -> int:
    """How deeply ``raw`` nests arrays and objects, not counting brackets inside strings.

    Escapes are removed first (pairs of backslashes, then escaped quotes),
    so every remaining quote opens or closes a string, and what lies between
    the odd and the even quotes is string content.  Bytes that are not valid
    JSON get some number back, and the parser refuses them afterwards.
    """
    outside = b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS).translate(_DEPTH_STEP)
    return max(accumulate(step - 1 for step in brackets), default=0)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise _DuplicateName
    return data


# One decoder for every body: json.loads with a hook builds a new one per call (a tenth of
# Dovecot's JSON handling, cProfile).  A JSONDecoder keeps no state between calls.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique)


def parse_object(raw: bytes, example: str = "") -> dict[str, Any]:
    """``raw`` as a JSON object, or ``BadRequest`` naming what is wrong with it."""
    # Fewer opening brackets than the limit cannot nest deeper: the common body skips the scan.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and nesting_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"the body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = raw.decode("utf-8")  # RFC 8259 section 8.1; json.loads would also guess UTF-16 and UTF-32
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid JSON: it is not UTF-8") from None
    try:
        data: Any = _DECODER.decode(text)
    except _DuplicateName:
        raise BadRequest("the body names the same field twice") from None
    except ValueError:  # JSONDecodeError, and integers too long to convert
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object{' like ' + example if example else ''}")
    return data


def read_object(limit: int, example: str = "") -> dict[str, Any]:
    """The request's body as a JSON object of at most ``limit`` bytes.

    415 for another content type, 413 when the body is larger than
    ``limit`` (declared or not: a chunked body is read no further than
    ``limit + 1`` bytes), 400 for anything that is not one JSON object.
    """
    # What Dovecot and the webmail send is taken as it is; anything else goes through werkzeug's parsing.
    if request.environ.get("CONTENT_TYPE") not in _PLAIN_CONTENT_TYPES and request.mimetype != JSON_MIMETYPE:
        raise UnsupportedMediaType(f"send the body as Content-Type: {JSON_MIMETYPE}")
    return parse_object(read_body(limit), example)
