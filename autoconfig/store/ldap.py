"""The ``ldap`` source: read the switches from the ISP's directory (OpenLDAP and kin).

One search per lookup: the configured filter template, with the address
put in escaped as RFC 4515 section 3 says (``*``, ``(``, ``)``, ``\\`` and
NUL become ``\\2a``, ``\\28``, ``\\29``, ``\\5c``, ``\\00``), so an address can
only ever be a value, never a piece of the filter.  Of each entry found,
one attribute decides: IMAP is on when it holds one of ``imap_values``,
POP when it holds one of ``pop_values`` (exact, case-sensitive values).
The same contract as the ``sql`` source: no entry means both off, several
entries give a protocol only if every one enables it, and the source never
writes.

The driver is python-ldap, the binding over OpenLDAP's own libldap: the C
library does the BER encoding and the TLS, where the pure-Python ldap3 does
both in Python: 36 us of client CPU per search against ldap3's 451 us
(``python -m bench.drivers``), and ldap3 has had no release since 2021.

Connections are bound once (simple bind, the password from the environment
or a file, never from the config file itself) and reused, ``pool_size`` per
process; each operation gives up after the store timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ldap
from ldap.filter import escape_filter_chars

from .base import StoreError, StoreUnavailable, Switches
from .connpool import ConnectionPool, describe
from .ldap_settings import SCHEMES, LDAPSettings, check_filter
from .settings import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT
from .source import ReadOnlySource, address_parameters

log = logging.getLogger(__name__)

MAX_ENTRIES = 50
# Failures of the connection or the server, not of the filter: the connection is discarded.
LOST = (
    ldap.SERVER_DOWN,
    ldap.TIMEOUT,
    ldap.CONNECT_ERROR,
    ldap.UNAVAILABLE,
    ldap.BUSY,
    ldap.TIMELIMIT_EXCEEDED,
    ldap.OTHER,
    ldap.UNWILLING_TO_PERFORM,
)


def expand(template: str, key: str) -> str:
    """The filter for one address, every value escaped per RFC 4515."""
    return template % {name: escape_filter_chars(value) for name, value in address_parameters(key).items()}


def _is_lost(exc: BaseException) -> bool:
    return isinstance(exc, LOST)


class LDAPSource(ReadOnlySource):
    kind = "ldap"
    origin = "the directory"
    match_words = ("entry", "entries")
    read_only_reason = (
        "the account source is the directory (store.ldap), which is read-only here; "
        "change IMAP/POP where the directory is managed (webmail or the mail admin tool)"
    )

    def __init__(
        self, url: str, settings: LDAPSettings, *, pool_size: int = DEFAULT_POOL_SIZE, timeout: int = DEFAULT_TIMEOUT
    ) -> None:
        if not url.startswith(SCHEMES):
            raise StoreError("the ldap source needs an ldap:// or ldaps:// URL")
        if settings.starttls and url.startswith("ldaps://"):
            raise StoreError("store.ldap.starttls: ldaps:// is TLS already; use ldap:// with starttls")
        self.url = url
        self.settings = settings
        self.filter = check_filter(settings.filter)
        self.timeout = timeout
        self._attribute = settings.attribute.lower()
        self._imap = frozenset(settings.imap_values)
        self._pop = frozenset(settings.pop_values)
        self.pool: ConnectionPool[Any] = ConnectionPool(
            self._connect, self._unbind, size=pool_size, timeout=timeout, lost=_is_lost, what="directory"
        )
        try:
            self._search("nobody@autoconfig.invalid")
        except StoreUnavailable as exc:
            log.warning("ldap source: directory unreachable at start: %s", exc)
        except ldap.LDAPError as exc:
            raise StoreError(f"store.ldap: the directory rejects the search: {describe(exc)}") from None

    def describe(self) -> list[str]:
        s = self.settings
        source = f"preset {s.preset}" if s.preset else "store.ldap"
        return [
            f"ldap ({source}): base {s.base}, filter {self.filter}",
            f"ldap: imap when {s.attribute} has {' or '.join(s.imap_values) or '(never)'}; "
            f"pop when {s.attribute} has {' or '.join(s.pop_values) or '(never)'}",
        ]

    # -- connections ---------------------------------------------------------

    def _connect(self) -> Any:
        conn = ldap.initialize(self.url)
        try:
            conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
            conn.set_option(ldap.OPT_REFERRALS, 0)
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, self.timeout)
            conn.set_option(ldap.OPT_TIMEOUT, self.timeout)
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            if self.settings.ca_file:
                conn.set_option(ldap.OPT_X_TLS_CACERTFILE, self.settings.ca_file)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
            if self.settings.starttls:
                conn.start_tls_s()
            conn.simple_bind_s(self.settings.bind_dn, self.settings.password)
        except ldap.INVALID_CREDENTIALS:
            conn.unbind_s()
            # A wrong password is an outage of this source, not a reason to guess: 503 and a clear log line.
            raise ldap.UNAVAILABLE({"desc": f"bind as {self.settings.bind_dn} refused: invalid credentials"}) from None
        except BaseException:
            conn.unbind_s()
            raise
        return conn

    @staticmethod
    def _unbind(conn: Any) -> None:
        conn.unbind_s()

    def _search(self, key: str) -> list[tuple[str, dict[str, list[bytes]]]]:
        query = expand(self.filter, key)
        attribute = self.settings.attribute

        def work(conn: Any) -> list[tuple[str, dict[str, list[bytes]]]]:
            try:
                found = conn.search_ext_s(
                    self.settings.base,
                    ldap.SCOPE_SUBTREE,
                    query,
                    attrlist=[attribute],
                    timeout=self.timeout,
                    sizelimit=MAX_ENTRIES,
                )
            except ldap.NO_SUCH_OBJECT:
                return []
            except ldap.SIZELIMIT_EXCEEDED:
                raise StoreUnavailable(
                    f"directory: more than {MAX_ENTRIES} entries match one address; check store.ldap.filter"
                ) from None
            return [(dn, attrs) for dn, attrs in found if dn is not None]  # no search references

        return self.pool.run(work)

    # -- the store contract ------------------------------------------------

    def _enabled(self, attrs: Mapping[str, list[bytes]], wanted: frozenset[str]) -> bool:
        for name, values in attrs.items():
            if name.lower() == self._attribute:
                return any(value.decode("utf-8", "replace") in wanted for value in values)
        return False

    def _switches(self, key: str) -> Switches | None:
        try:
            entries = self._search(key)
        except ldap.LDAPError as exc:
            raise StoreUnavailable(f"directory: the search (store.ldap.filter) failed: {describe(exc)}") from exc
        return self._every_match(
            entries,
            imap=lambda entry: self._enabled(entry[1], self._imap),
            pop=lambda entry: self._enabled(entry[1], self._pop),
        )

    def _ping(self) -> None:
        def work(conn: Any) -> None:
            conn.whoami_s()

        try:
            self.pool.run(work)
        except ldap.LDAPError as exc:
            raise StoreUnavailable(f"directory: {describe(exc)}") from exc

    def close(self) -> None:
        self.pool.close()
