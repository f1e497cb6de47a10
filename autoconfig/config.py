"""The service's typed configuration, read from one TOML file.

Every value is checked when the service starts, so a typo stops it with one
message naming the file and the key instead of surfacing later as a wrong
answer to a mail client.  Unknown keys are errors for the same reason: a
misspelled option silently falling back to its default is the worst outcome.

Three environment variables override the file, because deployments keep
secrets and per-node locations out of the shared config (the systemd unit
reads them from an environment file): ``AUTOCONFIG_DATABASE_URL`` (the
store), ``AUTOCONFIG_ADMIN_TOKEN`` (one more admin token) and
``AUTOCONFIG_DOVECOT_API_HEADER`` (``[dovecot] api_header``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, collapse_addresses, ip_network
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

from .address import AddressError, normalise_domain
from .spec import DEFAULT_SRV_PRIORITIES, OUTLOOK_DEFAULT_MAX_BODY
from .store.registry import StoreSettings, check_store, check_url, read_store
from .values import Apple, Provider, Server, Servers

DEFAULT_PATH = Path("config/autoconfig.toml")
ENV_CONFIG = "AUTOCONFIG_CONFIG"
ENV_DATABASE_URL = "AUTOCONFIG_DATABASE_URL"
ENV_ADMIN_TOKEN = "AUTOCONFIG_ADMIN_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_DOVECOT_HEADER = "AUTOCONFIG_DOVECOT_API_HEADER"

SOCKET_TYPES = ("SSL", "STARTTLS")
AUTHENTICATIONS = ("password-cleartext", "password-encrypted")
USERNAME_FORMS = ("address", "local-part")
PROTOCOLS = ("imap", "pop3", "smtp")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_FLUSH_SECONDS = 1.0
MIN_TOKEN_LENGTH = 16
# Flask refuses bodies above this (create_app's MAX_CONTENT_LENGTH); a larger cap could never apply.
MAX_BODY_LIMIT = 1024 * 1024

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem, already phrased as ``file: key: what is wrong``."""


@dataclass(frozen=True)
class AdminToken:
    name: str
    token: str = field(repr=False)


MAX_RESOLVER_TIMEOUT = 1.0
MAX_RESOLVER_LIFETIME = 2.0


@dataclass(frozen=True)
class DnsSettings:
    """``[dns]``: the records to publish, and how customer domains are looked up by MX.

    The MX hosts themselves belong to a brand (``Provider.mx_hosts``; in the
    one-brand form ``[dns] mx_hosts``); hosted detection is on only when some
    brand has them.  The rest here feeds ``dns records`` and ``dns check``.
    """

    responder: str = ""  # host name of this service (CNAME target); default: public_url's host
    own_domains: tuple[str, ...] = ()  # served domains that get A/AAAA instead of CNAMEs
    addresses: tuple[str, ...] = ()  # the responder's IPv4/IPv6 addresses
    autodiscover_target: str = ""  # _autodiscover._tcp SRV target; default: responder
    https_port: int = 443
    ttl: int = 3600
    priorities: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SRV_PRIORITIES))
    deny: tuple[str, ...] = ()
    nameserver: str | None = None  # None: the system resolver (/etc/resolv.conf)
    port: int = 53
    timeout: float = MAX_RESOLVER_TIMEOUT
    lifetime: float = MAX_RESOLVER_LIFETIME
    cache_size: int = 10000
    lookup_rate: float = 20.0  # new MX lookups per second per worker process; 0 = no limit
    lookup_burst: int = 100


@dataclass(frozen=True)
class Limits:
    """Per-client-IP request limits and how many proxy hops to believe."""

    trusted_proxies: int = 0
    client_rate: float = 10.0
    client_burst: int = 100
    admin_rate: float = 100.0
    admin_burst: int = 200


@dataclass(frozen=True)
class MetricsSettings:
    """Who may read ``/metrics``: off by default; loopback only unless widened."""

    enabled: bool = False
    allow_networks: tuple[IPv4Network | IPv6Network, ...] = (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
    )
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class DovecotPolicy:
    """The shared secret Dovecot's auth-policy client sends (``auth_policy_server_api_header``),
    and the webmail's networks, whose IMAP/POP3 logins the switches never refuse: the
    webmail is where the user turns the switches on, so it must never be locked out."""

    header: str  # HTTP header name, e.g. X-Autoconfig-Policy-Key
    secret: str = field(repr=False)
    webmail_networks: tuple[IPv4Network | IPv6Network, ...] = ()


