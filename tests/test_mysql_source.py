"""The read-only ``sql`` source on MariaDB, and the iRedMail and mailcow presets.

Each preset's truth table is played against a real MariaDB (and iRedMail's
also against PostgreSQL) with tables shaped like the stack's own: a client
is offered a protocol exactly when that stack's Dovecot would let a TLS
login to it through (autoconfig/store/presets.py names the files)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from autoconfig.cli import main
from autoconfig.config import ConfigError, load
from autoconfig.store import StoreError, StoreSettings, StoreUnavailable, Switches, open_store
from autoconfig.store.presets import IREDMAIL_SQL, MAILCOW_SQL
from autoconfig.store.sql_settings import SQLSettings
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster
from tests.support.sources import (
    DOC,
    app_on_store,
    assert_outages_answered_503,
    incoming,
    mysql_database,
    pg_database,
)

DOMAINS = ["example.net", "example.org", "example.com"]
_numbers = itertools.count(1)

# -- iRedMail ------------------------------------------------------------------

IREDMAIL_TABLES = [
    """CREATE TABLE domain (
        domain VARCHAR(255) NOT NULL PRIMARY KEY,
        backupmx SMALLINT NOT NULL DEFAULT 0,
        active SMALLINT NOT NULL DEFAULT 1)""",
    """CREATE TABLE mailbox (
        username VARCHAR(255) NOT NULL PRIMARY KEY,
        password VARCHAR(255) NOT NULL DEFAULT '',
        domain VARCHAR(255) NOT NULL,
        active SMALLINT NOT NULL DEFAULT 1,
        enableimap SMALLINT NOT NULL DEFAULT 1,
        enableimapsecured SMALLINT NOT NULL DEFAULT 1,
        enableimaptls SMALLINT NOT NULL DEFAULT 1,
        enablepop3 SMALLINT NOT NULL DEFAULT 1,
        enablepop3secured SMALLINT NOT NULL DEFAULT 1,
        enablepop3tls SMALLINT NOT NULL DEFAULT 1)""",
]
IREDMAIL_DOMAINS = [("example.net", 0, 1), ("example.org", 0, 0), ("example.com", 1, 1)]  # domain, backupmx, active
# local part, domain, then the mailbox columns that differ from their defaults (all 1)
IREDMAIL_MAILBOXES: list[tuple[str, str, dict[str, int]]] = [
    ("both", "example.net", {}),
    ("imap", "example.net", {"enablepop3tls": 0}),
    ("pop", "example.net", {"enableimaptls": 0}),
    ("neither", "example.net", {"enableimaptls": 0, "enablepop3tls": 0}),
    # Plain-text and "secured" flags on, TLS flags off: Dovecot refuses a TLS login, so nothing.
    ("plainonly", "example.net", {"enableimaptls": 0, "enablepop3tls": 0}),
    ("securedonly", "example.net", {"enableimap": 0, "enablepop3": 0, "enableimaptls": 0, "enablepop3tls": 0}),
    # TLS flags on, the others off: the TLS flags are the ones that count.
    ("tlsonly", "example.net", {"enableimap": 0, "enableimapsecured": 0, "enablepop3": 0, "enablepop3secured": 0}),
    ("inactive", "example.net", {"active": 0}),
    ("o'brien", "example.net", {"enablepop3tls": 0}),
    ("a*b", "example.net", {"enableimaptls": 0}),
    ("indisabled", "example.org", {}),
    ("inbackup", "example.com", {}),
]
IREDMAIL_TRUTH = [
    ("both@example.net", ["imap", "pop3"]),
    ("imap@example.net", ["imap"]),
    ("pop@example.net", ["pop3"]),
    ("neither@example.net", None),
    ("plainonly@example.net", None),
    ("securedonly@example.net", None),
    ("tlsonly@example.net", ["imap", "pop3"]),
    ("inactive@example.net", None),
    ("indisabled@example.org", None),
    ("inbackup@example.com", None),
    ("nobody@example.net", None),
    ("BOTH@Example.NET", ["imap", "pop3"]),
    ("o'brien@example.net", ["imap"]),
    ("a*b@example.net", ["pop3"]),
    ("%@example.net", None),
    ("*@example.net", None),
]


def iredmail_rows() -> Iterator[tuple[str, list[Any]]]:
    for domain, backupmx, active in IREDMAIL_DOMAINS:
        yield "INSERT INTO domain (domain, backupmx, active) VALUES (%s, %s, %s)", [domain, backupmx, active]
    for local, domain, columns in IREDMAIL_MAILBOXES:
        names = ["username", "domain", *columns]
        values = [f"{local}@{domain}", domain, *columns.values()]
        placeholders = ", ".join(["%s"] * len(names))
        yield f"INSERT INTO mailbox ({', '.join(names)}) VALUES ({placeholders})", values  # noqa: S608 - our names


def client_for(
    config_data: dict[str, Any], write_config: Callable[..., Path], store: dict[str, Any]
) -> Iterator[Flask]:
    config_data["provider"]["domains"] = DOMAINS
    yield from app_on_store(config_data, write_config, store, env={})


@pytest.fixture(scope="module")
def iredmail_mysql(mariadb: MariaDBServer) -> str:
    return mysql_database(mariadb, IREDMAIL_TABLES, iredmail_rows())


@pytest.fixture(scope="module")
def iredmail_pg(postgres: PostgresCluster) -> str:
    return pg_database(postgres, IREDMAIL_TABLES, iredmail_rows())


@pytest.fixture(params=["mysql", "postgresql"])
def iredmail_app(
    request: pytest.FixtureRequest, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> Iterator[Flask]:
    url = request.getfixturevalue("iredmail_mysql" if request.param == "mysql" else "iredmail_pg")
    yield from client_for(config_data, write_config, {"url": url, "sql": {"preset": "iredmail"}})


@pytest.mark.parametrize(("address", "offered"), IREDMAIL_TRUTH)
def test_iredmail_preset_offers_what_its_dovecot_lets_through_on_tls(
    iredmail_app: Flask, address: str, offered: list[str] | None
) -> None:
    assert incoming(iredmail_app.test_client(), address) == offered


@pytest.mark.parametrize("address", ["nobody@example.net", "ghost@example.com"])
def test_an_unknown_address_is_answered_byte_for_byte_like_a_mailbox_with_nothing(
    iredmail_app: Flask, address: str
) -> None:
    client = iredmail_app.test_client()
    nothing_here = "neither@example.net"
    for path in (DOC, "/apple/mail.mobileconfig?emailaddress="):
        unknown, off = client.get(path + address), client.get(path + nothing_here)
        assert unknown.status_code == off.status_code
        assert unknown.data.replace(address.encode(), b"X") == off.data.replace(nothing_here.encode(), b"X")
    pox = (
        '<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/'
        'requestschema/2006"><Request><EMailAddress>{}</EMailAddress><AcceptableResponseSchema>http://schemas.'
        "microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>"
        "</Autodiscover>"
    )
    answers = [
        client.post("/autodiscover/autodiscover.xml", data=pox.format(a), content_type="text/xml")
        for a in (address, nothing_here)
    ]
    assert answers[0].status_code == answers[1].status_code
    assert answers[0].data.replace(address.encode(), b"X") == answers[1].data.replace(nothing_here.encode(), b"X")


@pytest.mark.parametrize("address", ["a\x00b@example.net", "a(b@example.net", "a\\b@example.net", '"a"@example.net'])
def test_hostile_local_parts_are_refused_before_the_database(iredmail_app: Flask, address: str) -> None:
    response = iredmail_app.test_client().get(DOC + address)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "key",
    [
        "a\x00b@example.net",
        "x' OR '1'='1@example.net",
        "both@example.net' --@x",
        "a)(b\\c*@example.net",
        "%@example.net",
    ],
)
def test_the_store_treats_hostile_keys_as_plain_values(iredmail_mysql: str, key: str) -> None:
    with closing(
        open_store(StoreSettings(iredmail_mysql, source=SQLSettings(IREDMAIL_SQL.query, "iredmail")))
    ) as store:
        assert store.switches(key) == Switches()


# -- mailcow ---------------------------------------------------------------------

MAILCOW_TABLES = [
    """CREATE TABLE domain (domain VARCHAR(255) NOT NULL PRIMARY KEY, active TINYINT(1) NOT NULL DEFAULT 1)""",
    """CREATE TABLE mailbox (
        username VARCHAR(255) NOT NULL PRIMARY KEY,
        password VARCHAR(255) NOT NULL DEFAULT '',
        local_part VARCHAR(255) NOT NULL,
        domain VARCHAR(255) NOT NULL,
        attributes JSON,
        kind VARCHAR(100) NOT NULL DEFAULT '',
        authsource ENUM('mailcow', 'keycloak', 'generic-oidc', 'ldap') DEFAULT 'mailcow',
        active TINYINT(1) NOT NULL DEFAULT 1)""",
    """CREATE TABLE app_passwd (
        id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(255) NOT NULL DEFAULT '',
        mailbox VARCHAR(255) NOT NULL,
        domain VARCHAR(255) NOT NULL,
        password VARCHAR(255) NOT NULL DEFAULT '',
        active TINYINT(1) NOT NULL DEFAULT 1,
        imap_access TINYINT(1) NOT NULL DEFAULT 1,
        pop3_access TINYINT(1) NOT NULL DEFAULT 1,
        smtp_access TINYINT(1) NOT NULL DEFAULT 1)""",
]
MAILCOW_DOMAINS = [("example.net", 1), ("example.org", 0)]
BOTH_OFF = {"imap_access": "0", "pop3_access": "0"}
# local part, domain, the mailbox columns that differ from mailcow's defaults (active 1,
# kind '', authsource 'mailcow', attributes {}), then app passwords [(active, imap_access, pop3_access)]
MAILCOW_MAILBOXES: list[tuple[str, str, dict[str, Any], list[tuple[int, int, int]]]] = [
    # The mailbox password: attributes.P_access missing or "1" lets P through, anything else not.
    ("defaults", "example.net", {}, []),
    ("both", "example.net", {"attributes": {"imap_access": "1", "pop3_access": "1"}}, []),
    ("imap", "example.net", {"attributes": {"imap_access": "1", "pop3_access": "0"}}, []),
    ("pop", "example.net", {"attributes": {"imap_access": "0", "pop3_access": "1"}}, []),
    ("neither", "example.net", {"attributes": BOTH_OFF}, []),
    ("imapunset", "example.net", {"attributes": {"pop3_access": "0"}}, []),
    ("popunset", "example.net", {"attributes": {"imap_access": "0"}}, []),
    ("imapblank", "example.net", {"attributes": {"imap_access": ""}}, []),
    ("noattributes", "example.net", {"attributes": None}, []),
    # A forced password change holds back the web UI only, no longer IMAP/POP3.
    ("pwupdate", "example.net", {"attributes": {"force_pw_update": "1"}}, []),
    # The mailbox and its domain must be active; 2 is "disallow login".
    ("inactive", "example.net", {"active": 0}, []),
    ("nologin", "example.net", {"active": 2}, []),
    ("indisabled", "example.org", {}, [(1, 1, 1)]),
    # Resources never log in.
    ("room", "example.net", {"kind": "location"}, []),
    ("beamer", "example.net", {"kind": "thing"}, []),
    ("team", "example.net", {"kind": "group"}, [(1, 1, 1)]),
    # The mailbox password needs authsource mailcow, keycloak or ldap.
    ("keycloak", "example.net", {"authsource": "keycloak"}, []),
    ("ldap", "example.net", {"authsource": "ldap"}, []),
    ("oidc", "example.net", {"authsource": "generic-oidc"}, []),
    ("nosource", "example.net", {"authsource": None}, []),
    # App passwords: their own P_access, not the mailbox's attributes or authsource.
    ("apponly", "example.net", {"attributes": BOTH_OFF}, [(1, 1, 0)]),
    ("appoff", "example.net", {"attributes": BOTH_OFF}, [(0, 1, 1)]),
    ("apptwo", "example.net", {"attributes": BOTH_OFF}, [(1, 1, 0), (1, 0, 1)]),
    ("appnarrower", "example.net", {}, [(1, 0, 0)]),
    ("appoidc", "example.net", {"attributes": BOTH_OFF, "authsource": "generic-oidc"}, [(1, 0, 1)]),
    ("appinactivebox", "example.net", {"active": 0}, [(1, 1, 1)]),
    ("appnologin", "example.net", {"active": 2}, [(1, 1, 1)]),
    ("o'brien", "example.net", {"attributes": {"pop3_access": "0"}}, []),
]
MAILCOW_TRUTH = [
    ("defaults@example.net", ["imap", "pop3"]),
    ("both@example.net", ["imap", "pop3"]),
    ("imap@example.net", ["imap"]),
    ("pop@example.net", ["pop3"]),
    ("neither@example.net", None),
    ("imapunset@example.net", ["imap"]),
    ("popunset@example.net", ["pop3"]),
    ("imapblank@example.net", ["pop3"]),
    ("noattributes@example.net", ["imap", "pop3"]),
    ("pwupdate@example.net", ["imap", "pop3"]),
    ("inactive@example.net", None),
    ("nologin@example.net", None),
    ("indisabled@example.org", None),
    ("room@example.net", None),
    ("beamer@example.net", None),
    ("team@example.net", None),
    ("keycloak@example.net", ["imap", "pop3"]),
    ("ldap@example.net", ["imap", "pop3"]),
    ("oidc@example.net", None),
    ("nosource@example.net", None),
    ("apponly@example.net", ["imap"]),
    ("appoff@example.net", None),
    ("apptwo@example.net", ["imap", "pop3"]),
    ("appnarrower@example.net", ["imap", "pop3"]),
    ("appoidc@example.net", ["pop3"]),
    ("appinactivebox@example.net", None),
    ("appnologin@example.net", None),
    ("o'brien@example.net", ["imap"]),
    ("nobody@example.net", None),
]


def mailcow_rows() -> Iterator[tuple[str, list[Any]]]:
    for domain, active in MAILCOW_DOMAINS:
        yield "INSERT INTO domain (domain, active) VALUES (%s, %s)", [domain, active]
    for local, domain, columns, apps in MAILCOW_MAILBOXES:
        username = f"{local}@{domain}"
        row = {"username": username, "local_part": local, "domain": domain, "attributes": {}, **columns}
        if row["attributes"] is not None:
            row["attributes"] = json.dumps(row["attributes"])
        placeholders = ", ".join(["%s"] * len(row))
        yield f"INSERT INTO mailbox ({', '.join(row)}) VALUES ({placeholders})", list(row.values())  # noqa: S608 - our names
        for app_active, imap, pop in apps:
            yield (
                "INSERT INTO app_passwd (mailbox, domain, active, imap_access, pop3_access)"
                " VALUES (%s, %s, %s, %s, %s)",
                [username, domain, app_active, imap, pop],
            )


@pytest.fixture(scope="module")
def mailcow_mysql(mariadb: MariaDBServer) -> str:
    return mysql_database(mariadb, MAILCOW_TABLES, mailcow_rows())


@pytest.fixture
def mailcow_app(mailcow_mysql: str, config_data: dict[str, Any], write_config: Callable[..., Path]) -> Iterator[Flask]:
    yield from client_for(config_data, write_config, {"url": mailcow_mysql, "sql": {"preset": "mailcow"}})


@pytest.mark.parametrize(("address", "offered"), MAILCOW_TRUTH)
def test_mailcow_preset_offers_what_its_dovecot_lets_through(
    mailcow_app: Flask, address: str, offered: list[str] | None
) -> None:
    assert incoming(mailcow_app.test_client(), address) == offered


# -- the contract: live reads, read-only, outages -----------------------------------


@pytest.fixture
def own_iredmail(mariadb: MariaDBServer) -> str:
    return mysql_database(mariadb, IREDMAIL_TABLES, iredmail_rows())


def test_a_change_in_the_mail_database_is_seen_on_the_very_next_request(
    own_iredmail: str, mariadb: MariaDBServer, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    for app in client_for(config_data, write_config, {"url": own_iredmail, "sql": {"preset": "iredmail"}}):
        client = app.test_client()
        assert incoming(client, "imap@example.net") == ["imap"]
        conn = mariadb.root(own_iredmail.rsplit("/", 1)[1])
        try:
            conn.cursor().execute(
                "UPDATE mailbox SET enableimaptls = 0, enablepop3tls = 1 WHERE username = 'imap@example.net'"
            )
            assert incoming(client, "imap@example.net") == ["pop3"]
            conn.cursor().execute("UPDATE domain SET active = 0 WHERE domain = 'example.net'")
            assert incoming(client, "imap@example.net") is None
        finally:
            conn.close()


def test_the_source_is_read_only_even_for_a_query_that_tries_to_write(
    own_iredmail: str, mariadb: MariaDBServer
) -> None:
    # The account may SELECT only; the session is read-only too, for accounts that could do more.
    url = mariadb.create_database(f"rw_{next(_numbers)}", "autoconfig_rw", "rw-secret", grant="ALL")
    conn = mariadb.root(url.rsplit("/", 1)[1])
    conn.cursor().execute("CREATE TABLE t (a INT)")
    conn.close()
    with closing(
        open_store(StoreSettings(url, source=SQLSettings("SELECT 1, 1 FROM t WHERE %(address)s <> ''")))
    ) as store:
        with pytest.raises(StoreError):
            store.update("alice@example.net", {"imap": True}, "t")

        def write(conn: Any) -> None:
            conn.cursor().execute("INSERT INTO t VALUES (1)")

        with pytest.raises(Exception, match="READ ONLY"):
            store._db._db.pool.run(write)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("SELECT enableimaptls FROM mailbox WHERE username = %(address)s", "must return 2 columns"),
        ("SELECT enableimaptls, enablepop3tls FROM mailboxes WHERE username = %(address)s", "rejects the query"),
        ("SELECT enableimaptls, nosuchcolumn FROM mailbox WHERE username = %(address)s", "rejects the query"),
    ],
)
def test_a_query_mariadb_rejects_stops_the_start(iredmail_mysql: str, query: str, says: str) -> None:
    with pytest.raises(StoreError, match=says):
        open_store(StoreSettings(iredmail_mysql, source=SQLSettings(query)))


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A MariaDB this module may stop, freeze and start without disturbing other tests."""
    with MariaDBServer(tmp_path_factory.mktemp("maria-outage")) as server:
        yield server


