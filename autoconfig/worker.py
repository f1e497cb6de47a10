"""The gunicorn worker: a request is read in full before a worker spends time on it.

gunicorn's sync worker takes one connection and then blocks on it until the
request has arrived.  A client that sends its headers and a few bytes of
body, then waits, holds that worker until the arbiter kills it (30 s), and
``workers + 1`` such clients stop the node answering anyone, ``/healthz``
included.  gthread only moves the same wait into a thread: one more client
than threads does the same.

``BufferingWorker`` keeps the sync worker's model (one request at a time,
no threads, which is what gave the best tail latency in bench/) but, like
a buffering proxy, accepts every connection into a small event loop and
hands a request to the application only once all of it has arrived: the
head, then the body by its Content-Length or its chunked framing
(autoconfig/framing.py, which must decide where a request ends as
gunicorn's parser will: tests/test_worker_framing.py holds it to that).  A
connection whose request is not complete ``read_timeout`` seconds after it
was accepted gets ``408 Request Timeout`` and is closed, however it
trickles.  Stalled clients cost a buffer each, never a worker.

Requests that arrive in one piece (nearly all) go from ``accept`` to the
application at once, with no more system calls than the sync worker makes.
A request too large to buffer (a body over 16 KiB) is handed over when the
buffer is full, and the rest is read under the same deadline
(``SO_RCVTIMEO``), so nothing holds a worker longer than ``read_timeout``
while it is being read.  Only bodies are handed over so: the endpoints
that take large ones check their caller's secret first.  A head over
64 KiB, which any client could send, gets ``431`` from the loop itself.

Connections are kept alive.  Dovecot's HTTP client asks about every IMAP
and POP3 login on a connection it keeps open (HTTP/1.1, ``Connection:
Keep-Alive``); closing after each answer made every login pay a new TCP
connection on both sides, most of what a decision cost through Dovecot
beyond its cost under wrk.  So once a request is answered and both sides
allow it (HTTP/1.1 without ``Connection: close``, or 1.0 with
``keep-alive``; an answer gunicorn's ``Response`` frames by Content-Length
or chunks; a request read whole, so where the next one starts is known;
a worker not stopping), the connection goes back into the loop.  Bytes
already read past the answered request (pipelining) start the next one,
which is served from the loop after the other connections had their turn.
An idle connection waits ``keepalive`` seconds (config/gunicorn.conf.py:
longer than Dovecot keeps its own, so that Dovecot is the one to close)
and is then closed without a word; its next request is buffered whole and
gets 408 ``read_timeout`` seconds after its first byte, as on a new
connection.  Idle connections cost a buffer, never a worker: each worker
keeps at most MAX_IDLE, closing the oldest beyond that, and closes idle
ones before it stops accepting for want of descriptors.  A stopping worker
closes its idle connections within STOP_IDLE_LINGER, answering a request
that arrives meanwhile with ``Connection: close``.

Dovecot's questions take an express lane.  A whole request whose head is
plain (``framing.plain_head``) and that the app's ``express_lane``
(autoconfig/web/express.py) takes is answered by it without gunicorn's
parser and without Flask, and framed here as gunicorn frames an answer;
anything it does not take goes the usual way.  tests/test_express.py holds
the two paths to the same bytes.

Production still puts nginx in front (config/nginx/autoconfig.conf): TLS,
and the buffering of slow clients on the scale of a whole site.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import socket
import struct
import time
from collections import deque
from datetime import datetime
from typing import Any

from gunicorn import SERVER, http, util
from gunicorn.config import PostRequest, PreRequest
from gunicorn.http import wsgi
from gunicorn.http.body import LengthReader
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.workers.sync import SyncWorker
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import RequestTimeout as _HTTPRequestTimeout

from autoconfig.framing import DEFAULT_CHUNK_LINE_LIMIT, RequestFraming, Verdict, plain_head
from autoconfig.framing import MAX_BODY as MAX_BODY
from autoconfig.framing import MAX_HEAD as MAX_HEAD

DEFAULT_READ_TIMEOUT = 5.0
# After the answer, how long a connection may keep sending before it is closed
# (RFC 9112, section 9.6: read on after a half-close so unread input cannot
# turn the close into a reset that destroys the answer).
LINGER = 1.0
MAX_DRAINED = 64 * 1024
ACCEPT_BATCH = 16
# Out of file descriptors (EMFILE: 1024 under systemd's default limit, less
# than worker_connections pending plus those lingering): stop accepting this
# long, and let the kernel's backlog hold new connections, instead of dying.
ACCEPT_PAUSE = 0.1
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
RECV_SIZE = 65536
# Kept-alive connections waiting for their next request, per worker: beyond this the oldest is
# closed.  A Dovecot auth process opens at most 100 (its max_parallel_connections), so this holds
# a few Dovecot servers' connections, well inside systemd's 1024 descriptors; out of descriptors,
# a worker closes idle connections before it stops accepting.
MAX_IDLE = 256
# A stopping worker keeps its idle connections this long (at most their keep-alive time), so a
# request already on its way on one is answered (with "Connection: close"), not cut off.
STOP_IDLE_LINGER = 1.0
# An answer is held and written in one piece up to this size (ReplaySocket.hold_writes); a larger
# one (none of this service's, but a static file could be) goes out in pieces of this size.
OUT_LIMIT = 64 * 1024

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _plain_answer(status: bytes, body: bytes) -> bytes:
    """A whole plain-text answer the worker sends itself, with the headers every answer of ours carries."""
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Connection: close\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"Referrer-Policy: no-referrer\r\n"
        b"Cache-Control: no-store\r\n"
        b"\r\n" + body
    )


TIMEOUT_RESPONSE = _plain_answer(b"408 Request Timeout", b"408 Request Timeout: the request did not arrive in time\n")
TOO_LARGE_RESPONSE = _plain_answer(
    b"431 Request Header Fields Too Large", b"431 Request Header Fields Too Large: the request head is over 64 KiB\n"
)


class WriteTimeout(TimeoutError):
    """The client did not take its answer within the write deadline (it stopped reading)."""


class RequestTimeout(_HTTPRequestTimeout):
    """The rest of a handed-over request did not arrive before the deadline.

    An HTTP exception, so the application answers 408 the way it answers
    any other; not an ``OSError``, so no stream wrapper mistakes it for a
    client that went away.
    """


class MalformedBody(BadRequest):
    """gunicorn's parser refused the body while the application read it (a bad chunk, say).

    An HTTP exception, as ``RequestTimeout`` is, so the application answers
    400 in its family's format; gunicorn's own ``ParseException`` is no HTTP
    exception, and reached the application as a 500 with a traceback logged.
    """

    description = "the request body is malformed"


class _CheckedInput:
    """``wsgi.input`` for a body gunicorn decodes as it is read (chunked): its parse errors become ``MalformedBody``."""

    __slots__ = ("_body",)

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, size: int | None = None) -> bytes:
        data: bytes = self._checked(self._body.read, size)
        return data

    def readline(self, size: int | None = None) -> bytes:
        line: bytes = self._checked(self._body.readline, size)
        return line

    def readlines(self, size: int | None = None) -> list[bytes]:
        lines: list[bytes] = self._checked(self._body.readlines, size)
        return lines

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    @staticmethod
    def _checked(read: Any, size: int | None) -> Any:
        try:
            return read(size)
        except http.errors.ParseException as exc:
            raise MalformedBody(f"the request body is malformed: {exc}") from None


def read_timeout(value: str | None) -> float:
    """``AUTOCONFIG_READ_TIMEOUT`` as seconds; a clear error for anything else."""
    if value is None or value == "":
        return DEFAULT_READ_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 300:
        raise ValueError(f"AUTOCONFIG_READ_TIMEOUT must be seconds between 0.1 and 300, not {value!r}")
    return seconds


def express_lane(value: str | None) -> bool:
    """``AUTOCONFIG_EXPRESS_LANE`` (on, the default, or off); a clear error for anything else."""
    setting = (value or "on").strip().lower()
    if setting not in ("on", "off"):
        raise ValueError(f"AUTOCONFIG_EXPRESS_LANE must be on or off, not {value!r}")
    return setting == "on"


class ReplaySocket(socket.socket):
    """The client's socket, with the request the event loop already read in front of it.

    gunicorn's parser reads from this as from the socket itself.  Anything
    beyond the buffered part (a request too large to buffer) is read under
    the connection's deadline.

    Writes have a deadline too.  A client that stops reading (and pipelines
    requests meanwhile, so that its answers fill the socket buffers both
    ways) would otherwise block the worker in ``sendall`` until gunicorn
    killed it (``timeout``, 30 s) with every connection it held.  So writing
    an answer waits for the client at most ``write_timeout`` seconds (the
    worker's ``read_timeout``: as long to take an answer as to send a
    request), then raises ``WriteTimeout``, and the connection is closed.  A
    write the kernel takes at once, nearly all of them, costs no extra
    system call.
    """

    _buffered = b""
    _continue_sent = False
    _deadline = 0.0
    write_timeout = DEFAULT_READ_TIMEOUT  # the worker sets its own read_timeout on each connection
    _write_deadline = 0.0  # of the answer being written, from when a write of it first had to wait

    def prime(self, buffered: bytes, deadline: float, continue_sent: bool) -> ReplaySocket:
        self._buffered, self._deadline, self._continue_sent = buffered, deadline, continue_sent
        return self

    def take_buffered(self) -> bytes:
        """What the event loop read that the parser has not asked for (the start of a pipelined request)."""
        buffered, self._buffered = self._buffered, b""
        return buffered

    def recv(self, size: int, flags: int = 0, /) -> bytes:
        buffered = self._buffered
        if buffered:
            if len(buffered) <= size:
                self._buffered = b""
                return buffered
            self._buffered = buffered[size:]
            return buffered[:size]
        if self.gettimeout() is not None:  # gunicorn manages this read's time itself (closing)
            return super().recv(size, flags)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout()
        seconds = int(remaining)
        self.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, int((remaining - seconds) * 1e6) or 1)
        )
        try:
            return super().recv(size, flags)
        except BlockingIOError:  # the kernel's receive timeout
            raise RequestTimeout() from None

    # -- the answer, written in one piece ----------------------------------------------------------

    _out: bytearray | None = None  # while an answer is being written: what it wrote so far

    def hold_writes(self) -> None:
        """Collect what gunicorn writes until ``release_writes``.

        gunicorn sends an answer's head and its body in two ``sendall`` calls:
        two system calls, and two segments that wake the client twice (Dovecot's
        HTTP client reads every login's answer).  This service's answers are a
        few kilobytes, so the whole answer is one write; past ``OUT_LIMIT`` it
        goes out as it comes.  The answer's write deadline starts again.
        """
        self._out = bytearray()
        self._write_deadline = 0.0

    def release_writes(self) -> None:
        out, self._out = self._out, None
        if out:
            self._write(out)

    def sendall(self, data: Any, flags: int = 0, /) -> None:
        out = self._out
        if out is None:  # a write outside an answer (an error answer gunicorn writes): a deadline of its own
            self._write_deadline = 0.0
            self._write(data)
            return
        out += data
        if len(out) >= OUT_LIMIT:
            self._out = bytearray()
            self._write(out)

    def send(self, data: Any, flags: int = 0, /) -> int:
        # The event loop already said "100 Continue" to get the body; gunicorn says it again
        # when it parses the head, and a second interim answer would only confuse a client.
        if self._continue_sent and data == CONTINUE:
            self._continue_sent = False
            return len(data)
        if flags:  # the event loop's own (MSG_DONTWAIT)
            return super().send(data, flags)
        self._write_deadline = 0.0
        self._write(data)
        return len(data)

    def _write(self, data: Any) -> None:
        """All of ``data``; waiting for the client only until the write deadline (the class docstring)."""
        view = memoryview(data).cast("B")
        while view:
            try:
                sent = socket.socket.send(self, view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._wait_writable()
                continue
            view = view[sent:]

    def _wait_writable(self) -> None:
        now = time.monotonic()
        if not self._write_deadline:
            self._write_deadline = now + self.write_timeout
        remaining = self._write_deadline - now
        poll = select.poll()
        poll.register(self, select.POLLOUT)
        if remaining <= 0 or not poll.poll(remaining * 1000):
            raise WriteTimeout(errno.ETIMEDOUT, "the client did not take its answer in time")

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """A file's bytes go out after what was held (the head gunicorn wrote before them), under the write
        deadline: the socket is non-blocking for the while (``socket.sendfile`` would wait for the client
        for ever)."""
        out, self._out = self._out, bytearray() if self._out is not None else None
        if out:
            self._write(out)
        fileno = file.fileno()
        if count is None:
            count = os.fstat(fileno).st_size - offset
        sent = 0
        prior = self.gettimeout()
        self.setblocking(False)
        try:
            while sent < count:
                try:
                    more = os.sendfile(self.fileno(), fileno, offset + sent, count - sent)
                except BlockingIOError:
                    self._wait_writable()
                    continue
                if not more:  # the file is shorter than it was
                    break
                sent += more
        finally:
            self.settimeout(prior)
        file.seek(offset + sent)
        return sent


def _nothing_left(req: Any) -> bool:
    """True when the request's body is known to be off the connection: framed by length, all of it read.

    Most answered requests (every GET, every Dovecot decision) end so, and
    then gunicorn's ``finish_body`` is skipped: it would find nothing, after
    setting and restoring the socket's timeout (four system calls).
    Anything else (a chunked body, one the application left, a reader
    this does not know) goes through ``finish_body``.
    """
    reader = getattr(getattr(req, "body", None), "reader", None)
    return isinstance(reader, LengthReader) and reader.length == 0


class _Pending:
    """A connection whose request is still arriving."""

    __slots__ = ("addr", "continue_sent", "data", "deadline", "framing", "listener", "sock")

    def __init__(self, sock: ReplaySocket, addr: Any, listener: Any, deadline: float, chunk_line_limit: int) -> None:
        self.sock, self.addr, self.listener, self.deadline = sock, addr, listener, deadline
        self.data = bytearray()
        self.framing = RequestFraming(chunk_line_limit)
        self.continue_sent = False

    def advance(self) -> Verdict:
        verdict = self.framing.advance(self.data)
        if self.framing.asks_continue:
            try:
                self.sock.send(CONTINUE, socket.MSG_DONTWAIT)
                self.continue_sent = True
            except OSError:
                pass
        return verdict


class _Idle:
    """A kept-alive connection waiting for its next request (until ``deadline``, then closed)."""

    __slots__ = ("addr", "deadline", "listener", "sock")

    def __init__(self, sock: ReplaySocket, addr: Any, listener: Any, deadline: float) -> None:
        self.sock, self.addr, self.listener, self.deadline = sock, addr, listener, deadline


class BufferingWorker(SyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker, fed only complete requests (see the module docstring)."""

    read_timeout = DEFAULT_READ_TIMEOUT  # config/gunicorn.conf.py sets it from AUTOCONFIG_READ_TIMEOUT
    express = True  # config/gunicorn.conf.py: AUTOCONFIG_EXPRESS_LANE=off sets it False
    _buffering = True
    _may_keep = False  # whether the request being served may leave its connection open

    def run(self) -> None:
        if self.cfg.is_ssl:  # TLS belongs to the proxy in front; the plain sync worker handles it
            self.log.warning("BufferingWorker: TLS in gunicorn itself, falling back to the sync worker")
            self._buffering = False
            super().run()
            return
        self._selector = selectors.DefaultSelector()
        self._pending: dict[int, _Pending] = {}
        self._pending_order: deque[_Pending] = deque()
        self._ready: deque[_Pending] = deque()  # pending requests already buffered whole (pipelined)
        self._idle: dict[int, _Idle] = {}
        self._idle_order: deque[_Idle] = deque()
        self._idle_capped = False
        self._lingering: dict[int, tuple[socket.socket, float, list[int]]] = {}
        self._linger_order: deque[tuple[int, socket.socket, float]] = deque()
        self._accepting = False
        self._accept_resume = 0.0  # while out of file descriptors: when to try accepting again
        self._max_pending = max(1, self.cfg.worker_connections)
        self._keepalive = float(self.cfg.keepalive or 0)
        # gunicorn's own limit on a chunk-size line, which the framing must apply as it does.
        self._chunk_line_limit = self.cfg.limit_request_field_size
        if self._chunk_line_limit <= 0:
            self._chunk_line_limit = DEFAULT_CHUNK_LINE_LIMIT
        self._lane, self._lane_limits = self._express_lane()
        for listener in self.sockets:
            listener.setblocking(False)
        self._selector.register(self.PIPE[0], selectors.EVENT_READ, "pipe")
        self._accept(True)
        try:
            self._loop()
        finally:
            for pending in list(self._pending.values()):
                self._drop(pending)
            for idle in list(self._idle.values()):
                self._close_idle(idle)
            for sock, _deadline, _drained in list(self._lingering.values()):
                self._unlinger(sock)
            self._selector.close()

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        while self.alive or self._pending or self._idle:
            self.notify()
            if not self.alive:
                if self._accepting:
                    self._accept(False)  # stopping: finish what has started, take nothing new
                self._cap_idle()
            for key, _events in self._selector.select(self._wait()):
                data = key.data
                if data == "pipe":  # a signal arrived (gunicorn's wakeup fd)
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.PIPE[0], 4096)
                elif data == "listener":
                    self._accept_some(key.fileobj)
                elif isinstance(data, _Pending):
                    self._receive(data)
                elif isinstance(data, _Idle):
                    self._wake(data)
                else:
                    self._drain(key.fileobj)
            self._serve_ready()
            self._expire()
            if not self._accepting and self.alive and len(self._pending) < self._max_pending:
                self._accept(True)  # after a pause for file descriptors
            if not self.is_parent_alive():
                return

    def _wait(self) -> float:
        if self._ready:
            return 0.0
        wait = self.timeout or 0.5
        now = time.monotonic()
        if self._pending_order:
            wait = min(wait, self._pending_order[0].deadline - now)
        if self._idle_order:
            wait = min(wait, self._idle_order[0].deadline - now)
        if self._linger_order:
            wait = min(wait, self._linger_order[0][2] - now)
        if not self._accepting and self._accept_resume > now:
            wait = min(wait, self._accept_resume - now)
        return max(wait, 0.0)

    def _accept(self, on: bool) -> None:
        """Listen for new connections, or stop (at the pending cap, out of file descriptors, or when stopping)."""
        if on and time.monotonic() < self._accept_resume:
            return
        if on == self._accepting:
            return
        for listener in self.sockets:
            if on:
                self._selector.register(listener, selectors.EVENT_READ, "listener")
            else:
                self._selector.unregister(listener)
        self._accepting = on

    def _accept_some(self, listener: Any) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self.alive or len(self._pending) >= self._max_pending:
                break
            try:
                fd, addr = listener._accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    return
                if exc.errno in _OUT_OF_FDS:
                    if self._close_oldest_idle(ACCEPT_BATCH):
                        continue  # descriptors freed: a waiting request beats a connection with none
                    self.log.warning("Not accepting for %g s: %s (%d pending)", ACCEPT_PAUSE, exc, len(self._pending))
                    self._accept(False)
                    self._accept_resume = time.monotonic() + ACCEPT_PAUSE
                    return
                raise
            sock = ReplaySocket(listener.family, listener.type, listener.proto, fileno=fd)
            sock.write_timeout = self.read_timeout
            pending = self._new_pending(sock, addr, listener)
            # Most requests are already here: serve them without a trip through the selector.
            if not self._receive(pending, registered=False):
                self._add_pending(pending)
        self._accept(self.alive and len(self._pending) < self._max_pending)

    def _new_pending(self, sock: ReplaySocket, addr: Any, listener: Any) -> _Pending:
        return _Pending(sock, addr, listener, time.monotonic() + self.read_timeout, self._chunk_line_limit)

    def _add_pending(self, pending: _Pending) -> None:
        self._track(pending)
        self._selector.register(pending.sock, selectors.EVENT_READ, pending)

    def _track(self, pending: _Pending) -> None:
        """Count ``pending`` among the connections whose request is arriving, under its read deadline."""
        self._pending[pending.sock.fileno()] = pending
        self._pending_order.append(pending)

    def _receive(self, pending: _Pending, registered: bool = True) -> bool:
        """Read what has arrived; serve the request once complete.  True when the connection is done with."""
        sock = pending.sock
        try:
            chunk = socket.socket.recv(sock, RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:  # the client went away before its request was complete
            self._forget(pending, registered)
            sock.close()
            return True
        pending.data += chunk
        return self._advance(pending, registered)

    def _advance(self, pending: _Pending, registered: bool) -> bool:
        """Serve the request if all of it is buffered.  True when the connection is done with."""
        sock = pending.sock
        verdict = pending.advance()
        if verdict is Verdict.WAIT:
            return False
        self._forget(pending, registered)
        if verdict is Verdict.HEAD_TOO_LARGE:
            self.log.info("431: the request head from %s is over %d bytes", _peer(pending.addr), MAX_HEAD)
            with contextlib.suppress(OSError):
                sock.send(TOO_LARGE_RESPONSE, socket.MSG_DONTWAIT)
            self._linger(sock)
            return True
        if verdict is Verdict.COMPLETE and self._lane is not None and self._express(pending):
            return True
        sock.prime(bytes(pending.data), pending.deadline, pending.continue_sent)
        # Only a request read whole is complete: a refused one's end is unknown, so its connection is
        # neither kept nor closed at once (the client may still be sending: a reset would destroy the answer).
        self.handle(pending.listener, sock, pending.addr, complete=verdict is Verdict.COMPLETE)
        return True

    def _serve_ready(self) -> None:
        """Serve pipelined requests that were buffered behind an answered one, one per connection per turn.

        Such a connection is read from again only once what it sent is used up (its next request is not
        all there): reading on while its requests wait would let a client that pipelines faster than it
        is answered (or never reads its answers) fill the worker's memory, 64 KiB per answer, and every
        answer would copy all of it.
        """
        for _ in range(len(self._ready)):
            pending = self._ready.popleft()
            if self._pending.get(pending.sock.fileno()) is pending and not self._advance(pending, registered=True):
                self._selector.register(pending.sock, selectors.EVENT_READ, pending)

    def _forget(self, pending: _Pending, registered: bool) -> None:
        if registered:
            with contextlib.suppress(KeyError):  # a pipelined request served from the buffer was never registered
                self._selector.unregister(pending.sock)
            del self._pending[pending.sock.fileno()]
            if len(self._pending) < self._max_pending and self.alive:
                self._accept(True)

    def _expire(self) -> None:
        now = time.monotonic()
        order = self._pending_order
        while order and order[0].deadline <= now:
            pending = order.popleft()
            if self._pending.get(pending.sock.fileno()) is pending:
                self._forget(pending, True)
                self.log.info("408: no complete request from %s within %g s", _peer(pending.addr), self.read_timeout)
                with contextlib.suppress(OSError):
                    pending.sock.send(TIMEOUT_RESPONSE, socket.MSG_DONTWAIT)
                self._linger(pending.sock)
        while order and self._pending.get(order[0].sock.fileno()) is not order[0]:
            order.popleft()  # served or gone: forget its place in line
        idle_order = self._idle_order
        while idle_order and idle_order[0].deadline <= now:
            idle = idle_order.popleft()
            if self._idle.get(idle.sock.fileno()) is idle:
                self._close_idle(idle)  # kept long enough: closed without a word, as HTTP has it
        while idle_order and self._idle.get(idle_order[0].sock.fileno()) is not idle_order[0]:
            idle_order.popleft()
        lingering = self._linger_order
        while lingering and lingering[0][2] <= now:
            fd, sock, _deadline = lingering.popleft()
            if self._lingering.get(fd, (None,))[0] is sock:
                self._unlinger(sock)

    def _drop(self, pending: _Pending) -> None:
        self._forget(pending, True)
        pending.sock.close()

    # -- the express lane ----------------------------------------------------

    def _express_lane(self) -> tuple[Any, tuple[int, int, int]]:
        """The app's express lane (autoconfig/web/express.py), when this worker may use it, and gunicorn's
        limits on a head as its parser applies them.

        Not when it is switched off (``AUTOCONFIG_EXPRESS_LANE=off``), nor when anything the lane does
        not do would come into play: the PROXY protocol (the client's address comes from its header)
        or a ``pre_request``/``post_request`` hook of the admin's own (they expect gunicorn's objects).
        """
        cfg = self.cfg
        limits = (
            cfg.limit_request_line if 0 < cfg.limit_request_line < MAX_REQUEST_LINE else MAX_REQUEST_LINE,
            cfg.limit_request_fields if 0 < cfg.limit_request_fields <= MAX_HEADERS else MAX_HEADERS,
            cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE,
        )
        lane = getattr(self.wsgi, "express_lane", None)
        if (
            lane is None
            or not self.express
            or str(getattr(cfg, "proxy_protocol", "off")).lower() not in ("off", "false", "none", "")
            or cfg.pre_request is not PreRequest.pre_request
            or cfg.post_request is not PostRequest.post_request
        ):
            return None, limits
        return lane, limits

    def _express(self, pending: _Pending) -> bool:
        """Answer a whole request in the express lane if the lane takes it.  True when it did.

        The lane gets a plain head's fields and the body; the answer goes out as gunicorn would frame
        it (status line, Server, Date, Connection, the lane's headers), and the connection is kept or
        closed as ``handle`` would.  gunicorn's access log gets no line: the app's own line for each
        question (``dovecot auth-policy: allow (imap login ...)``, a warning for a refused one) names
        more, and writing both cost a quarter of the lane's time (py-spy), one write per login.
        """
        framing = pending.framing
        data = pending.data
        head = plain_head(bytes(data[: framing.head_end - 4]), *self._lane_limits)
        if head is None or not self._lane.fields.issuperset(head.fields):
            return False
        answer = self._lane(head.method, head.target, head.fields, bytes(data[framing.head_end : framing.end]))
        if answer is None:
            return False
        self.nr += 1
        if self.nr >= self.max_requests:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
        keep = not head.close and self.alive and self._keepalive > 0
        sock, addr = pending.sock, pending.addr
        lines = [
            f"HTTP/1.1 {answer.status}\r\nServer: {SERVER}\r\nDate: {util.http_date()}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n"
        ]
        lines.extend(f"{name}: {value}\r\n" for name, value in answer.headers)
        lines.append("\r\n")
        try:
            sock.sendall("".join(lines).encode("latin-1") + answer.body)  # one write, under its own deadline
        except WriteTimeout:
            keep = False
            self.log.info("%s did not take its answer within %g s: closed", _peer(addr), self.read_timeout)
        except OSError:
            keep = False  # the client went away, as handle() lets it
        if keep and sock.fileno() >= 0:
            self._keep(sock, addr, pending.listener, bytes(data[framing.end :]))
        else:
            self._close(sock, True)
        return True

    # -- kept-alive connections ----------------------------------------------

    def _keep(self, sock: ReplaySocket, addr: Any, listener: Any, leftover: bytes) -> None:
        """Put an answered connection back into the loop: idle until its next request, or pending
        with the start of a pipelined one already read."""
        if leftover:
            # Served from the loop, after the others have had their turn; not read from meanwhile
            # (``_serve_ready``).
            pending = self._new_pending(sock, addr, listener)
            pending.data += leftover
            self._track(pending)
            self._ready.append(pending)
            return
        idle = _Idle(sock, addr, listener, time.monotonic() + self._keepalive)
        self._idle[sock.fileno()] = idle
        self._idle_order.append(idle)
        self._selector.register(sock, selectors.EVENT_READ, idle)
        if len(self._idle) > MAX_IDLE:
            self._close_oldest_idle(len(self._idle) - MAX_IDLE)

    def _wake(self, idle: _Idle) -> None:
        """Bytes (or the end) on an idle connection: its next request starts, with the read deadline from now."""
        sock = idle.sock
        chunk = _recv_now(sock)
        if chunk is None:
            return
        if not chunk:  # the client closed its idle connection, as clients do
            self._close_idle(idle)
            return
        del self._idle[sock.fileno()]
        pending = self._new_pending(sock, idle.addr, idle.listener)
        pending.data += chunk
        self._track(pending)
        self._selector.modify(sock, selectors.EVENT_READ, pending)
        self._advance(pending, registered=True)

    def _close_idle(self, idle: _Idle) -> None:
        self._idle.pop(idle.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(idle.sock)
        idle.sock.close()

    def _close_oldest_idle(self, count: int) -> int:
        closed = 0
        while closed < count and self._idle_order:
            idle = self._idle_order.popleft()
            if self._idle.get(idle.sock.fileno()) is idle:
                self._close_idle(idle)
                closed += 1
        return closed

    def _cap_idle(self) -> None:
        """Stopping: every idle connection closes within STOP_IDLE_LINGER (once; the order stays sorted)."""
        if self._idle_capped:
            return
        self._idle_capped = True
        deadline = time.monotonic() + STOP_IDLE_LINGER
        for idle in self._idle_order:
            idle.deadline = min(idle.deadline, deadline)

    # -- serving and closing -------------------------------------------------

    def handle(self, listener: Any, client: Any, addr: Any, complete: bool = True) -> None:
        """gunicorn's sync ``handle``, but closing (or keeping the connection) through the event loop."""
        if not self._buffering:
            SyncWorker.handle(self, listener, client, addr)
            return
        req = None
        keep = False
        parser = None
        # Only a request read whole may leave its connection open: where the next one starts is known.
        self._may_keep = complete and self.alive and self._keepalive > 0
        try:
            parser = http.get_parser(self.cfg, client, addr)
            req = next(parser)
            keep = bool(self.handle_request(listener, req, client, addr)) and self._may_keep
            # A body the application did not read is still in the buffer: skip it, so that what
            # follows is the next request.  It was all read, so this waits for nothing.  Should that
            # rest be malformed (a trailer gunicorn refuses), the answer is out: close, not a second one.
            try:
                keep = keep and (_nothing_left(req) or parser.finish_body(deadline=time.monotonic() + 0.1))
            except http.errors.ParseException:
                keep = False
        except http.errors.NoMoreData as exc:
            self.log.debug("Ignored premature client disconnection. %s", exc)
        except StopIteration as exc:
            self.log.debug("Closing connection. %s", exc)
        except WriteTimeout:
            keep = False
            self.log.info("%s did not take its answer within %g s: closed", _peer(addr), self.read_timeout)
        except OSError as exc:
            keep = False
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except BaseException as exc:  # as gunicorn does: the client gets an answer, the worker goes on
            keep = False
            self.handle_error(req, client, addr, exc)
        finally:
            if keep and parser is not None and client.fileno() >= 0:
                self._keep(client, addr, listener, parser.unreader.take_buffered() + client.take_buffered())
            else:
                self._close(client, complete)

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> bool | None:
        """gunicorn's sync ``handle_request``, without its forced close: True when the connection may stay open.

        The response says ``Connection: close`` when the request asked for it (or is HTTP/1.0
        without keep-alive), when the worker is stopping, when keep-alive is off or the request
        was not read whole; gunicorn's ``Response.should_close`` also closes an answer it could
        not frame (no Content-Length and not chunked).
        """
        if not self._buffering:
            SyncWorker.handle_request(self, listener, req, client, addr)
            return None
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, client, addr, listener.getsockname(), self.cfg)
            if not isinstance(req.body.reader, LengthReader):  # a length-framed body cannot be malformed
                environ["wsgi.input"] = _CheckedInput(environ["wsgi.input"])
            self.nr += 1
            if self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not (self._may_keep and self.alive):
                resp.force_close()
            client.hold_writes()
            try:
                respiter = self.wsgi(environ, resp.start_response)
            except BaseException:
                client.release_writes()  # nothing was written: an error answer must not be held
                raise
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                try:
                    client.release_writes()  # before the access log: the client need not wait for it
                finally:
                    self.log.access(resp, req, environ, datetime.now() - request_start)
                    if hasattr(respiter, "close"):
                        respiter.close()
            return not resp.should_close()
        except OSError:
            raise  # the client went away: handle() says so, no error answer
        except (Exception, SystemExit):
            if resp and resp.headers_sent:
                # Part of an answer went out: a second one on the same connection would corrupt it.
                self.log.exception("Error handling request")
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, RequestTimeout):
            self.log.info("408: the rest of the request from %s did not arrive in time", _peer(addr))
            with contextlib.suppress(OSError):
                client.sendall(TIMEOUT_RESPONSE)
            return
        super().handle_error(req, client, addr, exc)

    def _close(self, sock: socket.socket, complete: bool) -> None:
        """Half-close; close at once when nothing more is coming, else linger without blocking."""
        if sock.fileno() < 0:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if complete:
            try:
                if not socket.socket.recv(sock, MAX_DRAINED, socket.MSG_DONTWAIT):
                    sock.close()
                    return
            except BlockingIOError:
                sock.close()  # the whole request was read and nothing follows it: a clean close
                return
            except OSError:
                sock.close()
                return
        self._linger(sock, shut=True)

    def _linger(self, sock: socket.socket, shut: bool = False) -> None:
        if not shut:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                sock.close()
                return
        deadline = time.monotonic() + LINGER
        fd = sock.fileno()
        self._lingering[fd] = (sock, deadline, [0])
        self._linger_order.append((fd, sock, deadline))
        self._selector.register(sock, selectors.EVENT_READ, None)

    def _drain(self, sock: Any) -> None:
        entry = self._lingering.get(sock.fileno())
        if entry is None:
            return
        drained = entry[2]
        chunk = _recv_now(sock)
        if chunk is None:
            return
        drained[0] += len(chunk)
        if not chunk or drained[0] > MAX_DRAINED:
            self._unlinger(sock)

    def _unlinger(self, sock: socket.socket) -> None:
        self._lingering.pop(sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()


def _peer(addr: Any) -> str:
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return "a local client"


def _recv_now(sock: Any) -> bytes | None:
    """What has arrived on ``sock`` without waiting: None if nothing yet, b"" at its end or on an error."""
    try:
        return socket.socket.recv(sock, RECV_SIZE, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b""