@dataclass(frozen=True)
class Outlook:
    """Limits of the Outlook autodiscover endpoint, which takes XML from anyone."""

    max_body_bytes: int = OUTLOOK_DEFAULT_MAX_BODY


@dataclass(frozen=True)
class Config:
    source: Path
    providers: tuple[Provider, ...]  # the brands; one in the [provider] form
    public_url: str
    store: StoreSettings
    admin_tokens: tuple[AdminToken, ...] = ()
    log_level: str = "INFO"
    # Lines below WARNING are written in batches this often (autoconfig/logs.py); 0: each at once.
    log_flush_seconds: float = 1.0
    limits: Limits = Limits()
    metrics: MetricsSettings = MetricsSettings()
    dovecot: DovecotPolicy | None = None  # None: the auth-policy endpoint answers 404
    dns: DnsSettings = field(default_factory=DnsSettings)
    outlook: Outlook = Outlook()
    _by_domain: Mapping[str, Provider] = field(init=False, repr=False, compare=False)
    _by_id: Mapping[str, Provider] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_domain = {domain: provider for provider in self.providers for domain in provider.domains}
        object.__setattr__(self, "_by_domain", by_domain)
        object.__setattr__(self, "_by_id", {provider.id: provider for provider in self.providers})

    def provider_for(self, domain: str) -> Provider | None:
        """The brand that lists ``domain`` (already normalised), or None."""
        return self._by_domain.get(domain)

    def provider_with_id(self, provider_id: str) -> Provider:
        """The brand with this id (ids are unique: the config reader checks)."""
        return self._by_id[provider_id]

    def serves(self, domain: str) -> bool:
        """Whether ``domain`` (already normalised) is listed by one of the brands."""
        return domain in self._by_domain

    @property
    def domains(self) -> tuple[str, ...]:
        """Every listed domain, brand by brand in config order."""
        return tuple(self._by_domain)

    @property
    def hosted(self) -> bool:
        """Whether customer domains are found by MX: some brand names its MX hosts."""
        return any(provider.mx_hosts for provider in self.providers)


_LINE_BREAKS = "\t\n\r"


def _is_control(char: str) -> bool:
    """C0 and C1 controls and DEL (Unicode category Cc)."""
    return unicodedata.category(char) == "Cc"


class _Table:
    """A TOML table being read: typed getters that name the key on error.

    Keys are consumed as they are read; ``finish`` rejects whatever is left,
    which is how unknown keys are caught without a second list of names.
    """

    def __init__(self, data: Mapping[str, Any], path: str, source: Path) -> None:
        self._data = dict(data)
        self._path = path
        self._source = source

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    @property
    def path(self) -> str:
        return self._path

    def copy(self) -> _Table:
        """The same table unread, for settings that several parts read alike (a shared default)."""
        return _Table(self._data, self._path, self._source)

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self._source}: {key}: {message}")

    def _take(self, name: str, kind: type[T], kind_name: str, default: T | None) -> T:
        if name not in self._data:
            if default is None:
                raise self.error(self.key(name), "is required")
            return default
        value = self._data.pop(name)
        # bool is an int in Python; a config saying port = true is still wrong.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(self.key(name), f"expected {kind_name}, got {type(value).__name__}")
        return value

    def string(
        self,
        name: str,
        default: str | None = None,
        check: Callable[[str], str] | None = None,
        choices: tuple[str, ...] | None = None,
        multiline: bool = False,
    ) -> str:
        value = self._take(name, str, "a string", default)
        allowed = _LINE_BREAKS if multiline else ""
        if any(_is_control(char) and char not in allowed for char in value):
            # These strings end up in documents, headers and logs; a stray control
            # character there breaks clients in ways that are hard to trace back here.
            raise self.error(self.key(name), "must not contain control characters")
        if choices is not None and value not in choices:
            raise self.error(self.key(name), f"must be one of {', '.join(choices)}; got {value!r}")
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                raise self.error(self.key(name), str(exc)) from None
        return value

    def integer(self, name: str, default: int | None = None, low: int = 0, high: int = 2**31) -> int:
        value = self._take(name, int, "an integer", default)
        if not low <= value <= high:
            raise self.error(self.key(name), f"must be between {low} and {high}; got {value}")
        return value

    def has(self, name: str) -> bool:
        return name in self._data

    def boolean(self, name: str, default: bool | None = None) -> bool:
        return self._take(name, bool, "true or false", default)

    def number(self, name: str, default: float | None = None, low: float = 0.0, high: float = 1e9) -> float:
        """An int or float in [low, high] (TOML writes 2 and 2.0 differently; both mean a number)."""
        if name in self._data and isinstance(self._data[name], int) and not isinstance(self._data[name], bool):
            self._data[name] = float(self._data[name])
        value = self._take(name, float, "a number", default)
        if not low <= value <= high:
            raise self.error(self.key(name), f"must be between {low:g} and {high:g}; got {value:g}")
        return value

    def strings(self, name: str, default: list[str] | None = None) -> list[str]:
        values = self._take(name, list, "a list of strings", default)
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise self.error(f"{self.key(name)}[{index}]", "expected a string")
            if any(_is_control(char) for char in value):
                raise self.error(f"{self.key(name)}[{index}]", "must not contain control characters")
        return list(values)

    def table(self, name: str, required: bool = True) -> _Table:
        data = self._take(name, dict, "a table", None if required else {})
        return _Table(data, self.key(name), self._source)

    def tables(self, name: str) -> list[_Table]:
        items = self._take(name, list, "an array of tables ([[...]])", [])
        tables = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise self.error(f"{self.key(name)}[{index}]", "expected a table")
            tables.append(_Table(item, f"{self.key(name)}[{index}]", self._source))
        return tables

    def finish(self) -> None:
        if self._data:
            unknown = sorted(self._data)[0]
            raise self.error(self.key(unknown), "unknown option (check the spelling against config/reference.toml)")


