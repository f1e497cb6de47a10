"""Port picking, readiness polling and process stopping for the fixtures.

Servers are handed a concrete port number instead of binding port 0
themselves, because knotd, postgres and dovecot cannot report back which
port they chose. The pick is racy (another process may grab the port
between our close() and the server's bind()), so callers retry on a
failed start rather than trusting the number blindly.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

PORT_ATTEMPTS = 5  # free_port() races lost in a row before a fixture gives up


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


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from /proc."""
    found: list[int] = []
    for children in pathlib.Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(child) for child in children.read_text().split())
        except (OSError, ValueError):
            continue  # a thread that has just exited
    return found


def freeze_tree(proc: "subprocess.Popen[bytes]", timeout: float = 5.0) -> list[int]:
    """SIGSTOP ``proc`` and its children (a PostgreSQL postmaster and its backends); the pids stopped.

    A server that forks a process per client keeps answering its clients
    while only its parent is stopped; freezing the whole tree is what a
    hung host looks like to them.
    """
    freeze(proc, timeout)
    frozen = [proc.pid]
    for pid in child_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        frozen.append(pid)
    return frozen


def thaw(pids: list[int]) -> None:
    """SIGCONT every pid ``freeze_tree`` stopped, children first."""
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            continue


def read_log(path: "pathlib.Path", offset: int = 0) -> str:
    """A server's log file from byte ``offset`` ("" before the server has written one)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def run_setup(argv: list[str], **kwargs: Any) -> None:
    """Run a one-off setup program (initdb and the like); its output is the error if it fails."""
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(
            f"{pathlib.Path(argv[0]).name} failed with status {result.returncode}:\n"
            + result.stdout.decode(errors="replace")
            + result.stderr.decode(errors="replace")
        )


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


class PortServer(ManagedServer):
    """A server that runs on a port the fixture picks for it (see the module docstring)."""

    name = "server"  # the program, as messages name it
    address = "127.0.0.1"
    port = 0

    def log_text(self) -> str:
        raise NotImplementedError

    def _spawn_and_wait(self) -> None:
        """Start the program on ``self.port`` and wait until it answers; ``PortInUse`` if it could not bind."""
        raise NotImplementedError

    def _start_on_a_port(self) -> None:
        """Start on ``self.port`` if the server already has one, else on a free port.

        Keeping the port makes a restart after an outage serve the URLs handed
        out before it; a fresh port that another process wins meanwhile is
        retried on another, ``PORT_ATTEMPTS`` times.
        """
        if self.port:
            try:
                self._spawn_and_wait()
            except PortInUse:
                raise RuntimeError(f"port {self.port} was taken while {self.name} was stopped") from None
            return
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                self._spawn_and_wait()
                return
            except PortInUse:
                continue
        self.port = 0
        raise RuntimeError(f"{self.name} could not bind a free port in {PORT_ATTEMPTS} attempts:\n" + self.log_text())


class DataServer(PortServer):
    """A database-like server: its data made once, the process stopped and started as a test needs.

    :meth:`stop_server`/:meth:`start_server` keep the data and the port, so a
    test can take the server away and bring it back under the same URL;
    :meth:`pause`/:meth:`resume` freeze it (SIGSTOP/SIGCONT): connections stay
    open and nothing answers, which is what a server too slow to answer looks
    like from the client.  :meth:`stop` also deletes the data.

    The data lives in a ``tempfile.mkdtemp()`` directory (``_dir``), not in
    ``workdir``: a Unix socket path must stay under 108 bytes, which pytest's
    deep temp paths can exceed.  ``workdir`` keeps the log, so it stays
    readable after the data is gone.
    """

    log_file = "server.log"  # in workdir
    start_timeout = 15.0
    stop_signal = signal.SIGTERM
    stop_timeout = 5.0

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir.resolve()
        self._dir: pathlib.Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / self.log_file

    def log_text(self, offset: int = 0) -> str:
        """The server log (every start appends), from byte ``offset``."""
        return read_log(self.log_path, offset)

    def start(self) -> None:
        """Make the data (first call only) and start the server."""
        if self._dir is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            directory = pathlib.Path(tempfile.mkdtemp(prefix=f"autoconfig-{self.name}-"))
            try:
                self._make_data(directory)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            self._dir = directory
        self.start_server()

    def stop(self) -> None:
        """Stop the server and delete its data."""
        try:
            self.stop_server()
        finally:
            self.port = 0
            directory, self._dir = self._dir, None
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

    def start_server(self) -> None:
        if self._dir is None:
            raise RuntimeError("no data directory: call start() first")
        if self._proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        self._start_on_a_port()

    def stop_server(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot shut down
            stop_process(proc, self.stop_signal, timeout=self.stop_timeout)

    def pause(self) -> None:
        assert self._proc is not None
        freeze(self._proc)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def _make_data(self, directory: pathlib.Path) -> None:
        """Fill the fresh, empty ``directory`` with what the server needs to start."""
        raise NotImplementedError

    def _launch(
        self,
        argv: list[str],
        ready: Callable[[], bool],
        what: str,
        retry_on: tuple[type[Exception], ...],
        **popen: Any,
    ) -> None:
        """Run ``argv`` with its output appended to the log; return once ``ready()`` (see :func:`await_start`)."""
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **popen)
        await_start(
            proc,
            ready,
            self.start_timeout,
            f"{self.name} on {self.address}:{self.port} to {what}",
            name=self.name,
            log=lambda: self.log_text(log_start),
            retry_on=retry_on,
            stop_signal=self.stop_signal,
        )
        self._proc = proc
