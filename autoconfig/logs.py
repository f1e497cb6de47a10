"""The service's log: one line per event, written to stderr, routine lines in batches.

Dovecot asks for a decision on every IMAP and POP3 login, and each is
logged, as Dovecot logs its own.  Written one by one, each line was a
``write`` system call, the largest single cost of a decision after the store
lookup (bench/coldcache.py).  So lines below WARNING wait in memory and are
written together, by a background thread, every ``[service]
log_flush_seconds`` (1 by default; 0 writes each line at once).  A WARNING
or worse is written at once, after everything before it, so the order
holds and trouble is never late.  The lines are written at exit too; a
process killed with SIGKILL loses at most the last interval's routine lines.

The format is ``logging.Formatter``'s, with the date and time worked out
once per second instead of per line, and ``logging`` is told to leave out
what no line of ours shows (the caller's file and line, the thread, the
process name): the logging HOWTO ("Optimization") documents these switches.
Together they were a quarter of a line's instructions (callgrind).
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

from .forking import PeriodicThread, forget_after_fork

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


class Formatter(logging.Formatter):
    """``logging.Formatter`` with the date and time worked out once per second, not per line."""

    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")  # one attribute, so threads never see half an update

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"


_FLUSH_FAILED = logging.LogRecord("autoconfig", logging.ERROR, "", 0, "could not write waiting log lines", None, None)


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A ``StreamHandler`` that writes lines below WARNING every ``flush_seconds``, in one write."""

    def __init__(self, flush_seconds: float, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.flush_seconds = flush_seconds
        self._pending: list[str] = []
        # Stopped across a fork, so a fork never copies a thread that holds the stream's lock.
        self._writer = PeriodicThread("log-flush", lambda: self.flush_seconds or 1.0, self._flush_now)
        forget_after_fork(self)

    def emit(self, record: logging.LogRecord) -> None:
        # logging.Handler.handle holds self.lock around this call.
        try:
            self._pending.append(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING or self.flush_seconds <= 0:
                self._write_pending()
            elif self._writer.thread is None:
                self._writer.start()
        except Exception:
            self.handleError(record)

    def _write_pending(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        """Write what waits (the writer thread, and ``logging.shutdown`` at exit, call this)."""
        with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
            self._write_pending()

    def _flush_now(self) -> None:
        """The writer thread's work, every ``flush_seconds``."""
        try:
            self.flush()
        except Exception:  # the thread must outlive a failed write, or no line would be written again
            self.handleError(_FLUSH_FAILED)  # logging's own report on stderr (logging.raiseExceptions)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent writes its own waiting lines; the child's writer starts with its first."""
        self._pending = []  # logging itself renews the handler's lock in the child


def configure(level: str, flush_seconds: float) -> None:
    """The ``autoconfig`` logger: ``level``, and (unless logging was set up already) the batched handler."""
    logger = logging.getLogger("autoconfig")
    logger.setLevel(level)
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    if not logger.handlers:
        logger.addHandler(_handler(flush_seconds))
        logger.propagate = False
    else:
        for handler in logger.handlers:
            if isinstance(handler, BatchedStreamHandler):
                handler.flush_seconds = flush_seconds


def _handler(flush_seconds: float) -> BatchedStreamHandler:
    handler = BatchedStreamHandler(flush_seconds)
    handler.setFormatter(Formatter())
    return handler


_LOGGABLE_LENGTH = 80


def loggable(value: object) -> str:
    """A value from a request as it may appear in a log line: short, printable, no newlines."""
    if not isinstance(value, str) or not value:
        return "-"
    # Printable ASCII without the space, as str methods in C: a generator over the characters
    # cost more than the rest of the log line (callgrind).
    if len(value) > _LOGGABLE_LENGTH or not (value.isascii() and value.isprintable()) or " " in value:
        return f"<{len(value)} unprintable or long characters>"
    return value
