"""The read-only ``ldap`` source on a real slapd, and the iRedMail LDAP preset.

Entries are shaped like iRedMail's (mailUser with accountStatus,
domainStatus, enabledService, shadowAddress); a client is offered a
protocol exactly when iRedMail's Dovecot filter would let a TLS login
through (autoconfig/store/presets.py names the files)."""

from __future__ import annotations

import itertools
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
from autoconfig.store.ldap import expand
from autoconfig.store.ldap_settings import LDAPSettings
from autoconfig.store.presets import IREDMAIL_LDAP
from tests.support.slapd import READER_DN, SUFFIX, SlapdServer
from tests.support.sources import (
    DOC,
    app_on_store,
    assert_outages_answered_503,
    incoming,
)

PASSWORD_ENV = "AUTOCONFIG_TEST_LDAP_PASSWORD"
_branches = itertools.count(1)

# cn, mail, accountStatus, domainStatus (None: absent), enabledService values, shadowAddress values
ENTRIES: list[tuple[str, str, str, str | None, list[str], list[str]]] = [
    ("both", "both@example.net", "active", None, ["mail", "imaptls", "pop3tls"], []),
    ("imap", "imap@example.net", "active", None, ["mail", "imaptls"], []),
    ("pop", "pop@example.net", "active", None, ["mail", "pop3tls"], []),
    ("neither", "neither@example.net", "active", None, ["mail"], []),
    ("plainonly", "plainonly@example.net", "active", None, ["mail", "imap", "pop3", "imapsecured", "pop3secured"], []),
    ("nomail", "nomail@example.net", "active", None, ["imaptls", "pop3tls"], []),
    ("disabled", "disabled@example.net", "disabled", None, ["mail", "imaptls", "pop3tls"], []),
    ("domainoff", "domainoff@example.net", "active", "disabled", ["mail", "imaptls", "pop3tls"], []),
    ("domainon", "domainon@example.net", "active", "active", ["mail", "imaptls"], []),
    ("shadow", "real@example.net", "active", None, ["mail", "imaptls", "shadowaddress"], ["alias@example.net"]),
    ("noshadow", "real2@example.net", "active", None, ["mail", "imaptls"], ["alias2@example.net"]),
    ("upper", "upper@example.net", "active", None, ["mail", "IMAPTLS", "pop3tls"], []),
    ("star", "a*b@example.net", "active", None, ["mail", "pop3tls"], []),
    ("quote", "o'brien@example.net", "active", None, ["mail", "imaptls"], []),
    ("parens", "a)(b\\c@example.net", "active", None, ["mail", "imaptls"], []),
    # Two entries for one address: each protocol only if every entry enables it.
    ("twin1", "twin@example.net", "active", None, ["mail", "imaptls", "pop3tls"], []),
    ("twin2", "twin@example.net", "active", None, ["mail", "imaptls"], []),
]
TRUTH = [
    ("both@example.net", ["imap", "pop3"]),
    ("imap@example.net", ["imap"]),
    ("pop@example.net", ["pop3"]),
    ("neither@example.net", None),
    ("plainonly@example.net", None),
    ("nomail@example.net", None),
    ("disabled@example.net", None),
    ("domainoff@example.net", None),
    ("domainon@example.net", ["imap"]),
    ("alias@example.net", ["imap"]),
    ("alias2@example.net", None),
    ("upper@example.net", ["pop3"]),  # "IMAPTLS" is not the value iRedMail writes: never offered on a guess
    ("a*b@example.net", ["pop3"]),
    ("*@example.net", None),
    ("o'brien@example.net", ["imap"]),
    ("twin@example.net", ["imap"]),
    ("nobody@example.net", None),
]


def load_branch(server: SlapdServer) -> str:
    """A fresh ou=... branch holding ENTRIES; its DN is the search base."""
    base = f"ou=t{next(_branches)},{SUFFIX}"
    entries: list[tuple[str, dict[str, list[str]]]] = [(base, {"objectClass": ["organizationalUnit"]})]
    for cn, mail, status, domain_status, services, shadows in ENTRIES:
        attrs = {
            "objectClass": ["inetOrgPerson", "mailUser"],
            "cn": [cn],
            "sn": [cn],
            "mail": [mail],
            "accountStatus": [status],
            "enabledService": services,
        }
        if domain_status:
            attrs["domainStatus"] = [domain_status]
        if shadows:
            attrs["shadowAddress"] = shadows
        entries.append((f"cn={cn},{base}", attrs))
    entries[0][1]["ou"] = [base.split(",")[0][3:]]
    server.add_many(entries)
    return base


@pytest.fixture(scope="module")
def branch(slapd: SlapdServer) -> str:
    return load_branch(slapd)


def ldap_store_config(url: str, base: str, **extra: Any) -> dict[str, Any]:
    settings = {"bind_dn": READER_DN, "password_env": PASSWORD_ENV, "base": base, "preset": "iredmail"}
    settings.update(extra)
    return {"url": url, "timeout": 1, "ldap": settings}


