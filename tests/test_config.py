"""The config is validated at start, and every error names the file and the key."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoconfig.config import ConfigError, load
from tests.support.config import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parents[1]
WriteConfig = Callable[[dict[str, Any]], Path]


def test_demo_config_loads_unchanged() -> None:
    config = load(ROOT / "config" / "autoconfig.toml", env={})
    (provider,) = config.providers
    assert provider.domains == ("example.net",)
    assert [(s.port, s.socket) for s in provider.servers.imap] == [(993, "SSL")]
    assert [(s.port, s.socket) for s in provider.servers.pop3] == [(995, "SSL")]
    assert [(s.port, s.socket) for s in provider.servers.smtp] == [(465, "SSL"), (587, "STARTTLS")]
    assert config.public_url.startswith("https://")


def test_reference_config_is_itself_valid() -> None:
    """The commented reference must never drift from what the loader accepts."""
    config = load(ROOT / "config" / "reference.toml", env={})
    assert config.admin_tokens[0].name == "webmail"


# Every key the reader takes is named as a string literal in one of its typed getters.
_READ_KEY = re.compile(
    r'(?:\.(?:string|integer|number|boolean|strings|table|tables|has)\(|\bpath\(|_unique\(\w+, )\s*"([a-z_]+)"'
)
_OWN_MODULES = ("config.py", "store/*.py")


def _keys_the_reader_takes() -> set[str]:
    package = ROOT / "autoconfig"
    sources = [path.read_text() for pattern in _OWN_MODULES for path in package.glob(pattern)]
    return {key for source in sources for key in _READ_KEY.findall(source)}


def test_the_reference_documents_every_option_the_reader_takes() -> None:
    """A new option without a line in config/reference.toml fails here, not in an admin's hands."""
    reference = (ROOT / "config" / "reference.toml").read_text()
    keys = _keys_the_reader_takes()
    assert {"public_url", "webmail_url", "providers", "mx_hosts", "signing_chain"} <= keys  # the scan works
    undocumented = sorted(
        key for key in keys if not re.search(rf"(^|[\s\[.#(]){key}(\s*=|\]|[\s.,:)])", reference, re.MULTILINE)
    )
    assert undocumented == [], f"options config/reference.toml does not mention: {undocumented}"


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

BAD_VALUES = [
    ("provider.colour", "blue", "provider.colour", "unknown option"),
    ("service.public_url", "http://autoconfig.example.net", "service.public_url", "https"),
    ("service.public_url", 42, "service.public_url", "expected a string"),
    ("service.webmail_url", "javascript:alert(1)", "service.webmail_url", "URL"),
    ("provider.domains", ["example.net", "EXAMPLE.net"], "provider.domains[1]", "listed twice"),
    ("provider.domains", ["example.net", "xn--bcher-kva.example", "bücher.example"], "provider.domains[2]", "twice"),
    ("provider.domains", [], "provider.domains", "at least one"),
    ("provider.domains", ["localhost"], "provider.domains[0]", "two labels"),
    ("provider.domains", ["exa mple.net"], "provider.domains[0]", "spaces"),
    ("provider.id", _DELETE, "provider.id", "required"),
    ("provider.display_name", "Example\r\nX-Injected: 1", "provider.display_name", "control characters"),
    ("provider.short_name", "Ex\x00ample", "provider.short_name", "control characters"),
    ("provider.display_name", "Example\x85Mail", "provider.display_name", "control characters"),
    ("servers.imap.0.port", 0, "servers.imap[0].port", "between 1 and 65535"),
    ("servers.imap.0.port", 70000, "servers.imap[0].port", "between 1 and 65535"),
    ("servers.imap.0.port", "993", "servers.imap[0].port", "expected an integer"),
    ("servers.imap.0.port", True, "servers.imap[0].port", "expected an integer"),
    ("servers.imap.0.host", "imap_example.net", "servers.imap[0].host", "not a valid host name"),
    ("servers.imap.0.host", "192.0.2.1", "servers.imap[0].host", "not an IP address"),
    ("servers.imap.0.socket", "plain", "servers.imap[0].socket", "SSL, STARTTLS"),
    ("servers.pop3.0.username", "uid", "servers.pop3[0].username", "address, local-part"),
    ("servers.smtp.1.prot", 1, "servers.smtp[1].prot", "unknown option"),
    ("servers.smtp", [], "servers.smtp", "SMTP"),
    ("store.url", "redis://db/0", "store.url", "sqlite:///"),
    ("admin.tokens.0.token", "short", "admin.tokens[0].token", "at least 16"),
    ("admin.tokens.0.name", "web mail", "admin.tokens[0].name", "letters"),
    ("provider.short_name", "", "provider.short_name", "must not be empty"),
    ("provider.short_name", "   ", "provider.short_name", "must not be empty"),
    ("provider.display_name", "", "provider.display_name", "must not be empty"),
]