def test_mariadb_stopped_restarted_and_too_slow(
    outage_server: MariaDBServer, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    url = mysql_database(outage_server, IREDMAIL_TABLES, iredmail_rows())
    store = {"url": url, "timeout": 1, "sql": {"preset": "iredmail"}}
    for app in client_for(config_data, write_config, store):
        assert_outages_answered_503(app.test_client(), outage_server)


def test_a_source_unreachable_at_start_starts_and_answers_503() -> None:
    from tests.support.ports import free_port

    store = open_store(
        StoreSettings(f"mysql://ro:x@127.0.0.1:{free_port()}/mail", timeout=1, source=SQLSettings(IREDMAIL_SQL.query))
    )
    with closing(store):
        with pytest.raises(StoreUnavailable):
            store.switches("alice@example.net")
        with pytest.raises(StoreUnavailable):
            store.ping()


# -- config and check-config ---------------------------------------------------------


def test_check_config_prints_the_query_a_preset_expands_to(
    iredmail_mysql: str, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    config_data["store"] = {"url": iredmail_mysql, "sql": {"preset": "iredmail"}}
    result = CliRunner().invoke(main, ["--config", str(write_config(config_data)), "check-config"], env={})
    assert result.exit_code == 0, result.output
    assert IREDMAIL_SQL.query in result.output
    assert "preset iredmail" in result.output
    assert "ro-secret" not in result.output


@pytest.mark.parametrize(
    ("sql", "url", "key", "says"),
    [
        (
            {"preset": "iredmail", "query": IREDMAIL_SQL.query},
            "mysql://ro:pw@db/vmail",
            "store.sql.preset",
            "exclusive",
        ),
        ({"preset": "mailcow"}, "postgresql://ro@db/mailcow", "store.sql.preset", "mysql"),
        ({"preset": "postfixadmin"}, "mysql://ro:pw@db/vmail", "store.sql.preset", "must be one of iredmail, mailcow"),
        ({"query": MAILCOW_SQL.query}, "sqlite:///x.sqlite3", "store.url", "postgresql:// or mysql://"),
    ],
)
def test_preset_config_errors_name_the_key(
    config_data: dict[str, Any], write_config: Callable[..., Path], sql: dict[str, str], url: str, key: str, says: str
) -> None:
    config_data["store"] = {"url": url, "sql": sql}
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: {key}: ")
    assert says in str(error.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://ro:secret-pw@db:notaport/vmail", "port"),
        ("mysql://ro:secret-pw@db/", "must name the database"),
        ("mysql://db/vmail", "must name the user"),
        ("mysql://ro:secret-pw@db/vmail?sslmode=on", "unknown mysql:// URL parameter"),
    ],
)
def test_a_bad_mysql_url_is_refused_without_repeating_it(
    config_data: dict[str, Any], write_config: Callable[..., Path], url: str, says: str
) -> None:
    config_data["store"] = {"url": url, "sql": {"preset": "iredmail"}}
    with pytest.raises(ConfigError) as error:
        load(write_config(config_data), env={})
    assert says in str(error.value)
    assert "secret-pw" not in str(error.value)


def test_a_mysql_url_without_a_source_section_is_refused(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    config_data["store"] = {"url": "mysql://ro:pw@db/vmail"}
    with pytest.raises(ConfigError, match=r"store\.url: mysql:// is a read-only source"):
        load(write_config(config_data), env={})


def reference_example_query() -> str:
    """The commented [store.sql] example in config/reference.toml, as a user would uncomment it."""
    text = (Path(__file__).resolve().parents[1] / "config" / "reference.toml").read_text()
    start = text.index('# query = """') + len('# query = """')
    end = text.index('"""', start)
    return " ".join(line.lstrip("# ").strip() for line in text[start:end].splitlines())


@pytest.mark.parametrize(("address", "offered"), IREDMAIL_TRUTH)
def test_the_reference_example_query_agrees_with_the_iredmail_preset(
    iredmail_mysql: str, address: str, offered: list[str] | None
) -> None:
    with closing(open_store(StoreSettings(iredmail_mysql, source=SQLSettings(reference_example_query())))) as store:
        switches = store.switches(address.lower())
    expected = offered or []
    assert (switches.imap, switches.pop) == ("imap" in expected, "pop3" in expected)
