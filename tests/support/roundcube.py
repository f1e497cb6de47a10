"""Debian's Roundcube 1.6 on PHP-FPM (Debian 12: PHP 8.2, Debian 13: 8.4) behind nginx, with the repository's plugin.

The Debian package installs Roundcube under ``/var/lib/roundcube`` (symlinks
into ``/usr/share/roundcube``) with its config in ``/etc/roundcube``.  This
harness builds a private install root of the same shape in a temp dir: the
program, skins and stock plugins are symlinks to the package's files, while
the config, the SQLite database, the logs, the temp dir and the plugins dir
are its own.  The plugin under test (``roundcube-plugin/autoconfig_mail_programs``)
is copied in as it is in the repository, because the PHP workers run as
``www-data`` and may not be able to read a clone in a private directory.

Roundcube's entry point (``public_html/index.php``) derives the install root
from its own location, so the package's code runs unchanged against this
root.  OPcache is off in the pool, so a test may rewrite the plugin's
options (:meth:`RoundcubeServer.configure`) between two requests.
"""

from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .ports import ManagedServer, PortInUse, await_start, free_port, read_log, stop_process

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "roundcube-plugin" / "autoconfig_mail_programs"
PLUGIN_NAME = PLUGIN.name
PACKAGE_ROOT = Path("/var/lib/roundcube")
PACKAGE_CONFIG = Path("/etc/roundcube")
NGINX = "/usr/sbin/nginx"
POOL_USER = "www-data"
START_TIMEOUT = 15.0


@functools.cache
def php_fpm() -> str:
    """The FPM binary of the PHP the ``php-fpm`` package pulled in (``php-fpm8.2``, ``php-fpm8.4``):
    Debian names it by version, and only one PHP is installed at a time here."""
    found = sorted(
        Path("/usr/sbin").glob("php-fpm[0-9]*.[0-9]*"),
        key=lambda path: tuple(int(part) for part in path.name.removeprefix("php-fpm").split(".") if part.isdigit()),
    )
    if not found:
        raise RuntimeError("no PHP-FPM in /usr/sbin (Debian package php-fpm)")
    return str(found[-1])