def make_app(config_data: dict[str, Any], write_config: Callable[..., Path], store: dict[str, Any]) -> Iterator[Flask]:
    yield from app_on_store(config_data, write_config, store, env={PASSWORD_ENV: "vmail-secret"})


@pytest.fixture
def ldap_app(
    slapd: SlapdServer, branch: str, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> Iterator[Flask]:
    yield from make_app(config_data, write_config, ldap_store_config(slapd.url, branch))


@pytest.mark.parametrize(("address", "offered"), TRUTH)
def test_iredmail_ldap_preset_offers_what_its_dovecot_lets_through_on_tls(
    ldap_app: Flask, address: str, offered: list[str] | None
) -> None:
    assert incoming(ldap_app.test_client(), address) == offered


def test_an_unknown_address_is_answered_byte_for_byte_like_an_entry_with_nothing(ldap_app: Flask) -> None:
    client = ldap_app.test_client()
    for path in (DOC, "/apple/mail.mobileconfig?emailaddress="):
        unknown, off = client.get(path + "nobody@example.net"), client.get(path + "neither@example.net")
        assert unknown.status_code == off.status_code
        assert unknown.data.replace(b"nobody", b"X") == off.data.replace(b"neither", b"X")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a)(b\\c@example.net", Switches(imap=True)),  # found as itself, and only itself
        ("*@example.net", Switches()),
        ("*)(mail=*@example.net", Switches()),
        ("x)(|(mail=*@example.net", Switches()),
        ("both@example.net)(mail=*", Switches()),
        ("a\x00b@example.net", Switches()),
        ("\\2a@example.net", Switches()),
    ],
)
def test_filter_metacharacters_in_the_local_part_are_values_never_filter(
    slapd: SlapdServer, branch: str, key: str, expected: Switches
) -> None:
    with closing(open_store(StoreSettings(slapd.url, timeout=1, source=settings_for(branch)))) as store:
        assert store.switches(key) == expected


def settings_for(base: str, **changes: Any) -> LDAPSettings:
    values: dict[str, Any] = {
        "bind_dn": READER_DN,
        "password": "vmail-secret",
        "base": base,
        "filter": IREDMAIL_LDAP.filter,
        "attribute": IREDMAIL_LDAP.attribute,
        "imap_values": IREDMAIL_LDAP.imap_values,
        "pop_values": IREDMAIL_LDAP.pop_values,
        "preset": "iredmail",
    }
    values.update(changes)
    return LDAPSettings(**values)


@pytest.mark.parametrize(
    ("key", "escaped"),
    [
        ("a*b@x.example", "a\\2ab@x.example"),
        ("a(b)c@x.example", "a\\28b\\29c@x.example"),
        ("a\\b@x.example", "a\\5cb@x.example"),
        ("a\x00b@x.example", "a\\00b@x.example"),
    ],
)
def test_values_are_escaped_as_rfc_4515_says(key: str, escaped: str) -> None:
    assert expand("(mail=%(address)s)", key) == f"(mail={escaped})"


