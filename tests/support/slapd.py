"""A throw-away OpenLDAP ``slapd`` (Debian 12: 2.5, Debian 13: 2.6) on a loopback port, with an iRedMail-shaped schema.

The server reads a generated ``slapd.conf`` (core, cosine, inetorgperson and
the small test schema below) with one MDB database under ``dc=example,dc=net``,
all of it in a fresh ``tempfile.mkdtemp()`` directory; the system instance
the Debian package sets up (``/etc/ldap``, ``/var/lib/ldap``) is never
touched.  ``slapd -d 0`` stays in the foreground, so the PID we hold is the
server's own.

The schema defines the attributes iRedMail's Dovecot filters use
(``accountStatus``, ``domainStatus``, ``enabledService``, ``shadowAddress``
on an auxiliary ``mailUser`` class) under the example enterprise number of
RFC 5612 (32473): the names match, the definitions are this project's own.
"""

from __future__ import annotations

import pathlib
import subprocess

import ldap
import ldap.modlist

from tests.support.ports import DataServer

SLAPD = "/usr/sbin/slapd"
SCHEMA_DIR = pathlib.Path("/etc/ldap/schema")
SUFFIX = "dc=example,dc=net"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"  # the test directory's root password, nothing else
READER_DN = f"cn=vmail,{SUFFIX}"

TEST_SCHEMA = """
attributetype ( 1.3.6.1.4.1.32473.1.1.1 NAME 'accountStatus'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.32473.1.1.2 NAME 'domainStatus'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.32473.1.1.3 NAME 'enabledService'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.32473.1.1.4 NAME 'shadowAddress'
    EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.4.1.32473.1.2.1 NAME 'mailUser' SUP top AUXILIARY
    MAY ( mail $ accountStatus $ domainStatus $ enabledService $ shadowAddress ) )
"""


class SlapdServer(DataServer):
    """slapd with a base tree and a read-only account (``READER_DN``) for the service (see :class:`DataServer`)."""

    name = "slapd"
    log_file = "slapd.log"

    def __init__(self, workdir: pathlib.Path, reader_password: str = "vmail-secret"):  # noqa: S107 - a test directory
        super().__init__(workdir)
        self.reader_password = reader_password

    @property
    def url(self) -> str:
        return f"ldap://{self.address}:{self.port}"

    def start(self) -> None:
        super().start()
        self._seed()

    def admin(self) -> ldap.ldapobject.LDAPObject:
        conn = ldap.initialize(self.url)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 2)
        conn.simple_bind_s(ADMIN_DN, ADMIN_PASSWORD)
        return conn

    def add(self, dn: str, attrs: dict[str, list[str]]) -> None:
        self.add_many([(dn, attrs)])

    def add_many(self, entries: list[tuple[str, dict[str, list[str]]]]) -> None:
        """Add entries over one admin connection, in order."""
        conn = self.admin()
        try:
            for dn, attrs in entries:
                conn.add_s(dn, ldap.modlist.addModlist({k: [v.encode() for v in vs] for k, vs in attrs.items()}))
        finally:
            conn.unbind_s()

    def load_ldif(self, path: pathlib.Path) -> None:
        """Bulk-load an LDIF file offline with ``slapadd`` (the server is stopped meanwhile)."""
        assert self._dir is not None
        self.stop_server()
        subprocess.run(
            ["/usr/sbin/slapadd", "-q", "-f", str(self._dir / "slapd.conf"), "-l", str(path)],
            check=True,
            capture_output=True,
        )
        self.start_server()

    def replace(self, dn: str, attribute: str, values: list[str]) -> None:
        conn = self.admin()
        try:
            conn.modify_s(dn, [(ldap.MOD_REPLACE, attribute, [v.encode() for v in values])])
        finally:
            conn.unbind_s()

    def delete_subtree(self, dn: str) -> None:
        """Delete ``dn`` and everything under it (tests reset their own branch)."""
        conn = self.admin()
        try:
            found = conn.search_s(dn, ldap.SCOPE_SUBTREE, "(objectClass=*)", attrlist=["1.1"])
            for entry_dn, _ in sorted(found, key=lambda item: -len(item[0])):
                conn.delete_s(entry_dn)
        except ldap.NO_SUCH_OBJECT:
            pass
        finally:
            conn.unbind_s()

    def _make_data(self, directory: pathlib.Path) -> None:
        (directory / "db").mkdir()
        (directory / "mailuser.schema").write_text(TEST_SCHEMA)
        includes = "\n".join(
            f"include {path}"
            for path in (
                SCHEMA_DIR / "core.schema",
                SCHEMA_DIR / "cosine.schema",
                SCHEMA_DIR / "inetorgperson.schema",
                directory / "mailuser.schema",
            )
        )
        (directory / "slapd.conf").write_text(
            f"""{includes}
pidfile {directory / "slapd.pid"}
argsfile {directory / "slapd.args"}
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel none
database mdb
# The map's upper bound, not an allocation: the benchmark's 1,000,000 mailboxes need ~1.5 GB.
maxsize 8589934592
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {directory / "db"}
index objectClass eq
index mail,shadowAddress eq
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="{READER_DN}" read by * none
"""
        )

    def _spawn_and_wait(self) -> None:
        assert self._dir is not None
        self._launch(
            [SLAPD, "-d", "0", "-f", str(self._dir / "slapd.conf"), "-h", f"ldap://{self.address}:{self.port}/"],
            self._answers,
            "answer a bind",
            retry_on=(ldap.SERVER_DOWN, OSError),
        )

    def _answers(self) -> bool:
        self.admin().unbind_s()
        return True

    def _seed(self) -> None:
        """The base entry and the service's read-only account; idempotent across restarts."""
        conn = self.admin()
        try:
            try:
                conn.search_s(SUFFIX, ldap.SCOPE_BASE)
                return
            except ldap.NO_SUCH_OBJECT:
                pass
        finally:
            conn.unbind_s()
        self.add(SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": ["example"], "o": ["Example"]})
        self.add(
            READER_DN,
            {
                "objectClass": ["organizationalRole", "simpleSecurityObject"],
                "cn": ["vmail"],
                "userPassword": [self.reader_password],
            },
        )
