"""The read-only ``ldap`` source as the registry knows it: ``[store.ldap]`` read and checked without the driver.

The config reader uses these at start; the driver (python-ldap) and
``ldap.py`` are loaded only when an ``ldap`` source is opened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from .base import StoreError
from .presets import LDAP_PRESETS
from .settings import Backend, SourceSettings, StoreSettings
from .source import PLACEHOLDER, check_parameters

if TYPE_CHECKING:
    from .base import Store
    from .settings import Table

SCHEMES = ("ldap://", "ldaps://")
CUSTOM = ("filter", "attribute", "imap_values", "pop_values")  # what a preset supplies


@dataclass(frozen=True)
class LDAPSettings(SourceSettings):
    """``[store.ldap]``, checked; the filter already expanded from a preset when one is named."""

    name: ClassVar[str] = "ldap"

    bind_dn: str
    password: str = field(repr=False)
    base: str
    filter: str
    attribute: str
    imap_values: tuple[str, ...]
    pop_values: tuple[str, ...]
    starttls: bool = False
    ca_file: str | None = None
    preset: str | None = None


def check_filter(template: str) -> str:
    """Reject, at config time, a template that cannot be one filter with our parameters."""
    text = template.strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError("must be one LDAP filter in parentheses, e.g. (&(objectClass=mailUser)(mail=%(address)s))")
    depth = 0
    for char in PLACEHOLDER.sub("", text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ValueError("has unbalanced parentheses")
    check_parameters(text)
    return text


def check_url(value: str) -> str:
    parts = urlsplit(value)
    if not parts.hostname or parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise ValueError(
            "must look like ldap://host[:port] or ldaps://host[:port] (base and bind DN go in [store.ldap])"
        )
    return value


def _read_secret(table: Table, env: Mapping[str, str], base: Path) -> str:
    """The bind password from ``password_env`` (a variable's name) or ``password_file``, never inline."""
    if table.has("password"):
        raise table.error(
            table.key("password"), "keep the password out of the config: use password_env or password_file"
        )
    if table.has("password_env") == table.has("password_file"):
        raise table.error(table.key("password_env"), "set exactly one of password_env and password_file")
    if table.has("password_env"):
        name = table.string("password_env")
        if name not in env:
            raise table.error(table.key("password_env"), f"the environment variable {name} is not set")
        return env[name]
    path = base / table.string("password_file")
    try:
        secret = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise table.error(table.key("password_file"), f"cannot read {path}: {exc.strerror}") from None
    return secret.rstrip("\r\n")


def read(table: Table, env: Mapping[str, str], base: Path) -> LDAPSettings:
    """``[store.ldap]``: bind, base, and a ``preset`` or a hand-written filter with its attribute and values."""
    bind_dn = table.string("bind_dn")
    password = _read_secret(table, env, base)
    search_base = table.string("base")
    starttls = table.boolean("starttls", False)
    ca_file = table.string("ca_file", "")
    preset_name: str | None = None
    if table.has("preset"):
        given = [name for name in CUSTOM if table.has(name)]
        if given:
            raise table.error(
                table.key(given[0]), "a preset and a hand-written filter are mutually exclusive; keep one"
            )
        preset_name = table.string("preset", choices=tuple(LDAP_PRESETS))
        preset = LDAP_PRESETS[preset_name]
        search_filter, attribute = preset.filter, preset.attribute
        imap_values, pop_values = preset.imap_values, preset.pop_values
    else:
        search_filter = table.string("filter", check=check_filter)
        attribute = table.string("attribute")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", attribute):
            raise table.error(table.key("attribute"), f"not an attribute name: {attribute!r}")
        imap_values = tuple(table.strings("imap_values", []))
        pop_values = tuple(table.strings("pop_values", []))
        if not imap_values and not pop_values:
            raise table.error(table.key("imap_values"), "list the attribute values that turn IMAP (or POP) on")
    table.finish()
    return LDAPSettings(
        bind_dn=bind_dn,
        password=password,
        base=search_base,
        filter=search_filter,
        attribute=attribute,
        imap_values=imap_values,
        pop_values=pop_values,
        starttls=starttls,
        ca_file=str(base / ca_file) if ca_file else None,
        preset=preset_name,
    )


def check(settings: StoreSettings, store: Table) -> None:
    """STARTTLS on a connection that is TLS already is a contradiction, not a choice."""
    source = settings.source
    if isinstance(source, LDAPSettings) and source.starttls and settings.url.startswith("ldaps://"):
        raise store.error(
            f"{store.key(LDAPSettings.name)}.starttls", "ldaps:// is TLS already; use ldap:// with starttls"
        )


def open_ldap(settings: StoreSettings) -> Store:
    from .ldap import LDAPSource

    if not isinstance(settings.source, LDAPSettings):
        raise StoreError("the ldap source needs [store.ldap] settings")
    return LDAPSource(settings.url, settings.source, pool_size=settings.pool_size, timeout=settings.timeout)


LDAP = Backend(
    name=LDAPSettings.name,
    schemes=SCHEMES,
    example="ldap://host",
    check_url=check_url,
    needs="[store.ldap]",
    driver=("ldap", "python-ldap"),
    open=open_ldap,
    read=read,
    reads=SCHEMES,
    reads_words="an ldap:// or ldaps:// URL",
    check=check,
)