def test_a_change_in_the_directory_is_seen_on_the_very_next_request(
    slapd: SlapdServer, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    base = load_branch(slapd)
    for app in make_app(config_data, write_config, ldap_store_config(slapd.url, base)):
        client = app.test_client()
        assert incoming(client, "imap@example.net") == ["imap"]
        slapd.replace(f"cn=imap,{base}", "enabledService", ["mail", "pop3tls"])
        assert incoming(client, "imap@example.net") == ["pop3"]
        slapd.replace(f"cn=imap,{base}", "accountStatus", ["disabled"])
        assert incoming(client, "imap@example.net") is None


def test_a_hand_written_filter_with_its_own_attribute_and_values(
    slapd: SlapdServer, branch: str, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    store = ldap_store_config(slapd.url, branch)
    del store["ldap"]["preset"]
    store["ldap"].update(
        {
            "filter": "(&(objectClass=mailUser)(mail=%(local_part)s@%(domain)s))",
            "attribute": "enabledService",
            "imap_values": ["imap", "imaptls"],
            "pop_values": ["pop3"],
        }
    )
    for app in make_app(config_data, write_config, store):
        client = app.test_client()
        assert incoming(client, "plainonly@example.net") == ["imap", "pop3"]
        assert incoming(client, "pop@example.net") is None


def test_the_source_is_read_only(slapd: SlapdServer, branch: str) -> None:
    with closing(open_store(StoreSettings(slapd.url, source=settings_for(branch)))) as store:
        for write in (
            lambda: store.update("both@example.net", {"imap": False}, "t"),
            lambda: store.reset("both@example.net"),
            lambda: store.import_switches([], "t"),
        ):
            with pytest.raises(StoreError, match="read-only"):
                write()
        with pytest.raises(StoreError, match="cannot list"):
            list(store.accounts())
        assert store.switches("both@example.net") == Switches(imap=True, pop=True)


def test_a_filter_the_directory_rejects_stops_the_start(slapd: SlapdServer, branch: str) -> None:
    with pytest.raises(StoreError, match="rejects the search"):
        open_store(StoreSettings(slapd.url, source=settings_for(branch, filter="(mail~~%(address)s)")))


def test_a_wrong_bind_password_is_a_503_not_a_guess(slapd: SlapdServer, branch: str) -> None:
    store = open_store(StoreSettings(slapd.url, timeout=1, source=settings_for(branch, password="wrong")))
    with closing(store), pytest.raises(StoreUnavailable, match="invalid credentials"):
        store.switches("both@example.net")


@pytest.fixture(scope="module")
def outage_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    with SlapdServer(tmp_path_factory.mktemp("slapd-outage")) as server:
        yield server


def test_slapd_stopped_restarted_and_too_slow(
    outage_slapd: SlapdServer, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    base = load_branch(outage_slapd)
    for app in make_app(config_data, write_config, ldap_store_config(outage_slapd.url, base)):
        assert_outages_answered_503(app.test_client(), outage_slapd)


def test_check_config_prints_the_filter_a_preset_expands_to(
    slapd: SlapdServer, branch: str, config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    config_data["store"] = ldap_store_config(slapd.url, branch)
    path = write_config(config_data)
    result = CliRunner().invoke(main, ["--config", str(path), "check-config"], env={PASSWORD_ENV: "vmail-secret"})
    assert result.exit_code == 0, result.output
    assert IREDMAIL_LDAP.filter in result.output
    assert "imaptls" in result.output and "pop3tls" in result.output
    assert "vmail-secret" not in result.output


@pytest.mark.parametrize(
    ("ldap", "env", "key", "says"),
    [
        ({"password": "inline"}, {}, "store.ldap.password", "keep the password out"),
        ({}, {}, "store.ldap.password_env", f"{PASSWORD_ENV} is not set"),
        ({"password_file": "missing.txt"}, {PASSWORD_ENV: "x"}, "store.ldap.password_env", "exactly one"),
        ({"filter": "(mail=%(address)s)"}, {PASSWORD_ENV: "x"}, "store.ldap.filter", "mutually exclusive"),
        ({"preset": "mailcow"}, {PASSWORD_ENV: "x"}, "store.ldap.preset", "must be one of iredmail"),
    ],
)
def test_ldap_config_errors_name_the_key(
    config_data: dict[str, Any],
    write_config: Callable[..., Path],
    ldap: dict[str, str],
    env: dict[str, str],
    key: str,
    says: str,
) -> None:
    store = ldap_store_config("ldap://127.0.0.1:1", "dc=example,dc=net")
    store["ldap"].update(ldap)
    config_data["store"] = store
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env=env)
    assert str(error.value).startswith(f"{path}: {key}: "), str(error.value)
    assert says in str(error.value)


@pytest.mark.parametrize(
    ("custom", "key", "says"),
    [
        ({"filter": "mail=%(address)s"}, "store.ldap.filter", "in parentheses"),
        ({"filter": "(&(mail=%(address)s)"}, "store.ldap.filter", "unbalanced"),
        ({"filter": "(mail=%(user)s)"}, "store.ldap.filter", "unknown parameter"),
        ({"filter": "(mail=alice@example.net)"}, "store.ldap.filter", "must use the parameter"),
        ({"filter": "(mail=%(address)s)", "imap_values": [], "pop_values": []}, "store.ldap.imap_values", "list"),
    ],
)
def test_a_bad_filter_template_stops_the_start(
    config_data: dict[str, Any], write_config: Callable[..., Path], custom: dict[str, Any], key: str, says: str
) -> None:
    store = ldap_store_config("ldap://127.0.0.1:1", "dc=example,dc=net")
    del store["ldap"]["preset"]
    store["ldap"].update({"attribute": "enabledService", "imap_values": ["imaptls"]})
    store["ldap"].update(custom)
    config_data["store"] = store
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={PASSWORD_ENV: "x"})
    assert str(error.value).startswith(f"{path}: {key}: "), str(error.value)
    assert says in str(error.value)


def test_the_password_can_come_from_a_file(
    config_data: dict[str, Any], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "ldap.secret").write_text("from-a-file\n")
    store = ldap_store_config("ldaps://ldap.example.net", "dc=example,dc=net")
    del store["ldap"]["password_env"]
    store["ldap"]["password_file"] = "ldap.secret"
    config_data["store"] = store
    config = load(write_config(config_data), env={})
    assert isinstance(config.store.source, LDAPSettings) and config.store.source.password == "from-a-file"
    assert "from-a-file" not in repr(config)


def test_starttls_over_ldaps_is_refused(config_data: dict[str, Any], write_config: Callable[..., Path]) -> None:
    config_data["store"] = ldap_store_config("ldaps://ldap.example.net", "dc=example,dc=net", starttls=True)
    with pytest.raises(ConfigError, match=r"store\.ldap\.starttls"):
        load(write_config(config_data), env={PASSWORD_ENV: "x"})
