"""Where a request in the buffering worker's buffer ends, decided apart from its sockets.

The worker (autoconfig/worker.py) hands a request to gunicorn only once all
of it has arrived, so from the bytes buffered so far it must tell whether a
whole request is there, and it must tell it as gunicorn's parser will, which
then reads the same bytes.  Handing over a request gunicorn finds unfinished
holds a worker until the read deadline; waiting on one gunicorn finds whole
makes a valid request time out, and misplaces the start of the next
(pipelining, keep-alive).  tests/test_worker_framing.py holds this module to
gunicorn's parser, byte for byte.

Only what decides where a request ends is judged here (RFC 9112, section 6),
exactly as gunicorn judges it; what gunicorn refuses for its framing is
REFUSE, handed over at once for gunicorn to answer.  A head gunicorn refuses
for another reason (its method, its target, a field's syntax, its limits)
waits for the body it declares like any other and is refused once that has
arrived, or gets 408 at the deadline: a buffer held, never a worker.
"""

from __future__ import annotations

import enum
import re

# Most of a request held while it arrives.  A body longer than MAX_BODY (the
# largest a mail client sends: an Outlook request at the default [outlook]
# max_body_bytes) is handed over at that point and its rest read under the
# same deadline.  The endpoints that take larger bodies (the Dovecot policy
# endpoint, the admin API) check their caller's secret before they read one.
# A head longer than MAX_HEAD is refused (431) without a worker: anyone can
# send one, and handed over it would hold the worker until the deadline
# (gunicorn's own limits, 50 fields of 8 KiB, allow far more than this).
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024
# gunicorn's limit on a chunk-size line is its limit_request_field_size, 8190 unless configured.
DEFAULT_CHUNK_LINE_LIMIT = 8190


class Verdict(enum.Enum):
    WAIT = "wait"  # not all of it is here yet
    COMPLETE = "complete"  # all of it is here, ending at ``RequestFraming.end``
    REFUSE = "refuse"  # gunicorn's parser refuses it from what is here: hand it over to be answered
    OVERSIZE = "oversize"  # a body over MAX_BODY: hand it over, gunicorn reads the rest under the deadline
    HEAD_TOO_LARGE = "head too large"  # over MAX_HEAD, ended or not: 431 from the loop


# Any number of hex digits, leading zeros included, as gunicorn takes them: a size refused
# here that gunicorn accepted would hand over a request whose body had not arrived.
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
# RFC 9112 section 7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_EXT = re.compile(rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*")
_CODINGS = frozenset((b"chunked", b"identity", b"gzip", b"deflate", b"compress"))

_HEAD, _LENGTH, _CHUNKS, _TRAILERS = range(4)


