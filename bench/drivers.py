"""Which driver for the MySQL and LDAP sources: client CPU per lookup, in one process.

    python -m bench.drivers [--lookups 5000] [--rounds 5]

Starts a private MariaDB and slapd on loopback (tests/support), loads 10,000
mailboxes, and runs the lookup each source makes (a parameterised
primary-key SELECT; a subtree search for one mail value, one attribute
back) with each driver on one reused connection, the drivers alternating
round by round.  The figure is this process's CPU time (user + system) per
lookup: what a gunicorn worker pays for the call.  The servers' own CPU is
theirs and the same for both drivers.  Medians of the rounds are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ldap  # noqa: E402
import ldap3  # noqa: E402
import MySQLdb  # noqa: E402
import pymysql  # noqa: E402

from tests.support.mariadb import MariaDBServer  # noqa: E402
from tests.support.slapd import READER_DN, SUFFIX, SlapdServer  # noqa: E402

MAILBOXES = 10_000
QUERY = (
    "SELECT enableimaptls = 1 AND active = 1, enablepop3tls = 1 AND active = 1"
    " FROM mailbox WHERE username = %(address)s"
)


def cpu_per_call(call: Callable[[int], object], count: int) -> float:
    started = time.process_time()
    for i in range(count):
        call(i)
    return (time.process_time() - started) / count * 1e6


def mysql_drivers(work: Path) -> tuple[MariaDBServer, dict[str, Callable[[int], object]]]:
    server = MariaDBServer(work / "maria")
    server.start()
    server.create_database("vmail", "bench", "bench-secret")
    root = server.root("vmail")
    cur = root.cursor()
    cur.execute(
        "CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, active tinyint NOT NULL,"
        " enableimaptls tinyint NOT NULL, enablepop3tls tinyint NOT NULL)"
    )
    cur.executemany(
        "INSERT INTO mailbox VALUES (%s, 1, %s, %s)",
        [(f"user{i}@example.net", i % 2, i % 3 == 0) for i in range(MAILBOXES)],
    )
    root.close()
    login = {
        "host": server.address,
        "port": server.port,
        "user": "bench",
        "password": "bench-secret",
        "database": "vmail",
    }
    c_conn = MySQLdb.connect(**login, autocommit=True)
    py_conn = pymysql.connect(**login, autocommit=True)

    def lookup(conn: object) -> Callable[[int], object]:
        def call(i: int) -> object:
            cur = conn.cursor()  # type: ignore[attr-defined]
            cur.execute(QUERY, {"address": f"user{i % MAILBOXES}@example.net"})
            rows = cur.fetchmany(50)
            cur.close()
            return rows

        return call

    return server, {"mysqlclient (C)": lookup(c_conn), "PyMySQL (pure Python)": lookup(py_conn)}


def ldap_drivers(work: Path) -> tuple[SlapdServer, dict[str, Callable[[int], object]]]:
    server = SlapdServer(work / "slapd")
    server.start()
    ldif = work / "users.ldif"
    with ldif.open("w") as out:
        out.write(f"dn: ou=Users,{SUFFIX}\nobjectClass: organizationalUnit\nou: Users\n\n")
        for i in range(MAILBOXES):
            out.write(
                f"dn: cn=u{i},ou=Users,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: mailUser\ncn: u{i}\nsn: u\n"
                f"mail: user{i}@example.net\naccountStatus: active\nenabledService: mail\nenabledService: imaptls\n\n"
            )
    server.load_ldif(ldif)
    c_conn = ldap.initialize(server.url)
    c_conn.simple_bind_s(READER_DN, server.reader_password)
    py_conn = ldap3.Connection(
        ldap3.Server(server.address, port=server.port), READER_DN, server.reader_password, auto_bind=True
    )

    def python_ldap(i: int) -> object:
        f = f"(&(objectClass=mailUser)(mail=user{i % MAILBOXES}@example.net))"
        return c_conn.search_ext_s(SUFFIX, ldap.SCOPE_SUBTREE, f, attrlist=["enabledService"], timeout=2, sizelimit=50)

    def ldap3_search(i: int) -> object:
        f = f"(&(objectClass=mailUser)(mail=user{i % MAILBOXES}@example.net))"
        py_conn.search(SUFFIX, f, attributes=["enabledService"], size_limit=50, time_limit=2)
        return py_conn.response

    return server, {"python-ldap (C libldap)": python_ldap, "ldap3 (pure Python)": ldap3_search}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookups", type=int, default=5000, help="lookups per driver per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoconfig-drivers-") as tmp:
        work = Path(tmp)
        for setup in (mysql_drivers, ldap_drivers):
            server, drivers = setup(work)
            try:
                figures: dict[str, list[float]] = {name: [] for name in drivers}
                names = list(drivers)
                for round_number in range(args.rounds):
                    for name in names if round_number % 2 == 0 else reversed(names):
                        figures[name].append(cpu_per_call(drivers[name], args.lookups))
                for name, values in figures.items():
                    print(
                        f"{name:<26} {statistics.median(values):7.1f} us CPU per lookup "
                        f"(median of {args.rounds} rounds of {args.lookups}; range {min(values):.1f}-{max(values):.1f})"
                    )
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
