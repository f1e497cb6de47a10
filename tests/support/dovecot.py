"""A private Dovecot IMAP/POP3 server with real, working logins: 2.3 or 2.4, whichever is installed.

Debian 12 ships Dovecot 2.3 and Debian 13 ships 2.4, whose configuration
differs throughout (``dovecot_config_version`` first, ``mail_driver`` and
``mail_path``, named ``passdb``/``userdb`` blocks with ``passwd_file_path``
and ``fields``, string lists as blocks, renamed variables).  The server asks
``dovecot --version`` once and writes the same server in that version's
syntax; what a test asks for beyond the basics (master users, networks
trusted to forward addresses, a PROXY-protocol listener) is a structured
option rendered for either version.  Only ``extra_config`` is written as
given: it is the shipped snippet of the installed version, so the tests
exercise the file an admin copies (:data:`SNIPPETS` names it).

Everything the server touches at run time (config, ``base_dir`` sockets,
``state_dir``, the passwd-files and the maildirs) lives in a fresh
``tempfile.mkdtemp()`` directory under ``/tmp`` made world-traversable
(0755), not in ``workdir``. Under root, Dovecot's own processes drop to
other users (``auth`` to ``dovecot``, the login processes to
``dovenull``, mail processes to the mail user), and those users cannot
enter pytest's ``/tmp/pytest-of-root`` (mode 0700). :meth:`DovecotServer.stop`
deletes that directory. Only the log (``dovecot.log``) goes to
``workdir``: the log process stays root, and the file outlives the server
for post-mortem reading.

Users are mail users in name only: all share one system account for
mail storage. Under root that is ``nobody`` (Dovecot refuses mail access
as UID 0); otherwise the current user, who then also stands in for
Dovecot's internal and login users, since a non-root master cannot
switch users.

The Debian package also runs a system Dovecot on 143/110; this server
never listens there (or on 993/995/4190) and does not share its
``base_dir``.
"""

import functools
import grp
import os
import pathlib
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence

from tests.support.ports import ManagedServer, PortInUse, await_start, free_port, read_log, stop_process

DOVECOT = "/usr/sbin/dovecot"
START_TIMEOUT = 10.0
PORT_ATTEMPTS = 5
ROOT_MAIL_USER = "nobody"
# user*master logs in as user with the master's password (auth_master_user_separator).
MASTER_SEPARATOR = "*"
# The shipped snippet for each Dovecot series, in config/.
REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
SNIPPETS = {"2.3": "dovecot-2.3-auth-policy.conf", "2.4": "dovecot-2.4-auth-policy.conf"}
# The request attributes the snippets send, and "tls", which Dovecot adds to every request itself;
# Dovecot's defaults the snippets leave out.
SNIPPET_SENDS = {"login", "protocol", "remote", "real_remote", "session_id", "tls"}
SNIPPET_NEVER_SENDS = {"pwhash", "device_id", "fail_type"}

# Dovecot's default attributes, spelled out so a test can rely on the JSON
# body the policy server receives: login name, protocol ("imap"/"pop3"),
# client IP, and the password hash the shipped snippets leave out.
POLICY_REQUEST_ATTRIBUTES = {
    "2.3": {
        "login": "%{requested_username}",
        "pwhash": "%{hashed_password}",
        "remote": "%{rip}",
        "device_id": "%{client_id}",
        "protocol": "%s",
        "session_id": "%{session}",
    },
    "2.4": {
        "login": "%{requested_username}",
        "pwhash": "%{hashed_password}",
        "remote": "%{remote_ip}",
        "device_id": "%{client_id}",
        "protocol": "%{protocol}",
        "session_id": "%{session}",
    },
}


@functools.cache
def installed_version() -> str:
    """The installed Dovecot's version without its build: ``2.3.19.1`` on Debian 12, ``2.4.1`` on Debian 13."""
    output = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    match = re.match(r"\s*(\d+\.\d+(?:\.\d+)*)", output)
    if match is None:
        raise RuntimeError(f"{DOVECOT} --version said {output!r}, not a version")
    return match.group(1)


def version_preamble() -> str:
    """What a 2.4 dovecot.conf must start with (which defaults and storage format it was written
    for); nothing for 2.3, which knows neither setting."""
    if installed_series() == "2.3":
        return ""
    return f"dovecot_config_version = {installed_version()}\ndovecot_storage_version = {installed_version()}\n"


def installed_series() -> str:
    """``2.3`` or ``2.4``: the configuration syntax the installed Dovecot reads."""
    series = ".".join(installed_version().split(".")[:2])
    if series not in SNIPPETS:
        raise RuntimeError(f"Dovecot {installed_version()} is installed; these fixtures speak 2.3 and 2.4")
    return series