@pytest.mark.parametrize(
    ("key", "value", "named", "says"), BAD_VALUES, ids=[row[2] + "-" + str(i) for i, row in enumerate(BAD_VALUES)]
)
def test_bad_value_stops_with_file_and_key(
    config_data: dict[str, Any],
    write_config: Callable[[dict[str, Any]], Path],
    key: str,
    value: Any,
    named: str,
    says: str,
) -> None:
    _set(config_data, key, value)
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    message = str(error.value)
    assert message.startswith(f"{path}: {named}: "), message
    assert says in message


def test_both_incoming_protocols_missing_is_an_error(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    del config_data["servers"]["imap"], config_data["servers"]["pop3"]
    with pytest.raises(ConfigError, match="IMAP or POP3"):
        load(write_config(config_data), env={})


def test_idn_domain_is_stored_in_ascii_form(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    config_data["provider"]["domains"] = ["Bücher.example"]
    assert load(write_config(config_data), env={}).domains == ("xn--bcher-kva.example",)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: file not found"):
        load(tmp_path / "missing.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[service\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load(broken, env={})


def test_environment_overrides_path_store_and_token(config_path: Path, tmp_path: Path) -> None:
    env = {
        "AUTOCONFIG_CONFIG": str(config_path),
        "AUTOCONFIG_DATABASE_URL": f"sqlite:///{tmp_path}/other.sqlite3",
        "AUTOCONFIG_ADMIN_TOKEN": "an-admin-token-from-the-environment",
    }
    config = load(env=env)
    assert config.source == config_path
    assert config.store.url == f"sqlite:///{tmp_path}/other.sqlite3"
    assert [t.name for t in config.admin_tokens] == ["webmail", "env"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTOCONFIG_DATABASE_URL", "oracle://x"),
        ("AUTOCONFIG_ADMIN_TOKEN", "short"),
        ("AUTOCONFIG_DOVECOT_API_HEADER", "X-Key: short"),
        ("AUTOCONFIG_DOVECOT_API_HEADER", "no colon here at all"),
    ],
)
def test_bad_environment_override_names_the_variable(config_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        load(config_path, env={variable: value})


def test_tokens_are_not_in_the_repr(config_path: Path) -> None:
    config = load(config_path, env={})
    assert config.admin_tokens[0].token not in repr(config)


SECOND_TOKEN = "another-admin-token-0123"


@pytest.mark.parametrize(
    ("second", "named", "says"),
    [
        ({"name": "webmail", "token": SECOND_TOKEN}, "admin.tokens[1].name", "already the name of admin.tokens[0]"),
        ({"name": "portal", "token": ADMIN_TOKEN}, "admin.tokens[1].token", "same secret as admin.tokens[0]"),
    ],
    ids=["same name", "same secret"],
)
def test_admin_tokens_must_differ_in_name_and_secret(
    config_data: dict[str, Any], write_config: WriteConfig, second: dict[str, str], named: str, says: str
) -> None:
    """A change is recorded as api:<name>: two tokens with one name or one secret make that ambiguous."""
    config_data["admin"]["tokens"].append(second)
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: {named}: ")
    assert says in str(error.value)
    assert ADMIN_TOKEN not in str(error.value)


def test_the_environment_token_must_differ_from_the_file_tokens(
    config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    path = write_config(config_data)
    with pytest.raises(ConfigError, match=r"^AUTOCONFIG_ADMIN_TOKEN: is the same secret as admin.tokens\[0\]'s$"):
        load(path, env={"AUTOCONFIG_ADMIN_TOKEN": ADMIN_TOKEN})
    config_data["admin"]["tokens"][0]["name"] = "env"
    path = write_config(config_data)
    with pytest.raises(ConfigError, match=r"admin\.tokens\[0\]\.name: 'env' is the name of the AUTOCONFIG_ADMIN_TOKEN"):
        load(path, env={"AUTOCONFIG_ADMIN_TOKEN": SECOND_TOKEN})
    assert [t.name for t in load(path, env={}).admin_tokens] == ["env"]  # a file token may be named env alone


DOVECOT_LINE = "X-Autoconfig-Policy-Key: a-dovecot-secret-from-the-environment"


def test_the_dovecot_header_can_come_from_the_environment(
    config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    path = write_config(config_data)
    assert load(path, env={}).dovecot is None
    from_env = load(path, env={"AUTOCONFIG_DOVECOT_API_HEADER": DOVECOT_LINE}).dovecot
    assert from_env is not None
    assert (from_env.header, from_env.secret) == ("X-Autoconfig-Policy-Key", "a-dovecot-secret-from-the-environment")
    config_data["dovecot"] = {"api_header": "X-In-The-File: the-secret-in-the-config-file"}
    path = write_config(config_data)
    overridden = load(path, env={"AUTOCONFIG_DOVECOT_API_HEADER": DOVECOT_LINE}).dovecot
    assert overridden is not None and overridden.header == "X-Autoconfig-Policy-Key"
