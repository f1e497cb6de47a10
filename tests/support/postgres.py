"""A throw-away PostgreSQL cluster on a loopback port: the installed major version (Debian 12: 15, Debian 13: 17).

``initdb`` and ``postgres`` refuse to run as root. Under root (as in CI)
both run as the ``postgres`` system user that the Debian package creates,
switched to with ``subprocess.Popen(user=...)`` rather than ``runuser`` so
that the PID we hold is the postmaster's own and signals reach it directly.

The cluster (data dir and Unix socket dir) does not live in ``workdir``:
pytest's ``/tmp/pytest-of-root`` is mode 0700, which the ``postgres`` user
cannot traverse, and deep pytest paths can exceed the 107-byte limit of a
Unix socket path. It goes into a fresh ``tempfile.mkdtemp()`` directory
under ``/tmp`` instead, which :meth:`DataServer.stop` deletes.
``workdir`` keeps the server log (``postgres.log``), written through a
file descriptor we open, so it stays readable after the cluster is gone.

Durability is switched off (``fsync``, ``synchronous_commit``,
``full_page_writes``): a crash loses a test database, which costs nothing.

:class:`PostgresStandby` (at the end) is a streaming-replication standby of
a running cluster, copied with ``pg_basebackup -R`` and started on another
loopback address; :meth:`PostgresCluster.crash` kills a cluster as a crash
would, for the failover test (tests/test_failover.py).
"""

import functools
import os
import pathlib
import shutil
import signal
import urllib.parse

import psycopg
from psycopg import sql

from tests.support.ports import DataServer, freeze_tree, run_setup, thaw, wait_for


