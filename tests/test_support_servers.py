"""Smoke tests for the real-server helpers in tests/support.

They run the actual binaries and fail (never skip) when one is missing:
a fixture that silently stops working would turn every test using it
into a skip or a false failure elsewhere.
"""

import imaplib
import os
import pathlib
import poplib
import shutil

import psycopg
import pytest

from tests.support.dovecot import DovecotServer
from tests.support.knot import KnotServer
from tests.support.postgres import PostgresCluster

ZONE = """\
$ORIGIN example.net.
$TTL 300
@               SOA   ns1 hostmaster 1 3600 600 86400 300
@               NS    ns1
ns1             A     192.0.2.1
@               MX    10 mx1
mx1             A     192.0.2.25
imap            A     192.0.2.143
_imaps._tcp     SRV   0 1 993 imap
_pop3._tcp      SRV   0 0 0 .
"""


def test_knot_serves_srv_mx_and_a_records(tmp_path: pathlib.Path) -> None:
    zone_file = tmp_path / "example.net.zone"
    zone_file.write_text(ZONE)

    with KnotServer({"example.net": zone_file}, tmp_path / "knot") as knot:
        resolver = knot.resolver()
        srv = [r.to_text() for r in resolver.resolve("_imaps._tcp.example.net", "SRV")]
        not_offered = [r.to_text() for r in resolver.resolve("_pop3._tcp.example.net", "SRV")]
        mx = [r.to_text() for r in resolver.resolve("example.net", "MX")]
        a = [r.to_text() for r in resolver.resolve("imap.example.net", "A")]

    assert srv == ["0 1 993 imap.example.net."]
    assert not_offered == ["0 0 0 ."]
    assert mx == ["10 mx1.example.net."]
    assert a == ["192.0.2.143"]
    assert zone_file.read_text() == ZONE, "knotd must never rewrite the zone file"


def test_postgres_keeps_data_across_an_outage(tmp_path: pathlib.Path) -> None:
    with PostgresCluster(tmp_path / "pg") as cluster:
        dsn = cluster.create_database("autoconfig_test")
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE domains (name text PRIMARY KEY)")
            conn.execute("INSERT INTO domains VALUES ('example.net')")

        survivor = psycopg.connect(dsn)
        try:
            cluster.stop_server()
            with pytest.raises(psycopg.OperationalError):
                survivor.execute("SELECT 1")
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(dsn, connect_timeout=1)

            cluster.start_server()
        finally:
            survivor.close()

        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT name FROM domains").fetchall()
    assert rows == [("example.net",)]


def test_dovecot_logs_users_in_over_imap_and_pop3(tmp_path: pathlib.Path) -> None:
    users = {"alice@example.net": "correct horse"}

    with DovecotServer(tmp_path / "dovecot", users) as dovecot:
        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=5)
        try:
            assert imap.login("alice@example.net", "correct horse")[0] == "OK"
            assert imap.select("INBOX")[0] == "OK"
        finally:
            imap.logout()

        pop = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=5)
        try:
            pop.user("alice@example.net")
            assert pop.pass_("correct horse").startswith(b"+OK")
        finally:
            pop.quit()

        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=5)
        try:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                imap.login("alice@example.net", "wrong")
        finally:
            imap.shutdown()

        pop = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=5)
        try:
            pop.user("alice@example.net")
            with pytest.raises(poplib.error_proto):
                pop.pass_("wrong")
        finally:
            pop.close()

        log = dovecot.log_text()
    logged_in = {"2.3": "Login: ", "2.4": "Logged in: "}[dovecot.series]  # the login process's line, per version
    assert f"{logged_in}user=<alice@example.net>, method=PLAIN" in log
    assert "Password mismatch" in log


def test_roundcube_root_uses_the_repositorys_plugin_even_when_the_system_has_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A developer who followed the README has the plugin in /var/lib/roundcube/plugins too;
    the harness must test the repository's copy, not fail on the name or pick the installed one."""
    from tests.support import roundcube

    system = tmp_path / "var-lib-roundcube"
    (system / "plugins").mkdir(parents=True)
    for name in ("program", "SQL", "index.php"):
        (system / name).symlink_to(os.readlink(roundcube.PACKAGE_ROOT / name))
    (system / "skins").symlink_to(roundcube.PACKAGE_ROOT / "skins")
    (system / "public_html").mkdir()
    shutil.copy(roundcube.PACKAGE_ROOT / "public_html" / "index.php", system / "public_html" / "index.php")
    for path in (roundcube.PACKAGE_ROOT / "plugins").iterdir():
        (system / "plugins" / path.name).symlink_to(path.resolve())
    installed = system / "plugins" / roundcube.PLUGIN_NAME
    installed.mkdir()
    (installed / "autoconfig_mail_programs.php").write_text("<?php // an older release\n")
    monkeypatch.setattr(roundcube, "PACKAGE_ROOT", system)

    server = roundcube.RoundcubeServer(tmp_path / "work", 143, {})
    root = server._make_root()
    try:
        used = root / "plugins" / roundcube.PLUGIN_NAME / "autoconfig_mail_programs.php"
        assert used.read_text() == (roundcube.PLUGIN / "autoconfig_mail_programs.php").read_text()
        # The stock plugins are still there (roundcube-core ships jqueryui; roundcube-plugins adds more).
        assert (root / "plugins" / "jqueryui").is_symlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
