"""Where a request in the buffering worker's buffer ends, decided apart from its sockets.

The worker (autoconfig/worker.py) hands a request to gunicorn only once all
of it has arrived, so from the bytes buffered so far it must tell whether a
whole request is there, and it must tell it as gunicorn's parser will, which
then reads the same bytes.  Handing over a request gunicorn finds unfinished
holds a worker until the read deadline; waiting on one gunicorn finds whole
makes a valid request time out, and misplaces the start of the next
(pipelining, keep-alive).  Apart from the sockets, it can be held to
gunicorn's parser as a unit.
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
    HEAD_TOO_LARGE = "head too large"  # over MAX_HEAD and the head has not ended: 431 from the loop


# Any number of hex digits, as gunicorn's parser takes them (leading zeros
# included): a size this refused but gunicorn accepted would hand over a
# request whose body had not arrived, and hold the worker until the deadline.
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")


class Framing:
    """Where a request in a buffer ends, learnt from its head (RFC 9112, section 6)."""

    HEAD = 0  # the head has not ended yet
    LENGTH = 1  # the request ends ``length`` bytes after the head
    CHUNKED = 2  # the body is chunked: read chunk by chunk
    JUDGE = 3  # nothing to wait for: gunicorn's parser decides (and refuses what is malformed)


class RequestFraming:
    """One request's framing, resumed as more of it arrives: ``advance`` each time the buffer grows."""

    __slots__ = ("_chunk_line_limit", "asks_continue", "end", "framing", "head_end", "scan", "want")

    def __init__(self, chunk_line_limit: int = DEFAULT_CHUNK_LINE_LIMIT) -> None:
        self._chunk_line_limit = chunk_line_limit
        self.framing = Framing.HEAD
        self.head_end = 0
        self.want = 0  # total bytes the request spans, once known (LENGTH)
        self.scan = 0  # where the search for the head's end, then chunk parsing, resumes
        self.end = 0
        self.asks_continue = False

    def advance(self, data: bytes | bytearray) -> Verdict:
        """The verdict on ``data``, everything buffered so far (the same buffer, only ever longer)."""
        self.asks_continue = False
        if self.framing == Framing.HEAD:
            # Searched from where the last search stopped: a head trickling in byte by byte costs linear time.
            end = data.find(b"\r\n\r\n", max(0, self.scan - 3))
            if end < 0:
                if len(data) > MAX_HEAD:
                    return Verdict.HEAD_TOO_LARGE
                if _bare_lf(data, self.scan):
                    return Verdict.REFUSE  # gunicorn's parser refuses it at once
                self.scan = len(data)
                return Verdict.WAIT
            self.head_end = end + 4
            self.framing, length, expect = frame(bytes(data[: self.head_end]))
            self.want, self.scan = self.head_end + length, self.head_end
            if self.framing == Framing.JUDGE:
                return Verdict.REFUSE
            if length > MAX_BODY:
                return Verdict.OVERSIZE  # the application refuses it, or reads it, by its declared length
            self.asks_continue = expect and len(data) == self.head_end
        if self.framing == Framing.LENGTH:
            if len(data) >= self.want:
                self.end = self.want
                return Verdict.COMPLETE
        else:
            body_end, self.scan = chunked_end(data, self.scan)
            if body_end is not None:
                self.end = body_end
                return Verdict.COMPLETE
        return Verdict.OVERSIZE if len(data) - self.head_end > MAX_BODY else Verdict.WAIT


def _field(lower: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case) in the lower-cased head, or None."""
    start = lower.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return lower[start : lower.find(b"\r\n", start)].strip()


def _codings(lower: bytes) -> bytes | None:
    """Every Transfer-Encoding field of the lower-cased head as one list, or None.

    gunicorn reads the codings of all the fields in order ("gzip" in one,
    "chunked" in the next is a chunked body), so only the last coding of the
    last field says whether the body is chunked.
    """
    first = _field(lower, b"transfer-encoding")
    if first is None or lower.count(b"\r\ntransfer-encoding:") == 1:
        return first
    values, start = [], lower.find(b"\r\ntransfer-encoding:")
    while start >= 0:
        start += len(b"\r\ntransfer-encoding:")
        values.append(lower[start : lower.find(b"\r\n", start)].strip())
        start = lower.find(b"\r\ntransfer-encoding:", start)
    return b", ".join(values)


def frame(head: bytes) -> tuple[int, int, bool]:
    """(framing, body length, wants 100-continue) for a complete head (ending in CRLF CRLF).

    Anything this cannot read with certainty is JUDGE: gunicorn's parser
    then sees the request at once.  JUDGE is only for requests gunicorn
    refuses from the head alone (Content-Length with Transfer-Encoding, a
    coding list that does not end in chunked, a length that is not a
    number or is given twice): one it accepted would have its body read by
    the worker, which a stalling client could hold until the deadline.
    """
    lower = head.lower()
    expect = lower.startswith(b"http/1.1", lower.find(b"\r\n") - 8) and _field(lower, b"expect") == b"100-continue"
    coding = _codings(lower)
    length = _field(lower, b"content-length")
    if coding is not None:
        if length is not None or not coding.endswith(b"chunked"):
            return Framing.JUDGE, 0, False
        return Framing.CHUNKED, 0, expect
    if length is None:
        return Framing.LENGTH, 0, False
    if not length.isdigit() or lower.count(b"\r\ncontent-length:") > 1:
        return Framing.JUDGE, 0, False
    return Framing.LENGTH, int(length), expect and length != b"0"


def chunked_end(data: bytes | bytearray, pos: int) -> tuple[int | None, int]:
    """(end of the chunked body that starts at ``pos``, or None while incomplete; where to resume).

    A malformed size line ends the wait (the end is "now"): gunicorn's parser refuses it.
    """
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return None, pos
        size = bytes(data[pos:line_end]).split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size):
            return len(data), pos
        if int(size, 16) == 0:
            trailers_end = data.find(b"\r\n\r\n", line_end)
            return (None, pos) if trailers_end < 0 else (trailers_end + 4, pos)
        following = line_end + 2 + int(size, 16) + 2
        if following > len(data):
            return None, pos
        pos = following


def _bare_lf(data: bytes | bytearray, start: int) -> bool:
    """Whether a LF at or after ``start`` lacks its CR (RFC 9112 lines end in CRLF)."""
    at = data.find(b"\n", start)
    while at >= 0:
        if at == 0 or data[at - 1] != 0x0D:
            return True
        at = data.find(b"\n", at + 1)
    return False