class RequestFraming:
    """One request's framing, resumed as more of it arrives: ``advance`` each time the buffer grows.

    Searches resume where the last one stopped, so a request trickling in
    byte by byte costs linear time.
    """

    __slots__ = ("_chunk_line_limit", "_phase", "_scan", "_trailers", "asks_continue", "end", "head_end")

    def __init__(self, chunk_line_limit: int = DEFAULT_CHUNK_LINE_LIMIT) -> None:
        self._chunk_line_limit = chunk_line_limit
        self._phase = _HEAD
        self._scan = 0  # where the search for the head's end, a chunk, or the trailers' end resumes
        self._trailers = 0  # where the trailer section starts, once the last chunk is here
        self.head_end = 0
        self.end = 0  # where the request ends: once COMPLETE, or from the head on for a Content-Length
        # Set by the call that framed a head asking for 100-continue with none of its body here:
        # the client waits for that answer before it sends the body.
        self.asks_continue = False

    def advance(self, data: bytes | bytearray) -> Verdict:
        """The verdict on ``data``, everything buffered so far (the same buffer, only ever longer)."""
        self.asks_continue = False
        if self._phase == _HEAD:
            verdict = self._head(data)
            if verdict is not None:
                return verdict
        if self._phase == _LENGTH:
            if len(data) >= self.end:
                return Verdict.COMPLETE
        else:
            verdict = self._chunks(data)
            if verdict is not None:
                return verdict
        return Verdict.OVERSIZE if len(data) - self.head_end > MAX_BODY else Verdict.WAIT

    def _head(self, data: bytes | bytearray) -> Verdict | None:
        end = data.find(b"\r\n\r\n", max(0, self._scan - 3))
        if end < 0:
            if len(data) > MAX_HEAD:
                return Verdict.HEAD_TOO_LARGE
            if _bare_lf(data, self._scan):
                return Verdict.REFUSE  # gunicorn refuses the head at once rather than wait for its end
            self._scan = len(data)
            return Verdict.WAIT
        self.head_end = end + 4
        if self.head_end > MAX_HEAD:
            # Refused however it arrived: whether its end came in the read that took it past
            # MAX_HEAD (one write) or after (trickled) is the network's doing, not the client's.
            return Verdict.HEAD_TOO_LARGE
        head = bytes(data[: self.head_end])
        if head.count(b"\n") != head.count(b"\r\n"):
            return Verdict.REFUSE  # every line of a head ends in CRLF, or gunicorn refuses it
        lower = head.lower()
        start = 2 if lower.startswith(b"\r\n") else 0  # one empty line before the request is ignored
        line_end = lower.find(b"\r\n", start)
        http10 = lower.endswith(b" http/1.0", start, line_end)
        fields = lower[line_end:]
        lengths = _values(fields, b"content-length")
        codings = _values(fields, b"transfer-encoding")
        expect = lower.endswith(b"http/1.1", start, line_end) and _values(fields, b"expect")[:1] == [b"100-continue"]
        if codings:
            # Transfer-Encoding with Content-Length is a smuggling attempt, chunked in HTTP/1.0 has no
            # sure end (section 6.1), and a coding list not ending in chunked has no length at all.
            if lengths or http10 or not _chunked(codings):
                return Verdict.REFUSE
            self._phase, self._scan = _CHUNKS, self.head_end
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return Verdict.REFUSE  # a length given twice ("1, 2" included) or not a number
            length = int(lengths[0])
            self._phase, self.end = _LENGTH, self.head_end + length
            if length > MAX_BODY:
                return Verdict.OVERSIZE
            expect = expect and length > 0
        else:
            self._phase, self.end = _LENGTH, self.head_end  # a request without either has no body
            expect = False
        self.asks_continue = expect and len(data) == self.head_end
        return None

    def _chunks(self, data: bytes | bytearray) -> Verdict | None:
        pos = self._scan
        while self._phase == _CHUNKS:
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                if len(data) - pos > self._chunk_line_limit:
                    return Verdict.REFUSE
                self._scan = pos
                return None
            size = _chunk_size(bytes(data[pos:line_end]))
            if size is None:
                return Verdict.REFUSE
            if size == 0:
                self._phase = _TRAILERS
                self._trailers = pos = line_end + 2
                break
            following = line_end + 2 + size
            if len(data) < following + 2:
                self._scan = pos
                return None
            if data[following : following + 2] != b"\r\n":
                return Verdict.REFUSE  # chunk data longer than its size says
            pos = following + 2
        # The trailer section: field lines, then an empty line (section 7.1.2).
        start = self._trailers
        if data[start : start + 2] == b"\r\n":
            self.end = start + 2
            return Verdict.COMPLETE
        found = data.find(b"\r\n\r\n", max(start, pos - 3))
        if found >= 0:
            self.end = found + 4
            return Verdict.COMPLETE
        if _bare_lf(data, max(start, pos)):
            return Verdict.REFUSE
        self._scan = len(data)
        return None


def _values(fields: bytes, name: bytes) -> list[bytes]:
    """The values of every field ``name`` in the lower-cased field lines (each line after a CRLF)."""
    values = []
    prefix = b"\r\n" + name + b":"
    start = fields.find(prefix)
    while start >= 0:
        start += len(prefix)
        end = fields.find(b"\r\n", start)
        values.append(fields[start:end].strip(b" \t"))
        start = fields.find(prefix, end)
    return values