def php_value(value: Any) -> str:
    """A PHP literal for a config value (strings quoted and escaped for single quotes)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(php_value(item) for item in value) + "]"
    raise TypeError(f"no PHP literal for {value!r}")


class RoundcubeServer(ManagedServer):
    """Roundcube at ``http://127.0.0.1:<port>/``, reading mail from the IMAP server on ``imap_port``.

    ``options`` are written into Roundcube's config.inc.php after the
    harness's own settings (plugin options such as ``autoconfig_api_url``);
    ``php_admin`` adds PHP settings to the pool (``php_admin_value[name] = value``).
    """

    address = "127.0.0.1"

    def __init__(
        self, workdir: Path, imap_port: int, options: dict[str, Any], php_admin: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir.resolve()
        self.imap_port = imap_port
        self.options = dict(options)
        self.php_admin = dict(php_admin or {})
        self.port = 0
        self.root: Path | None = None
        # Fixed for the server's life: a session must outlive a config rewrite.
        self._des_key = secrets.token_hex(12)
        self._fpm: subprocess.Popen[bytes] | None = None
        self._nginx: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RoundcubeServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self._make_root()
        try:
            self._start_fpm()
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in ("_nginx", "_fpm"):
            proc = getattr(self, name)
            setattr(self, name, None)
            if proc is not None:
                stop_process(proc, timeout=10)
        root, self.root = self.root, None
        if root is not None:
            # Keep Roundcube's own logs for a post-mortem, then drop the root.
            for log in (root / "logs").glob("*"):
                shutil.copy(log, self.workdir / f"roundcube-{log.name}")
            shutil.rmtree(root, ignore_errors=True)

    def configure(self, **options: Any) -> None:
        """Change config options; the next request reads them (OPcache is off)."""
        self.options.update(options)
        self._write_config()

    def log_text(self) -> str:
        """PHP-FPM's, nginx's and Roundcube's logs: everything that could say why a page failed."""
        parts = [read_log(self.workdir / name) for name in ("php-fpm.log", "nginx-error.log", "nginx.stderr")]
        if self.root is not None:
            parts += [read_log(path) for path in sorted((self.root / "logs").glob("*"))]
        return "\n".join(part for part in parts if part)

    def plugin_log(self) -> str:
        """What the plugin wrote to its own Roundcube log (autoconfig_mail_programs.log)."""
        assert self.root is not None
        return read_log(self.root / "logs" / f"{PLUGIN_NAME}.log")

    # -- the install root ----------------------------------------------------------------------

    def _make_root(self) -> Path:
        root = Path(tempfile.mkdtemp(prefix="autoconfig-roundcube-"))
        root.chmod(0o755)
        for name in ("program", "skins", "SQL", "index.php"):
            (root / name).symlink_to(os.readlink(PACKAGE_ROOT / name) if name != "skins" else PACKAGE_ROOT / name)
        config = root / "config"
        config.mkdir()
        for path in PACKAGE_CONFIG.glob("*.php"):
            if path.name not in ("config.inc.php",) and not path.name.startswith("debian-db"):
                (config / path.name).symlink_to(path)
        plugins = root / "plugins"
        plugins.mkdir()
        for path in (PACKAGE_ROOT / "plugins").iterdir():
            if path.name != PLUGIN_NAME:  # installed system-wide by a README reader: test ours
                (plugins / path.name).symlink_to(path.resolve())
        shutil.copytree(PLUGIN, plugins / PLUGIN_NAME)
        public = root / "public_html"
        (public / "program").mkdir(parents=True)
        shutil.copy(PACKAGE_ROOT / "public_html" / "index.php", public / "index.php")
        (public / "plugins").symlink_to("../plugins")
        (public / "skins").symlink_to("../skins")
        (public / "program" / "js").symlink_to("../../program/js")
        (public / "program" / "resources").symlink_to("../../program/resources")
        for name in ("temp", "logs", "db"):
            (root / name).mkdir()
            _give_to_pool_user(root / name)
        self.root = root
        self._write_config()
        return root

    def _write_config(self) -> None:
        assert self.root is not None
        settings: dict[str, Any] = {
            "db_dsnw": f"sqlite:///{self.root}/db/roundcube.sqlite?mode=0640",
            "imap_host": f"{self.address}:{self.imap_port}",
            "smtp_host": "",
            "des_key": self._des_key,
            "plugins": [PLUGIN_NAME],
            "skin": "elastic",
            "temp_dir": f"{self.root}/temp/",
            "log_dir": f"{self.root}/logs/",
            "log_driver": "file",
            "enable_installer": False,
            "support_url": "",
            "product_name": "Example Networks Webmail",
            "enable_spellcheck": False,
            "login_rate_limit": 0,
            # The front proxy (the test's browser stands behind it) may name the user's address.
            "proxy_whitelist": [self.address],
        }
        settings |= self.options
        lines = ["<?php", "$config = [];"]
        lines += [f"$config[{php_value(name)}] = {php_value(value)};" for name, value in settings.items()]
        path = self.root / "config" / "config.inc.php"
        temporary = path.with_suffix(".tmp")
        temporary.write_text("\n".join(lines) + "\n")
        temporary.chmod(0o644)
        temporary.replace(path)  # a request never reads half a config

    # -- PHP-FPM and nginx -----------------------------------------------------------------------

    def _start_fpm(self) -> None:
        assert self.root is not None
        user = POOL_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        socket_path = self.root / "php-fpm.sock"
        conf = self.root / "php-fpm.conf"
        conf.write_text(
            f"""\
[global]
pid = {self.root}/php-fpm.pid
error_log = {self.workdir}/php-fpm.log
daemonize = no

[roundcube]
{f"user = {user}" if os.geteuid() == 0 else ""}
listen = {socket_path}
listen.mode = 0666
pm = static
pm.max_children = 4
catch_workers_output = yes
clear_env = yes
php_admin_value[opcache.enable] = 0
php_admin_value[error_log] = {self.root}/logs/php-errors.log
php_admin_flag[log_errors] = on
php_admin_flag[display_errors] = off
php_admin_value[memory_limit] = 128M
"""
            + "".join(f"php_admin_value[{name}] = {value}\n" for name, value in self.php_admin.items())
        )
        with (self.workdir / "php-fpm.stderr").open("ab") as stderr:
            proc = subprocess.Popen(
                [php_fpm(), "--nodaemonize", "--fpm-config", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(socket_path))
            return True

        await_start(
            proc,
            ready,
            START_TIMEOUT,
            "php-fpm to listen",
            name="php-fpm",
            log=lambda: read_log(self.workdir / "php-fpm.log") + read_log(self.workdir / "php-fpm.stderr"),
        )
        self._fpm = proc

    def _start_nginx(self) -> None:
        assert self.root is not None
        public = self.root / "public_html"
        temp = self.root / "nginx-temp"
        temp.mkdir()
        for _ in range(5):
            self.port = free_port()
            conf = self.root / "nginx.conf"
            conf.write_text(
                f"""\
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {self.root}/nginx.pid;
error_log {self.workdir}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
  include /etc/nginx/mime.types;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  access_log off;
  client_max_body_size 8m;
  server {{
    listen {self.address}:{self.port};
    root {public};
    index index.php;
    location ~ \\.php$ {{
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_pass unix:{self.root}/php-fpm.sock;
    }}
  }}
}}
"""
            )
            with (self.workdir / "nginx.stderr").open("ab") as stderr:
                proc = subprocess.Popen(
                    [NGINX, "-p", str(self.root), "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            try:
                await_start(
                    proc,
                    lambda: socket.create_connection((self.address, self.port), timeout=1).close() is None,
                    START_TIMEOUT,
                    "nginx to listen",
                    name="nginx",
                    log=lambda: read_log(self.workdir / "nginx-error.log") + read_log(self.workdir / "nginx.stderr"),
                )
            except PortInUse:
                continue
            self._nginx = proc
            return
        raise RuntimeError("nginx could not bind a free port in 5 attempts")


def _give_to_pool_user(path: Path) -> None:
    """Directories PHP writes to (sessions' temp files, logs, the SQLite file) belong to the pool's user."""
    if os.geteuid() == 0:
        user = pwd.getpwnam(POOL_USER)
        shutil.chown(path, user.pw_uid, user.pw_gid)
