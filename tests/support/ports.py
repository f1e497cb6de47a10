"""Port picking, readiness polling and process stopping for the fixtures.

Servers are handed a concrete port number instead of binding port 0
themselves, because knotd, postgres and dovecot cannot report back which
port they chose. The pick is racy (another process may grab the port
between our close() and the server's bind()), so callers retry on a
failed start rather than trusting the number blindly.
"""

import pathlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    retry_on: tuple[type[Exception], ...] = (OSError,),
    interval: float = 0.01,
) -> None:
    """Call ``predicate`` until it returns True or ``timeout`` seconds pass.

    Exceptions listed in ``retry_on`` count as "not yet" (a server that is
    still starting refuses connections); the last one is chained to the
    TimeoutError so a failing fixture shows why it never became ready. Any
    other exception propagates at once, which lets a predicate abort the
    wait early, e.g. when the server process has already exited.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            if predicate():
                return
        except retry_on as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}") from last_error
        time.sleep(interval)


def stop_process(
    proc: "subprocess.Popen[bytes]",
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 5.0,
) -> None:
    """Send ``sig`` to ``proc`` and reap it; SIGKILL it if it outlives ``timeout``.

    Always reaping (``wait``) matters: a server left as a zombie or, worse,
    still running would keep its port and files busy for later tests.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def freeze(proc: "subprocess.Popen[bytes]", timeout: float = 5.0) -> None:
    """SIGSTOP ``proc``; return once every one of its threads has stopped.

    The signal takes effect as each thread next runs: on a busy machine a
    thread already serving a client could otherwise still answer the next
    request, and a test of a frozen server would see an answer.
    """
    proc.send_signal(signal.SIGSTOP)
    tasks = pathlib.Path(f"/proc/{proc.pid}/task")

    def stopped() -> bool:
        for stat in tasks.glob("*/stat"):
            try:
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue  # a thread that has just exited
            if state not in ("T", "t"):
                return False
        return True

    wait_for(stopped, timeout, f"process {proc.pid} to stop (SIGSTOP)")


def read_log(path: "pathlib.Path", offset: int = 0) -> str:
    """A server's log file from byte ``offset`` ("" before the server has written one)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


class PortInUse(Exception):
    """The server could not bind the port it was given; pick another and start again."""


def await_start(
    proc: "subprocess.Popen[bytes]",
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    name: str,
    log: Callable[[], str],
    retry_on: tuple[type[Exception], ...] = (OSError,),
    stop_signal: signal.Signals = signal.SIGTERM,
) -> None:
    """Wait until ``ready()`` while ``proc`` runs.

    If it exits, raise ``PortInUse`` when its log says so (the caller retries
    on another port), else ``RuntimeError`` with the log; on a timeout, stop it
    and raise with the log, so a failing fixture says why.
    """

    def check() -> bool:
        if proc.poll() is not None:
            output = log()
            if "Address already in use" in output:
                raise PortInUse()
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{output}")
        return ready()

    try:
        wait_for(check, timeout, what, retry_on=retry_on)
    except BaseException as exc:
        stop_process(proc, stop_signal)
        if isinstance(exc, TimeoutError):
            raise RuntimeError(f"{exc}; {name} log:\n{log()}") from exc
        raise


class ManagedServer:
    """A server process a test owns: started on ``with`` entry, always stopped on exit."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