def check_hostname(value: str) -> str:
    """A DNS host name clients can connect to: lower-case LDH labels, no IP literal."""
    host = value.rstrip(".").lower()
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"not a valid host name: {value!r}")
    if labels[-1].isdigit():
        raise ValueError(f"must be a host name, not an IP address: {value!r}")
    return host


def _check_url(require_https: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        parts = urlsplit(value)
        schemes = ("https",) if require_https else ("https", "http")
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"must be an absolute {' or '.join(schemes)} URL; got {value!r}")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials")
        return value.rstrip("/") if require_https else value

    return check


def _check_domain(value: str) -> str:
    try:
        return normalise_domain(value)
    except AddressError as exc:
        raise ValueError(f"{exc}: {value!r}") from None


def _read_store(table: _Table, env: Mapping[str, str], source: Path) -> StoreSettings:
    """``[store]``, read by the store's own settings (``store/registry.py``); then the URL from
    ``AUTOCONFIG_DATABASE_URL``, if set, and the checks that the URL and the source fit."""
    store = read_store(table, env, source.parent)
    if env.get(ENV_DATABASE_URL):
        try:
            store = replace(store, url=check_url(env[ENV_DATABASE_URL]))
        except ValueError as exc:
            raise ConfigError(f"{ENV_DATABASE_URL}: {exc}") from None
    check_store(store, table)
    return store


def _read_server(table: _Table, protocol: str) -> Server:
    server = Server(
        protocol=protocol,
        host=table.string("host", check=check_hostname),
        port=table.integer("port", low=1, high=65535),
        socket=table.string("socket", choices=SOCKET_TYPES),
        authentication=table.string("authentication", "password-cleartext", choices=AUTHENTICATIONS),
        username=table.string("username", "address", choices=USERNAME_FORMS),
    )
    table.finish()
    return server


def _check_not_blank(value: str) -> str:
    """Names clients show: an empty one is a forgotten value, not a choice."""
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class _Names(NamedTuple):
    id: str
    display_name: str
    short_name: str
    domains: tuple[str, ...]


def _read_names(table: _Table) -> _Names:
    domains = _unique(table, "domains", _check_domain)
    if not domains:
        raise table.error(table.key("domains"), "must list at least one domain")
    return _Names(
        id=table.string("id", check=check_hostname),
        display_name=table.string("display_name", check=_check_not_blank),
        short_name=table.string("short_name", check=_check_not_blank),
        domains=domains,
    )


def _read_servers(table: _Table) -> Servers:
    found = {protocol: tuple(_read_server(t, protocol) for t in table.tables(protocol)) for protocol in PROTOCOLS}
    table.finish()
    if not found["smtp"]:
        raise table.error(table.key("smtp"), "at least one SMTP (submission) server is required")
    if not found["imap"] and not found["pop3"]:
        raise table.error(table.key("imap"), "at least one IMAP or POP3 server is required")
    return Servers(imap=found["imap"], pop3=found["pop3"], smtp=found["smtp"])


