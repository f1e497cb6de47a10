"""A throw-away PostgreSQL 15 cluster on a loopback port.

``initdb`` and ``postgres`` refuse to run as root. Under root (as in CI)
both run as the ``postgres`` system user that the Debian package creates,
switched to with ``subprocess.Popen(user=...)`` rather than ``runuser`` so
that the PID we hold is the postmaster's own and signals reach it directly.

The cluster (data dir and Unix socket dir) does not live in ``workdir``:
pytest's ``/tmp/pytest-of-root`` is mode 0700, which the ``postgres`` user
cannot traverse, and deep pytest paths can exceed the 107-byte limit of a
Unix socket path. It goes into a fresh ``tempfile.mkdtemp()`` directory
under ``/tmp`` instead, which :meth:`PostgresCluster.stop` deletes.
``workdir`` keeps the server log (``postgres.log``), written through a
file descriptor we open, so it stays readable after the cluster is gone.

Durability is switched off (``fsync``, ``synchronous_commit``,
``full_page_writes``): a crash loses a test database, which costs nothing.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import urllib.parse

import psycopg
from psycopg import sql

from tests.support.ports import ManagedServer, PortInUse, await_start, free_port, read_log, stop_process

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
START_TIMEOUT = 15.0
PORT_ATTEMPTS = 5


class PostgresCluster(ManagedServer):
    """initdb once, then start and stop ``postgres`` as often as a test needs.

    :meth:`stop_server`/:meth:`start_server` keep the data and the port, so
    a test can simulate a database outage and its recovery with the same
    DSN; :meth:`stop` also deletes the cluster.
    """

    address = "127.0.0.1"

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir.resolve()
        self.port = 0
        self._cluster_dir: pathlib.Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Whom initdb/postgres run as (Popen user/group/extra_groups);
        # None means "as ourselves". Dropping root also drops its groups.
        self._run_as = SUPERUSER if os.geteuid() == 0 else None
        self._extra_groups: list[str] | None = None if self._run_as is None else []

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / "postgres.log"

    def start(self) -> None:
        """Create the cluster (first call only) and start the server."""
        if self._cluster_dir is None:
            self._init_cluster()
        self.start_server()

    def stop(self) -> None:
        """Stop the server and delete the cluster with all its data."""
        try:
            self.stop_server()
        finally:
            self.port = 0
            cluster_dir, self._cluster_dir = self._cluster_dir, None
            if cluster_dir is not None:
                shutil.rmtree(cluster_dir, ignore_errors=True)

    def start_server(self) -> None:
        """Start ``postgres`` on the existing data dir and wait for ``SELECT 1``.

        The first start picks a free port (retrying if another process
        wins the race for it); later starts reuse that port so DSNs handed
        out before an outage work again after it.
        """
        if self._cluster_dir is None:
            raise RuntimeError("no cluster: call start() first")
        if self._proc is not None:
            raise RuntimeError("postgres is already running")
        if self.port:
            try:
                self._spawn_and_wait()
            except PortInUse:
                raise RuntimeError(f"port {self.port} was taken while postgres was stopped") from None
            return
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                self._spawn_and_wait()
                return
            except PortInUse:
                continue
        self.port = 0
        raise RuntimeError(f"postgres could not bind a free port in {PORT_ATTEMPTS} attempts:\n" + self.log_text())

    def stop_server(self) -> None:
        """Fast shutdown, keeping the data dir: clients see their sessions abort.

        SIGINT to the postmaster is what ``pg_ctl stop -m fast`` sends; the
        default SIGTERM ("smart") would wait for every client to disconnect.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, signal.SIGINT)

    def dsn(self, name: str) -> str:
        """libpq URI for database ``name`` as the passwordless superuser."""
        database = urllib.parse.quote(name, safe="")
        return f"postgresql://{SUPERUSER}@{self.address}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` and return its DSN."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def log_text(self, offset: int = 0) -> str:
        """The server log (every ``postgres`` start appends), from byte ``offset``."""
        return read_log(self.log_path, offset)

    def _init_cluster(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cluster_dir = pathlib.Path(tempfile.mkdtemp(prefix="autoconfig-pg-"))
        try:
            (cluster_dir / "socket").mkdir()
            if self._run_as is not None:
                for path in (cluster_dir, cluster_dir / "socket"):
                    shutil.chown(path, self._run_as, self._run_as)
            result = subprocess.run(
                [
                    str(PG_BIN / "initdb"),
                    f"--pgdata={cluster_dir / 'data'}",
                    f"--username={SUPERUSER}",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                cwd=cluster_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                user=self._run_as,
                group=self._run_as,
                extra_groups=self._extra_groups,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"initdb failed with status {result.returncode}:\n"
                    + result.stdout.decode(errors="replace")
                    + result.stderr.decode(errors="replace")
                )
        except BaseException:
            shutil.rmtree(cluster_dir, ignore_errors=True)
            raise
        self._cluster_dir = cluster_dir

    def _spawn_and_wait(self) -> None:
        assert self._cluster_dir is not None
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        settings = {
            "port": self.port,
            "listen_addresses": self.address,
            "unix_socket_directories": self._cluster_dir / "socket",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    str(PG_BIN / "postgres"),
                    f"-D{self._cluster_dir / 'data'}",
                    *(f"--{name}={value}" for name, value in settings.items()),
                ],
                cwd=self._cluster_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._run_as,
                group=self._run_as,
                extra_groups=self._extra_groups,
            )
        await_start(
            proc,
            self._accepts_queries,
            START_TIMEOUT,
            f"postgres on {self.address}:{self.port} to answer SELECT 1",
            name="postgres",
            log=lambda: self.log_text(log_start),
            retry_on=(psycopg.OperationalError,),
            stop_signal=signal.SIGINT,
        )
        self._proc = proc

    def _accepts_queries(self) -> bool:
        """True once ``SELECT 1`` works."""
        with psycopg.connect(self.dsn("postgres"), connect_timeout=1) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
