"""The service's log (autoconfig/logs.py): the line format docs/dovecot.md shows, routine lines
written in batches, warnings at once and in order, nothing lost at exit or doubled by a fork."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoconfig.config import ConfigError, load
from autoconfig.logs import LOG_FORMAT, BatchedStreamHandler, Formatter

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] \[(?P<level>[A-Z]+)\] (?P<name>[\w.]+): (?P<text>.*)$"
)


def test_lines_are_what_loggings_own_formatter_writes() -> None:
    fast, reference = Formatter(LOG_FORMAT), logging.Formatter(LOG_FORMAT)
    # Forwards and backwards across seconds and a day: the remembered second must never leak.
    for created in (1_800_000_000.0, 1_800_000_000.999, 1_800_000_001.5, 1_800_000_000.25, 1_800_086_400.0):
        record = logging.LogRecord("autoconfig.web.dovecot", logging.INFO, "", 0, "allow (%s)", ("imap",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert fast.format(record) == reference.format(record)
        assert LINE.match(fast.format(record))


@pytest.fixture
def logger() -> Iterator[Callable[[float], tuple[logging.Logger, io.StringIO]]]:
    made: list[tuple[logging.Logger, BatchedStreamHandler]] = []

    def make(flush_seconds: float) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        handler = BatchedStreamHandler(flush_seconds, stream)
        handler.setFormatter(Formatter())
        log = logging.getLogger(f"autoconfig.test_logging.{len(made)}")
        log.setLevel(logging.INFO)
        log.propagate = False
        log.addHandler(handler)
        made.append((log, handler))
        return log, stream

    yield make
    for log, handler in made:
        log.removeHandler(handler)


def texts(stream: io.StringIO) -> list[str]:
    return [LINE.match(line)["text"] for line in stream.getvalue().splitlines()]  # type: ignore[index]


def test_routine_lines_wait_and_a_warning_brings_them_out_in_order(logger: Any) -> None:
    log, stream = logger(60.0)
    log.info("allow 1")
    log.info("allow 2")
    assert stream.getvalue() == ""
    log.warning("store down")
    assert texts(stream) == ["allow 1", "allow 2", "store down"]


def test_the_writer_thread_writes_waiting_lines_within_the_interval(logger: Any) -> None:
    log, stream = logger(0.05)
    log.info("allow 1")
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert texts(stream) == ["allow 1"]


def test_zero_writes_every_line_at_once(logger: Any) -> None:
    log, stream = logger(0.0)
    log.info("allow 1")
    assert texts(stream) == ["allow 1"]


_SCRIPT = """
import logging, os, sys
from autoconfig import logs
logs.configure("INFO", 60.0)
log = logging.getLogger("autoconfig.test")
log.info("before the fork")
pid = os.fork()
if pid == 0:
    log.info("child routine")
    sys.exit(0)  # a normal exit: logging.shutdown writes what waits
os.waitpid(pid, 0)
log.info("parent routine")
"""


def test_waiting_lines_are_written_at_exit_once_even_across_a_fork() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    lines = [LINE.match(line) for line in done.stderr.splitlines()]
    assert all(lines), done.stderr
    assert sorted(m["text"] for m in lines if m) == ["before the fork", "child routine", "parent routine"]


@pytest.mark.parametrize(("value", "message"), [(-1, "between 0 and 60"), (61, "between 0 and 60"), ("1s", "a number")])
def test_bad_flush_intervals_are_named(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], value: object, message: str
) -> None:
    config_data["service"]["log_flush_seconds"] = value
    with pytest.raises(ConfigError, match=f"service.log_flush_seconds: .*{message}"):
        load(write_config(config_data), env={})