def _read_one_brand(root: _Table, dns: _Table, webmail_url: str, base: Path) -> Provider:
    """The one-brand form: ``[provider]`` and ``[servers]``, with ``[apple]`` and ``[dns] mx_hosts`` its own."""
    names_table = root.table("provider")
    names = _read_names(names_table)
    names_table.finish()
    servers = _read_servers(root.table("servers"))
    apple = _read_apple(root.table("apple", required=False), names.id, base)
    if not webmail_url:
        raise root.error("service.webmail_url", "is required")
    mx_hosts = _unique(dns, "mx_hosts", check_hostname)
    return Provider(*names, servers=servers, webmail_url=webmail_url, apple=apple, mx_hosts=mx_hosts)


def _read_brands(root: _Table, dns: _Table, webmail_url: str, base: Path) -> tuple[Provider, ...]:
    """The several-brands form: ``[[providers]]``, each with its own servers, webmail, Apple identity and MX hosts.

    A domain, an id or an MX host belongs to one brand: two claims would
    make the brand of a mailbox depend on the order of the file.
    """
    for single in ("provider", "servers"):
        if root.has(single):
            raise root.error(single, f"[{single}] is the one-brand form; with [[providers]], each brand has its own")
    if dns.has("mx_hosts"):
        raise dns.error(dns.key("mx_hosts"), "with [[providers]], each brand lists its own: providers[N].mx_hosts")
    shared_apple = root.table("apple", required=False)
    _read_apple(shared_apple.copy(), "shared.example", base)  # checked even when every brand has its own
    brands: list[Provider] = []
    claimed: dict[tuple[str, str], str] = {}  # ("domains" or "mx_hosts", name) -> the key of the brand with it
    tables = root.tables("providers")
    if not tables:
        raise root.error("providers", "must list at least one brand")
    for index, table in enumerate(tables):
        names = _read_names(table)
        for other in brands:
            if other.id == names.id:
                raise table.error(table.key("id"), f"{names.id} is already the id of {_brand_key(brands, other)}")
        brand_webmail = table.string("webmail_url", webmail_url or None, check=_check_url(require_https=False))
        servers = _read_servers(table.table("servers"))
        # A brand without its own [providers.apple] signs with the shared [apple] identity.
        apple_table = table.table("apple") if table.has("apple") else shared_apple.copy()
        apple = _read_apple(apple_table, names.id, base)
        mx_hosts = _unique(table, "mx_hosts", check_hostname)
        table.finish()
        for what, values in (("domains", names.domains), ("mx_hosts", mx_hosts)):
            for position, value in enumerate(values):
                if (what, value) in claimed:
                    raise table.error(f"{table.key(what)}[{position}]", f"{value} is already in {claimed[what, value]}")
                claimed[what, value] = f"providers[{index}].{what}"
        brands.append(Provider(*names, servers=servers, webmail_url=brand_webmail, apple=apple, mx_hosts=mx_hosts))
    return tuple(brands)


def _brand_key(brands: list[Provider], brand: Provider) -> str:
    return f"providers[{brands.index(brand)}]"


ENV_TOKEN_NAME = "env"  # noqa: S105 - the name of the AUTOCONFIG_ADMIN_TOKEN token (changes are by "api:env")