def dovecot_settings(url: str, api_header: str, reject_on_fail: bool, series: str | None = None) -> str:
    """The shipped snippet (for the installed Dovecot, or ``series``) with this test's URL, secret,
    nonce and fail choice: each a ``name = value`` line of its own, as an admin or
    ``autoconfig dovecot snippet`` fills it in."""
    text = (REPOSITORY / "config" / SNIPPETS[series or installed_series()]).read_text()
    for name, value in (
        ("auth_policy_server_url", url),
        ("auth_policy_server_api_header", api_header),
        ("auth_policy_hash_nonce", secrets.token_hex(16)),
        ("auth_policy_reject_on_fail", "yes" if reject_on_fail else "no"),
    ):
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.MULTILINE)
        assert count == 1, f"the snippet must set {name} exactly once"
    assert not [line for line in text.splitlines() if "replace-with" in line and not line.startswith("#")]
    return text


class DovecotServer(ManagedServer):
    """Run ``dovecot -F`` as a child process with IMAP and POP3 on loopback.

    ``users`` maps login names to plaintext passwords. With ``policy_url``
    set, the auth process asks that HTTP auth-policy server before and
    after each authentication (Dovecot appends ``?command=allow`` or
    ``?command=report`` to the URL, or just ``command=...`` if it ends with
    ``&``), sending ``policy_api_header`` (``"Name: value"``) with each
    request and Dovecot's default attributes (:data:`POLICY_REQUEST_ATTRIBUTES`);
    ``reject_on_fail`` decides whether logins fail when the policy server
    cannot be reached.

    ``master_users`` maps master-user names to passwords (``user*master``
    logs in as ``user``); ``login_trusted_networks`` may forward their
    clients' addresses (IMAP ID); with ``haproxy_trusted_networks``, IMAP
    also listens on :attr:`haproxy_port` for load balancers speaking the
    PROXY protocol from those networks. With ``tls`` (a certificate and its
    key, PEM files), IMAP and POP3 also listen with implicit TLS on
    :attr:`imaps_port` and :attr:`pop3s_port` (IMAPS and POP3S, as an ISP
    runs them). ``passdb_scheme`` is how the passdb stores the passwords:
    ``PLAIN``, or a scheme ``doveadm pw`` knows (``SHA512-CRYPT``, as an ISP
    stores them), each user's hash made once at start. ``extra_config`` is appended
    verbatim, so it must be in the installed version's syntax: the shipped
    snippet of :func:`installed_series`, as a test exercises it as is.
    """

    address = "127.0.0.1"

    def __init__(
        self,
        workdir: pathlib.Path,
        users: dict[str, str],
        policy_url: str | None = None,
        policy_api_header: str | None = None,
        reject_on_fail: bool = False,
        extra_config: str = "",
        *,
        master_users: Mapping[str, str] | None = None,
        login_trusted_networks: Sequence[str] = (),
        haproxy_trusted_networks: Sequence[str] = (),
        tls: tuple[pathlib.Path, pathlib.Path] | None = None,
        passdb_scheme: str = "PLAIN",
    ):
        for login, password in (users | dict(master_users or {})).items():
            if not login or any(c in login + password for c in ":\n\r"):
                raise ValueError(f"login/password unusable in a passwd-file: {login!r}")
        for setting in (policy_url, policy_api_header):
            if setting is not None and any(c in setting for c in "\n\r"):
                raise ValueError(f"newline in a Dovecot setting: {setting!r}")
        for network in (*login_trusted_networks, *haproxy_trusted_networks):
            if not network or any(c.isspace() or c in "{}#" for c in network):
                raise ValueError(f"not one network for a Dovecot list: {network!r}")
        self.workdir = workdir.resolve()
        self.users = dict(users)
        self.policy_url = policy_url
        self.policy_api_header = policy_api_header
        self.reject_on_fail = reject_on_fail
        self.extra_config = extra_config
        self.master_users = dict(master_users or {})
        self.login_trusted_networks = list(login_trusted_networks)
        self.haproxy_trusted_networks = list(haproxy_trusted_networks)
        self.tls = tls
        self.passdb_scheme = passdb_scheme
        self._hashes: dict[str, str] = {}  # password -> its stored form, made once
        self.series = installed_series()
        self.imap_port = 0
        self.pop3_port = 0
        self.haproxy_port = 0  # set while running with haproxy_trusted_networks
        self.imaps_port = 0  # set while running with tls
        self.pop3s_port = 0
        self._runtime_dir: pathlib.Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / "dovecot.log"

    @property
    def pid(self) -> int | None:
        """The master's process id while it runs (bench/ reads its process tree's CPU time)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start Dovecot; return once both ports send their greeting."""
        if self._proc is not None:
            raise RuntimeError("dovecot is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._runtime_dir = self._make_runtime_dir()
        try:
            for _ in range(PORT_ATTEMPTS):
                self.imap_port, self.pop3_port = free_port(), free_port()
                if self.haproxy_trusted_networks:
                    self.haproxy_port = free_port()
                if self.tls is not None:
                    self.imaps_port, self.pop3s_port = free_port(), free_port()
                try:
                    self._spawn_and_wait()
                    return
                except PortInUse:
                    continue
            raise RuntimeError(f"dovecot could not bind free ports in {PORT_ATTEMPTS} attempts:\n" + self.log_text())
        except BaseException:
            self._remove_runtime_dir()
            raise

    def stop(self) -> None:
        """SIGTERM the master (it stops its children) and delete run-time files.

        Takes about 1.1 s: after its children exit, Dovecot 2.3's master
        sends SIGQUIT to its log process and then sleeps a fixed second.
        Signalling the whole process group instead is slower (~6 s, the
        login processes wait for the stats-writer handshake).
        """
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                stop_process(proc)
        finally:
            self._remove_runtime_dir()

    def log_text(self, offset: int = 0) -> str:
        """Dovecot's log (logins, auth and policy decisions), from byte ``offset``."""
        return read_log(self.log_path, offset)

    def _make_runtime_dir(self) -> pathlib.Path:
        runtime = pathlib.Path(tempfile.mkdtemp(prefix="autoconfig-dovecot-"))
        runtime.chmod(0o755)
        (runtime / "mail").mkdir()
        user = _mail_user()
        shutil.chown(runtime / "mail", user.pw_uid, user.pw_gid)
        # Readable by Dovecot's auth process, which runs as another user;
        # the passwords are throw-away test credentials.
        for name, accounts in (("users", self.users), ("masters", self.master_users)):
            passwd = runtime / name
            passwd.write_text("".join(f"{login}:{self._stored(password)}\n" for login, password in accounts.items()))
            passwd.chmod(0o644)
        return runtime

    def _stored(self, password: str) -> str:
        """The passdb's form of ``password``: ``{PLAIN}password``, or its hash in ``passdb_scheme``
        (one ``doveadm pw`` per distinct password: users sharing one share its salt, which costs
        each login's verification the same)."""
        if self.passdb_scheme == "PLAIN":
            return f"{{PLAIN}}{password}"
        if password not in self._hashes:
            made = subprocess.run(
                ["doveadm", "pw", "-s", self.passdb_scheme, "-p", password],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
            if not made.startswith(f"{{{self.passdb_scheme}}}"):
                raise RuntimeError(f"doveadm pw -s {self.passdb_scheme} said {made!r}")
            self._hashes[password] = made
        return self._hashes[password]

    def _remove_runtime_dir(self) -> None:
        runtime, self._runtime_dir = self._runtime_dir, None
        if runtime is not None:
            shutil.rmtree(runtime, ignore_errors=True)

    def _spawn_and_wait(self) -> None:
        assert self._runtime_dir is not None
        conf = self._runtime_dir / "dovecot.conf"
        conf.write_text(self._config(self._runtime_dir))
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Errors before log_path is open (a bad config) go to stderr: append
        # them to the same log (O_APPEND keeps both writers' lines whole).
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await_start(
            proc,
            self._greets,
            START_TIMEOUT,
            f"dovecot to greet on IMAP port {self.imap_port} and POP3 port {self.pop3_port}",
            name="dovecot",
            log=lambda: self.log_text(log_start),
        )
        self._proc = proc

    def _greets(self) -> bool:
        """True once IMAP and POP3 both send a greeting."""
        imap_ready = _greeting(self.imap_port).startswith(b"* OK")
        ready = imap_ready and _greeting(self.pop3_port).startswith(b"+OK")
        if self.tls is not None and ready:  # the TLS listeners are up once they accept
            for port in (self.imaps_port, self.pop3s_port):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return ready

    def _ssl_settings(self, v24: bool) -> str:
        """``ssl = no``, or the certificate for the implicit-TLS listeners (plain IMAP and POP3 stay
        plain: ``ssl = yes`` offers STARTTLS there without requiring it)."""
        return _ssl_settings_text(self.tls, v24)

    def _config(self, runtime: pathlib.Path) -> str:
        """The whole config: this server in the installed version's syntax, then ``extra_config``."""
        v24 = self.series == "2.4"
        mail_user = _mail_user()
        uid, gid = mail_user.pw_uid, mail_user.pw_gid
        # Under root, services chroot (login processes into base_dir/login,
        # anvil and ipc into base_dir/empty in 2.3); a non-root master cannot.
        chroot = "" if os.geteuid() == 0 else "\n  chroot ="
        config = version_preamble()  # first, before any other setting
        config += f"""\
base_dir = {runtime / "run"}
state_dir = {runtime / "state"}
instance_name = autoconfig-test-{runtime.name}
log_path = {self.log_path}
listen = {self.address}
protocols = imap pop3
{self._ssl_settings(v24)}
{"auth_allow_cleartext = yes" if v24 else "disable_plaintext_auth = no"}
auth_mechanisms = plain login
auth_verbose = yes
# A failed login is answered after ~0.5 s (the failure flush timer), not
# 2 s, and the per-IP auth penalty of anvil (4, 8, 15 s more for repeated
# failures from 127.0.0.1) is off.
auth_failure_delay = 0
service anvil {{{chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service ipc {{{chroot}
}}
# Lets %{{client_id}} (the IMAP ID a client sends) reach the policy server.
imap_id_retain = yes
first_valid_uid = {uid}
"""
        users, masters, home = runtime / "users", runtime / "masters", runtime / "mail"
        if v24:
            config += f"""\
mail_driver = maildir
mail_path = %{{home}}/Maildir
passdb users {{
  driver = passwd-file
  passwd_file_path = {users}
}}
userdb static {{
  driver = static
  fields {{
    uid = {uid}
    gid = {gid}
    home = {home}/%{{user}}
  }}
}}
"""
        else:
            config += f"""\
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}/%u
}}
"""
        if self.master_users:
            config += f"auth_master_user_separator = {MASTER_SEPARATOR}\n"
            where = f"passwd_file_path = {masters}" if v24 else f"args = scheme=PLAIN {masters}"
            config += f"passdb{' masters' if v24 else ''} {{\n  driver = passwd-file\n  master = yes\n  {where}\n}}\n"
        if self.login_trusted_networks:
            config += f"login_trusted_networks = {' '.join(self.login_trusted_networks)}\n"
        proxied = ""
        if self.haproxy_trusted_networks:
            config += f"haproxy_trusted_networks = {' '.join(self.haproxy_trusted_networks)}\n"
            proxied = f"""
  inet_listener proxied {{
    port = {self.haproxy_port}
    haproxy = yes
  }}"""
        tls_listener = "" if self.tls is None else "\n    ssl = yes"
        config += f"""\
service imap-login {{{chroot}
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}{tls_listener}
  }}{proxied}
}}
service pop3-login {{{chroot}
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}{tls_listener}
  }}
}}
"""
        if os.geteuid() != 0:
            # A non-root master cannot switch users either.
            config += f"""\
default_internal_user = {mail_user.pw_name}
default_internal_group = {grp.getgrgid(gid).gr_name}
default_login_user = {mail_user.pw_name}
"""
        if self.policy_url is not None:
            config += f"""\
auth_policy_server_url = {self.policy_url}
auth_policy_hash_nonce = {secrets.token_hex(16)}
auth_policy_check_before_auth = yes
auth_policy_check_after_auth = yes
auth_policy_reject_on_fail = {"yes" if self.reject_on_fail else "no"}
"""
            attributes = POLICY_REQUEST_ATTRIBUTES[self.series]
            if v24:
                lines = "".join(f"  {key} = {value}\n" for key, value in attributes.items())
                config += f"auth_policy_request_attributes =\nauth_policy_request_attributes {{\n{lines}}}\n"
            else:
                pairs = " ".join(f"{key}={value}" for key, value in attributes.items())
                config += f"auth_policy_request_attributes = {pairs}\n"
            if self.policy_api_header is not None:
                config += f"auth_policy_server_api_header = {self.policy_api_header}\n"
        return config + self.extra_config


def _ssl_settings_text(tls: tuple[pathlib.Path, pathlib.Path] | None, v24: bool) -> str:
    if tls is None:
        return "ssl = no"
    cert, key = tls
    if v24:
        return f"ssl = yes\nssl_server_cert_file = {cert}\nssl_server_key_file = {key}"
    return f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"


def _mail_user() -> pwd.struct_passwd:
    """The account that owns all maildirs (never root: Dovecot refuses UID 0)."""
    if os.geteuid() == 0:
        return pwd.getpwnam(ROOT_MAIL_USER)
    return pwd.getpwuid(os.geteuid())


def _greeting(port: int) -> bytes:
    """The first bytes a server sends after accepting a connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        return sock.recv(512)