@functools.cache
def pg_bin() -> pathlib.Path:
    """The server binaries of the newest PostgreSQL the Debian package installed, as
    ``pg_ctlcluster`` would pick; ``/usr/lib/postgresql/<major>/bin`` holds each."""
    found = sorted(
        (path for path in pathlib.Path("/usr/lib/postgresql").glob("*/bin") if path.parent.name.isdigit()),
        key=lambda path: int(path.parent.name),
    )
    if not found:
        raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql/*/bin (Debian package postgresql)")
    return found[-1]


SUPERUSER = "postgres"


class PostgresCluster(DataServer):
    """initdb once, then start and stop ``postgres`` as often as a test needs (see :class:`DataServer`).

    Its fast shutdown (SIGINT, what ``pg_ctl stop -m fast`` sends) aborts the
    clients' sessions, as an outage would; the default SIGTERM ("smart")
    would wait for every client to disconnect.
    """

    name = "postgres"
    log_file = "postgres.log"
    stop_signal = signal.SIGINT

    def __init__(self, workdir: pathlib.Path):
        super().__init__(workdir)
        # Whom initdb/postgres run as (Popen user/group/extra_groups);
        # None means "as ourselves". Dropping root also drops its groups.
        self._run_as = SUPERUSER if os.geteuid() == 0 else None
        self._extra_groups: list[str] | None = None if self._run_as is None else []
        self._frozen: list[int] = []

    def pause(self) -> None:
        """Freeze the postmaster and every backend: to its clients, a server that stopped answering."""
        assert self._proc is not None
        self._frozen = freeze_tree(self._proc)

    def resume(self) -> None:
        thaw(self._frozen)
        self._frozen = []

    def crash(self) -> None:
        """SIGKILL the postmaster and every process it started, at once: the server crashed.

        Killing only the postmaster would leave its backends serving their
        clients for a while, which no crash does; killing the backends first
        would let the postmaster notice and restart them.  So the whole tree is
        frozen first (the postmaster before its children, so none is forked in
        between), then killed.  The kernel closes the sockets, so clients see
        their connections reset and new connections refused, as after a crash
        of the server process (a host that loses power instead answers nothing:
        that is :meth:`PostgresCluster.pause`).  The data directory stays until
        :meth:`DataServer.stop`; :meth:`DataServer.start_server` would start it
        again through crash recovery.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            raise RuntimeError(f"{self.name} is not running")
        for pid in freeze_tree(proc):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        proc.wait()  # its children, now orphans, are reaped by init

    def dsn(self, name: str) -> str:
        """libpq URI for database ``name`` as the passwordless superuser."""
        database = urllib.parse.quote(name, safe="")
        return f"postgresql://{SUPERUSER}@{self.address}:{self.port}/{database}"

    def socket_dsn(self, name: str) -> str:
        """libpq URI for database ``name`` over the cluster's Unix socket instead of TCP."""
        assert self._dir is not None
        database = urllib.parse.quote(name, safe="")
        socket_dir = urllib.parse.quote(str(self._dir / "socket"), safe="")
        return f"postgresql://{SUPERUSER}@/{database}?host={socket_dir}&port={self.port}"

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` and return its DSN."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def _prepare(self, directory: pathlib.Path) -> None:
        """The socket directory, and both owned by the user the server runs as."""
        (directory / "socket").mkdir()
        if self._run_as is not None:
            for path in (directory, directory / "socket"):
                shutil.chown(path, self._run_as, self._run_as)

    def _run_as_server(self, command: list[str], directory: pathlib.Path) -> None:
        """A setup command (initdb, pg_basebackup) as the server's user, so what it writes is the server's."""
        run_setup(command, cwd=directory, user=self._run_as, group=self._run_as, extra_groups=self._extra_groups)

    def _make_data(self, directory: pathlib.Path) -> None:
        self._prepare(directory)
        self._run_as_server(
            [
                str(pg_bin() / "initdb"),
                f"--pgdata={directory / 'data'}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            directory,
        )

    def _spawn_and_wait(self) -> None:
        assert self._dir is not None
        settings = {
            "port": self.port,
            "listen_addresses": self.address,
            "unix_socket_directories": self._dir / "socket",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        self._launch(
            [
                str(pg_bin() / "postgres"),
                f"-D{self._dir / 'data'}",
                *(f"--{name}={value}" for name, value in settings.items()),
            ],
            self._accepts_queries,
            "answer SELECT 1",
            retry_on=(psycopg.OperationalError,),
            cwd=self._dir,
            user=self._run_as,
            group=self._run_as,
            extra_groups=self._extra_groups,
        )

    def _accepts_queries(self) -> bool:
        """True once ``SELECT 1`` works."""
        with psycopg.connect(self.dsn("postgres"), connect_timeout=1) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)


# -- streaming replication: a standby to promote when the primary is gone -------------------


class PostgresStandby(PostgresCluster):
    """A hot standby of a running :class:`PostgresCluster`, streaming from it, on a loopback address of its own.

    Its data directory is made by ``pg_basebackup --write-recovery-conf``
    from ``primary`` (which must be running when :meth:`start` is first
    called): a copy of the primary's data with ``standby.signal`` and a
    ``primary_conninfo`` naming the primary's address and port, streaming
    the WAL it needs while the copy is taken. Started, it replays what the
    primary writes and answers read-only queries (``hot_standby`` is on by
    default); :meth:`promote` makes it a primary of its own.

    It listens on ``address`` (default 127.0.0.2, which Linux routes to
    loopback like every 127.x address), so a libpq URL can name the two
    servers as two hosts. Nothing in the primary needs changing: the
    defaults of PostgreSQL 10 and later (``wal_level = replica``,
    ``max_wal_senders = 10``) allow streaming, and ``initdb --auth=trust``
    writes ``host replication all 127.0.0.1/32 trust``. A connection to
    127.0.0.1 comes from 127.0.0.1, and so does one from this host to
    127.0.0.2 (Linux gives a connection to any 127.x address the source
    127.0.0.1), so the standby's copy of that ``pg_hba.conf`` admits clients
    too. pg_basebackup runs as the user the servers run as (``postgres``
    under root), so the files it writes are the server's own.

    Replication is asynchronous: a commit on the primary returns before the
    standby has it. :meth:`wait_for_replay` waits until the standby has
    replayed everything the primary had written when it was called.
    """

    name = "postgres-standby"
    log_file = "postgres-standby.log"

    def __init__(self, workdir: pathlib.Path, primary: PostgresCluster, address: str = "127.0.0.2") -> None:
        super().__init__(workdir)
        self.primary = primary
        self.address = address

    def _make_data(self, directory: pathlib.Path) -> None:
        if not self.primary.port:
            raise RuntimeError("the primary must be running to copy a standby from it")
        self._prepare(directory)
        self._run_as_server(
            [
                str(pg_bin() / "pg_basebackup"),
                f"--pgdata={directory / 'data'}",
                f"--host={self.primary.address}",
                f"--port={self.primary.port}",
                f"--username={SUPERUSER}",
                "--write-recovery-conf",
                "--checkpoint=fast",  # the copy starts at once, not at the next scheduled checkpoint
                "--wal-method=stream",
                "--no-sync",
                "--no-password",
            ],
            directory,
        )

    def wait_for_replay(self, timeout: float = 10.0) -> None:
        """Return once the standby has replayed everything the primary has committed so far.

        The position taken is the primary's WAL insert position, not its write
        position: with ``synchronous_commit`` off (see the module docstring) a
        commit returns before its record is written, and the WAL writer
        writes it, and the standby receives it, within ``wal_writer_delay``.
        """
        with psycopg.connect(self.primary.dsn("postgres"), autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=2) as conn:

            def replayed() -> bool:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
                return done == (True,)

            wait_for(replayed, timeout, f"{self.name} to replay the primary's WAL up to {target}", retry_on=())

    def is_in_recovery(self) -> bool:
        """True while the server is a standby; False once promoted."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return row == (True,)

    def promote(self, timeout: int = 30) -> None:
        """``SELECT pg_promote()``: leave recovery and accept writes; returns once it does."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_promote(true, %s)", (timeout,)).fetchone()
        if row != (True,):
            raise RuntimeError(f"{self.name} was not promoted within {timeout} s:\n{self.log_text()[-3000:]}")


def latin1_database(postgres: PostgresCluster, name: str) -> str:
    """A database in LATIN1, as older mail systems' databases still are."""
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    return postgres.dsn(name)