def _read_admin(table: _Table, env: Mapping[str, str]) -> tuple[AdminToken, ...]:
    """The admin tokens.  Names and secrets must each be unique: a change is recorded as
    ``api:<name>``, and two tokens with one name or one secret would make that ambiguous."""
    tokens: list[AdminToken] = []
    for item in table.tables("tokens"):
        name = item.string("name")
        if not _TOKEN_NAME.match(name):
            raise item.error(item.key("name"), "use 1-64 letters, digits, '.', '_' or '-'")
        secret = item.string("token")
        if len(secret) < MIN_TOKEN_LENGTH:
            raise item.error(item.key("token"), f"must be at least {MIN_TOKEN_LENGTH} characters")
        item.finish()
        for index, other in enumerate(tokens):
            if other.name == name:
                raise item.error(item.key("name"), f"{name!r} is already the name of admin.tokens[{index}]")
            if other.token == secret:
                raise item.error(item.key("token"), f"is the same secret as admin.tokens[{index}]'s")
        tokens.append(AdminToken(name, secret))
    table.finish()
    from_env = env.get(ENV_ADMIN_TOKEN, "")
    if from_env:
        if len(from_env) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{ENV_ADMIN_TOKEN}: must be at least {MIN_TOKEN_LENGTH} characters")
        for index, other in enumerate(tokens):
            if other.name == ENV_TOKEN_NAME:
                raise table.error(
                    f"{table.key('tokens')}[{index}].name",
                    f"{ENV_TOKEN_NAME!r} is the name of the {ENV_ADMIN_TOKEN} token, which is set",
                )
            if other.token == from_env:
                raise ConfigError(f"{ENV_ADMIN_TOKEN}: is the same secret as {table.key('tokens')}[{index}]'s")
        tokens.append(AdminToken(ENV_TOKEN_NAME, from_env))
    return tuple(tokens)


def _read_metrics(table: _Table) -> MetricsSettings:
    defaults = MetricsSettings()
    enabled = table.boolean("enabled", defaults.enabled)
    networks = []
    raw = table.strings("allow_networks", [str(n) for n in defaults.allow_networks])
    for index, value in enumerate(raw):
        try:
            networks.append(ip_network(value, strict=False))
        except ValueError:
            raise table.error(f"{table.key('allow_networks')}[{index}]", f"not an IP network: {value!r}") from None
    token = table.string("token", "")
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise table.error(table.key("token"), f"must be at least {MIN_TOKEN_LENGTH} characters")
    table.finish()
    return MetricsSettings(enabled=enabled, allow_networks=tuple(networks), token=token)


def _read_limits(table: _Table) -> Limits:
    defaults = Limits()
    limits = Limits(
        trusted_proxies=table.integer("trusted_proxies", defaults.trusted_proxies, low=0, high=5),
        client_rate=table.number("client_rate", defaults.client_rate),
        client_burst=table.integer("client_burst", defaults.client_burst, low=1, high=100000),
        admin_rate=table.number("admin_rate", defaults.admin_rate),
        admin_burst=table.integer("admin_burst", defaults.admin_burst, low=1, high=100000),
    )
    table.finish()
    return limits


_HTTP_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
# Headers Dovecot's HTTP client sets itself; a second copy would break the request.
_RESERVED_HEADERS = frozenset({"host", "content-type", "content-length", "transfer-encoding", "connection"})


def _read_dovecot(table: _Table, from_env: str = "") -> DovecotPolicy:
    """``[dovecot] api_header``: the very string Dovecot has in ``auth_policy_server_api_header``.

    ``from_env`` (``AUTOCONFIG_DOVECOT_API_HEADER``) replaces it, so the secret
    can live in the service's environment file instead of the shared config.
    """
    raw = table.string("api_header", "" if from_env else None)
    networks = _read_webmail_networks(table)
    table.finish()
    if from_env:
        raw = from_env

    def error(message: str) -> ConfigError:
        return (
            ConfigError(f"{ENV_DOVECOT_HEADER}: {message}")
            if from_env
            else table.error(table.key("api_header"), message)
        )

    name, colon, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _HTTP_TOKEN.match(name):
        raise error('must look like "Header-Name: secret value" (the same line Dovecot has)')
    if name.lower() in _RESERVED_HEADERS:
        raise error(f"{name} is set by Dovecot's HTTP client itself; choose another header name")
    if not all("\x20" <= ch <= "\x7e" for ch in value):
        raise error("the secret must be printable ASCII")
    if len(value) < MIN_TOKEN_LENGTH:
        raise error(f"the secret after the colon must be at least {MIN_TOKEN_LENGTH} characters")
    return DovecotPolicy(header=name, secret=value, webmail_networks=networks)