def _chunked(codings: list[bytes]) -> bool:
    """Whether the codings of every Transfer-Encoding field, in order, make a chunked body gunicorn takes.

    gunicorn reads them as one list ("gzip" in one field, "chunked" in the
    next is a chunked body), refuses codings it does not know, and takes
    chunked only once and last (stacked chunking is never meant).
    """
    listed = [coding.strip(b" \t") for coding in b",".join(codings).split(b",")]
    return listed[-1] == b"chunked" and listed.count(b"chunked") == 1 and all(c in _CODINGS for c in listed)


def _chunk_size(line: bytes) -> int | None:
    """The size a chunk-size line gives, or None for one gunicorn refuses (blanks only before a ";")."""
    size, semicolon, extensions = line.partition(b";")
    if semicolon:
        size = size.rstrip(b" \t")
        if not _CHUNK_EXT.fullmatch(b";" + extensions):
            return None
    if not _CHUNK_SIZE.fullmatch(size):
        return None
    return int(size, 16)


def _bare_lf(data: bytes | bytearray, start: int) -> bool:
    """Whether a LF at or after ``start`` lacks its CR (RFC 9112 lines end in CRLF)."""
    at = data.find(b"\n", start)
    while at >= 0:
        if at == 0 or data[at - 1] != 0x0D:
            return True
        at = data.find(b"\n", at + 1)
    return False


# -- a plain head, read in full for the express lane ---------------------------------------------------------------

# A field line with nothing unusual about it: a name of token characters (no "_", which gunicorn drops
# from the environ by default), one colon, and a value of visible ASCII with single spaces or tabs
# inside.  Anything else (obs-fold, obs-text, control characters) goes through gunicorn's parser.
_PLAIN_FIELD = re.compile(rb"([!#$%&'*+.^`|~0-9A-Za-z-]+):[ \t]*((?:[\x21-\x7e]+(?:[ \t][\x21-\x7e]+)*)?)[ \t]*")
_PLAIN_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) (/[\x21-\x7e]*) HTTP/1\.1")


class PlainHead:
    """An HTTP/1.1 request head with nothing in it that needs gunicorn's parser to be understood.

    ``fields`` maps each lower-cased name to its value, blanks around it
    taken off; a plain head names no field twice.  ``close`` is whether it
    asked for ``Connection: close``.
    """

    __slots__ = ("close", "fields", "method", "target")

    def __init__(self, method: bytes, target: bytes, fields: dict[bytes, bytes], close: bool) -> None:
        self.method, self.target, self.fields, self.close = method, target, fields, close


def plain_head(head: bytes, max_line: int, max_fields: int, max_field_size: int) -> PlainHead | None:
    """``head`` (up to and without its final empty line) as a PlainHead, or None when it is not one.

    None is no verdict on the request: gunicorn's parser reads it as it
    reads every request.  Only well inside gunicorn's limits (its
    ``limit_request_line``, ``limit_request_fields`` and
    ``limit_request_field_size``, given here) is a head plain; a field
    gunicorn gives a meaning beyond its value (Transfer-Encoding, Expect,
    a Connection other than close or keep-alive) makes no plain head either.
    """
    lines = head.split(b"\r\n")
    if len(lines[0]) + 2 >= max_line or len(lines) >= max_fields:
        return None
    request_line = _PLAIN_REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return None
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        match = _PLAIN_FIELD.fullmatch(line)
        if match is None or len(line) + 2 >= max_field_size:
            return None
        name = match[1].lower()
        if name in fields:
            return None
        fields[name] = match[2]
    if b"transfer-encoding" in fields or b"expect" in fields:
        return None
    connection = fields.get(b"connection", b"keep-alive").lower()
    if connection not in (b"keep-alive", b"close"):
        return None
    return PlainHead(request_line[1], request_line[2], fields, connection == b"close")
