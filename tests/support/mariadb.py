"""A throw-away MariaDB server (Debian 12: 10.11, Debian 13: 11.8) on a loopback port.

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

import MySQLdb

from tests.support.ports import DataServer, run_setup

INSTALL_DB = "/usr/bin/mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"


class MariaDBServer(DataServer):
    """install-db once, then start and stop ``mariadbd`` as often as a test needs (see :class:`DataServer`)."""

    name = "mariadbd"
    log_file = "mariadb.log"
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, workdir: pathlib.Path, *, buffer_pool: str = "64M") -> None:
        """``buffer_pool``: InnoDB's page cache.  Small for tests; a benchmark over a million
        mailboxes sizes it to hold them, as a production server would."""
        super().__init__(workdir)
        self.buffer_pool = buffer_pool

    @property
    def socket_path(self) -> pathlib.Path:
        assert self._dir is not None
        return self._dir / "sock"

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

    def _make_data(self, directory: pathlib.Path) -> None:
        run_setup(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={directory / 'data'}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--innodb-log-file-size=8M",
            ]
        )

    def _spawn_and_wait(self) -> None:
        assert self._dir is not None
        self._launch(
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
                f"--innodb-buffer-pool-size={self.buffer_pool}",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--performance-schema=0",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ],
            self._answers,
            "answer SELECT 1",
            retry_on=(MySQLdb.OperationalError, OSError),
        )

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