def _read_webmail_networks(table: _Table) -> tuple[IPv4Network | IPv6Network, ...]:
    """Strict networks only: a typo like ``192.0.2.10/24`` (host bits set) would exempt a
    whole /24 from the switches, and ``0.0.0.0/0`` would turn the login gate off unseen."""
    networks: list[IPv4Network | IPv6Network] = []
    for index, value in enumerate(table.strings("webmail_networks", [])):
        key = f"{table.key('webmail_networks')}[{index}]"
        try:
            network = ip_network(value.strip(), strict=True)
        except ValueError as exc:
            if "host bits set" in str(exc):
                raise table.error(
                    key, f"{value!r} has host bits set; write the network ({ip_network(value.strip(), strict=False)})"
                ) from None
            raise table.error(key, f"not an IP network (like 192.0.2.10/32 or 2001:db8::/64): {value!r}") from None
        if network.prefixlen == 0:
            raise table.error(key, f"{value!r} would exempt every login from the switches; name the webmail's hosts")
        mapped = _ipv4_mapped(network)
        if mapped is not None and mapped.prefixlen == 0:
            raise table.error(key, f"{value!r} would exempt every IPv4 login; name the webmail's hosts")
        if mapped is not None:
            raise table.error(
                key,
                f"{value!r} is an IPv4-mapped network, which never matches: an IPv4 peer is "
                f"compared as IPv4; write the IPv4 network ({mapped})",
            )
        networks.append(network)
    for family in ("IPv4", "IPv6"):
        # Each piece may look harmless; together they may still turn the gate off.
        pieces = [network for network in networks if f"IPv{network.version}" == family]
        if any(whole.prefixlen == 0 for whole in collapse_addresses(pieces)):  # type: ignore[type-var]
            raise table.error(
                table.key("webmail_networks"),
                f"the networks together exempt every {family} login from the switches; name the webmail's hosts",
            )
    return tuple(networks)


def _ipv4_mapped(network: IPv4Network | IPv6Network) -> IPv4Network | None:
    """The IPv4 network a ``::ffff:a.b.c.d/n`` network stands for, if it is one."""
    if not isinstance(network, IPv6Network) or network.prefixlen < 96:
        return None
    address = network.network_address.ipv4_mapped
    return None if address is None else IPv4Network((address, network.prefixlen - 96))


_REVERSE_DNS = re.compile(r"^[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+$")


def _check_reverse_dns(value: str) -> str:
    if len(value) > 200 or not _REVERSE_DNS.match(value):
        raise ValueError(f"must be a reverse-DNS name like net.example.autoconfig; got {value!r}")
    return value


def _read_apple(table: _Table, provider_id: str, base: Path) -> Apple:
    """Relative paths are taken from the config file's directory, so a config and its key can move together."""

    def path(name: str) -> Path | None:
        value = table.string(name, "")
        if not value:
            return None
        return base / value  # an absolute value replaces base

    prefix = table.string(
        "profile_identifier_prefix", ".".join(reversed(provider_id.split("."))), check=_check_reverse_dns
    )
    certificate, key, chain = path("signing_certificate"), path("signing_key"), path("signing_chain")
    table.finish()
    if (certificate is None) != (key is None):
        missing = "signing_key" if key is None else "signing_certificate"
        raise table.error(table.key(missing), "signing needs both signing_certificate and signing_key")
    if chain is not None and certificate is None:
        raise table.error(table.key("signing_chain"), "only makes sense with signing_certificate and signing_key")
    return Apple(prefix, certificate, key, chain, config_key=table.path)


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {value!r}") from None


def _unique(table: _Table, name: str, check: Callable[[str], str]) -> tuple[str, ...]:
    """A list option whose items are each checked and may appear once."""
    found: list[str] = []
    for index, raw in enumerate(table.strings(name, [])):
        key = f"{table.key(name)}[{index}]"
        try:
            value = check(raw)
        except ValueError as exc:
            raise table.error(key, str(exc)) from None
        if value in found:
            raise table.error(key, f"{value} is listed twice")
        found.append(value)
    return tuple(found)


