"""A throw-away MariaDB 10.11 server on a loopback port.

``mariadb-install-db`` makes a data directory in a fresh ``tempfile.mkdtemp()``
directory under ``/tmp`` (a Unix socket path must stay under 108 bytes, which
pytest's deep temp paths can exceed); ``mariadbd`` then runs on it with
``--no-defaults``, so nothing from the Debian package's ``/etc/mysql`` (its
port 3306, its socket, its log files) is touched.  Under root the server runs
as root (``--user=root``); the root account logs in over the private socket
only (unix_socket authentication), and tests create their own password
accounts for the service.

Durability is off (``innodb_flush_log_at_trx_commit=0``, no doublewrite, no
binary log): a crash loses a test database, which costs nothing, and the
InnoDB files start small so the first start takes about a second.
"""

from __future__ import annotations

import pathlib
import shutil
import signal
import subprocess
import tempfile

import MySQLdb

from tests.support.ports import ManagedServer, PortInUse, await_start, free_port, freeze, read_log, stop_process

INSTALL_DB = "/usr/bin/mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"
START_TIMEOUT = 30.0
PORT_ATTEMPTS = 5


class MariaDBServer(ManagedServer):
    """install-db once, then start and stop ``mariadbd`` as often as a test needs.

    :meth:`stop_server`/:meth:`start_server` keep the data and the port, so a
    test can take the server away and bring it back under the same URL;
    :meth:`pause`/:meth:`resume` freeze it (SIGSTOP/SIGCONT): connections stay
    open and nothing answers, which is what a database too slow to answer
    looks like from the client.  :meth:`stop` also deletes the data.
    """

    address = "127.0.0.1"

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir.resolve()
        self.port = 0
        self._dir: pathlib.Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / "mariadb.log"

    @property
    def socket_path(self) -> pathlib.Path:
        assert self._dir is not None
        return self._dir / "sock"

    def start(self) -> None:
        if self._dir is None:
            self._install()
        self.start_server()

    def stop(self) -> None:
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
            raise RuntimeError("mariadbd is already running")
        if self.port:
            try:
                self._spawn_and_wait()
            except PortInUse:
                raise RuntimeError(f"port {self.port} was taken while mariadbd was stopped") from None
            return
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                self._spawn_and_wait()
                return
            except PortInUse:
                continue
        self.port = 0
        raise RuntimeError(f"mariadbd could not bind a free port in {PORT_ATTEMPTS} attempts:\n" + self.log_text())

    def stop_server(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot shut down
            stop_process(proc, signal.SIGTERM, timeout=15.0)

    def pause(self) -> None:
        assert self._proc is not None
        freeze(self._proc)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def root(self, database: str | None = None) -> MySQLdb.Connection:
        """A root connection over the private socket (autocommit)."""
        kwargs = {"db": database} if database else {}
        conn = MySQLdb.connect(unix_socket=str(self.socket_path), user="root", connect_timeout=2, **kwargs)
        conn.autocommit(True)
        return conn

    def create_database(self, name: str, user: str, password: str, *, grant: str = "SELECT") -> str:
        """``CREATE DATABASE name`` with ``user`` allowed ``grant`` on it; the service's mysql:// URL."""
        conn = self.root()
        try:
            cur = conn.cursor()
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            cur.execute("CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT {grant} ON `{name}`.* TO %s@'127.0.0.1'", (user,))
        finally:
            conn.close()
        return self.url(name, user, password)

    def url(self, database: str, user: str, password: str) -> str:
        return f"mysql://{user}:{password}@{self.address}:{self.port}/{database}"

    def log_text(self, offset: int = 0) -> str:
        return read_log(self.log_path, offset)

    def _install(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        directory = pathlib.Path(tempfile.mkdtemp(prefix="autoconfig-maria-"))
        try:
            result = subprocess.run(
                [
                    INSTALL_DB,
                    "--no-defaults",
                    f"--datadir={directory / 'data'}",
                    "--user=root",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    "--innodb-log-file-size=8M",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"mariadb-install-db failed with status {result.returncode}:\n"
                    + result.stdout.decode(errors="replace")
                    + result.stderr.decode(errors="replace")
                )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._dir = directory

    def _spawn_and_wait(self) -> None:
        assert self._dir is not None
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    MARIADBD,
                    "--no-defaults",
                    f"--datadir={self._dir / 'data'}",
                    f"--socket={self.socket_path}",
                    f"--pid-file={self._dir / 'mariadbd.pid'}",
                    f"--port={self.port}",
                    f"--bind-address={self.address}",
                    "--user=root",
                    "--skip-log-bin",
                    "--skip-name-resolve",
                    "--innodb-log-file-size=8M",
                    "--innodb-buffer-pool-size=64M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-doublewrite=0",
                    "--performance-schema=0",
                    "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_general_ci",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await_start(
            proc,
            self._answers,
            START_TIMEOUT,
            f"mariadbd on {self.address}:{self.port} to answer SELECT 1",
            name="mariadbd",
            log=lambda: self.log_text(log_start),
            retry_on=(MySQLdb.OperationalError, OSError),
        )
        self._proc = proc

    def _answers(self) -> bool:
        """True once root's ``SELECT 1`` works (mariadbd opens its TCP port before its socket)."""
        conn = self.root()
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
        finally:
            conn.close()

    def __repr__(self) -> str:
        return f"MariaDBServer({self.address}:{self.port})"
