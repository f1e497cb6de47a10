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
"""

import functools
import os
import pathlib
import shutil
import signal
import urllib.parse

import psycopg
from psycopg import sql

from tests.support.ports import DataServer, freeze_tree, run_setup, thaw


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

    def _make_data(self, directory: pathlib.Path) -> None:
        (directory / "socket").mkdir()
        if self._run_as is not None:
            for path in (directory, directory / "socket"):
                shutil.chown(path, self._run_as, self._run_as)
        run_setup(
            [
                str(pg_bin() / "initdb"),
                f"--pgdata={directory / 'data'}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=directory,
            user=self._run_as,
            group=self._run_as,
            extra_groups=self._extra_groups,
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