def _read_dns(table: _Table, public_url: str, providers: tuple[Provider, ...]) -> DnsSettings:
    """``[dns]`` but its ``mx_hosts``, which belong to a brand (read with it)."""
    domains = [domain for provider in providers for domain in provider.domains]
    responder = table.string("responder", urlsplit(public_url).hostname or "", check=check_hostname)
    if table.has("own_domains"):
        own = _unique(table, "own_domains", _check_domain)
        for index, domain in enumerate(own):
            if domain not in domains:
                raise table.error(f"{table.key('own_domains')}[{index}]", f"{domain} is not a domain of any brand")
    else:
        # The ISP's own zone is the one its responder lives in.
        own = tuple(d for d in domains if responder == d or responder.endswith("." + d))
    addresses = _unique(table, "addresses", _check_ip)
    autodiscover_target = table.string("autodiscover_target", responder, check=check_hostname)
    defaults = DnsSettings()  # each default is declared once, in the dataclass
    https_port = table.integer("https_port", defaults.https_port, low=1, high=65535)
    ttl = table.integer("ttl", defaults.ttl, low=1, high=2**31 - 1)
    prio_table = table.table("priority", required=False)
    priorities = {name: prio_table.integer(name, low, high=65535) for name, low in defaults.priorities.items()}
    prio_table.finish()
    deny = _unique(table, "deny", _check_domain)
    nameserver = table.string("nameserver", check=_check_ip) if table.has("nameserver") else None
    port = table.integer("port", defaults.port, low=1, high=65535)
    timeout = table.number("timeout", defaults.timeout, low=0.001, high=MAX_RESOLVER_TIMEOUT)
    lifetime = table.number("lifetime", defaults.lifetime, low=0.001, high=MAX_RESOLVER_LIFETIME)
    if lifetime < timeout:
        raise table.error(table.key("lifetime"), f"must be at least timeout ({timeout:g}); got {lifetime:g}")
    cache_size = table.integer("cache_size", defaults.cache_size, low=1, high=10_000_000)
    lookup_rate = table.number("lookup_rate", defaults.lookup_rate, low=0.0, high=1_000_000.0)
    lookup_burst = table.integer("lookup_burst", defaults.lookup_burst, low=1, high=1_000_000)
    table.finish()
    return DnsSettings(
        responder=responder,
        own_domains=own,
        addresses=addresses,
        autodiscover_target=autodiscover_target,
        https_port=https_port,
        ttl=ttl,
        priorities=priorities,
        deny=deny,
        nameserver=nameserver,
        port=port,
        timeout=timeout,
        lifetime=lifetime,
        cache_size=cache_size,
        lookup_rate=lookup_rate,
        lookup_burst=lookup_burst,
    )


def _read_outlook(table: _Table) -> Outlook:
    outlook = Outlook(
        max_body_bytes=table.integer("max_body_bytes", OUTLOOK_DEFAULT_MAX_BODY, low=1024, high=MAX_BODY_LIMIT)
    )
    table.finish()
    return outlook


def parse(data: Mapping[str, Any], source: Path, env: Mapping[str, str] | None = None) -> Config:
    """Build a validated ``Config`` from already-parsed TOML ``data``."""
    env = os.environ if env is None else env
    root = _Table(data, "", source)
    service = root.table("service")
    public_url = service.string("public_url", check=_check_url(require_https=True))
    # Required in the one-brand form; with [[providers]], the default of brands without their own.
    webmail_url = (
        service.string("webmail_url", check=_check_url(require_https=False)) if service.has("webmail_url") else ""
    )
    log_level = service.string("log_level", "INFO", choices=LOG_LEVELS)
    log_flush_seconds = service.number("log_flush_seconds", DEFAULT_LOG_FLUSH_SECONDS, low=0.0, high=60.0)
    service.finish()
    dns_table = root.table("dns", required=False)
    if root.has("providers"):
        providers = _read_brands(root, dns_table, webmail_url, source.parent)
    else:
        providers = (_read_one_brand(root, dns_table, webmail_url, source.parent),)
    store = _read_store(root.table("store"), env, source)
    admin_tokens = _read_admin(root.table("admin", required=False), env)
    limits = _read_limits(root.table("limits", required=False))
    metrics = _read_metrics(root.table("metrics", required=False))
    dovecot_from_env = env.get(ENV_DOVECOT_HEADER, "")
    if root.has("dovecot") or dovecot_from_env:
        dovecot = _read_dovecot(root.table("dovecot", required=False), dovecot_from_env)
    else:
        dovecot = None
    dns = _read_dns(dns_table, public_url, providers)
    outlook = _read_outlook(root.table("outlook", required=False))
    root.finish()
    return Config(
        source=source,
        providers=providers,
        public_url=public_url,
        store=store,
        admin_tokens=admin_tokens,
        log_level=log_level,
        log_flush_seconds=log_flush_seconds,
        limits=limits,
        metrics=metrics,
        dovecot=dovecot,
        dns=dns,
        outlook=outlook,
    )


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file named by ``path``, ``$AUTOCONFIG_CONFIG`` or the default."""
    env = os.environ if env is None else env
    source = Path(path or env.get(ENV_CONFIG) or DEFAULT_PATH)
    try:
        with source.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found (set {ENV_CONFIG} to the config file's path)") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse(data, source, env)
