"""What the read-only sources (``sql``, ``ldap``) share: one template rule, one contract.

Both mirror another system's per-mailbox flags and answer one address at a
time, through a query or filter template that takes the address's
``%(name)s`` parameters.  No match means both off, like an unknown address;
several matches mean the template is too loose, and a protocol is then
offered only if every match enables it, since showing a disabled protocol
is the one mistake this service must not make.  Every write is refused.

No database or directory driver is loaded here: the config reader checks
templates with it at start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TypeVar

from .base import Account, ReadOnlyStore, Store, StoreError, Switches

log = logging.getLogger(__name__)

PARAMETERS = ("address", "local_part", "domain")
PLACEHOLDER = re.compile(r"%\((\w+)\)s")

Match = TypeVar("Match")


def address_parameters(key: str) -> dict[str, str]:
    """The values a template's ``%(address)s``, ``%(local_part)s`` and ``%(domain)s`` stand for."""
    local, _, domain = key.rpartition("@")
    return {"address": key, "local_part": local, "domain": domain}


def check_parameters(text: str, *, percent_note: str = "") -> None:
    """Only our parameters, at least one of them, and every literal % doubled (``percent_note`` says why)."""
    names = PLACEHOLDER.findall(text)
    unknown = sorted(set(names) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter %({unknown[0]})s; use %(address)s, %(local_part)s or %(domain)s")
    if not names:
        raise ValueError("must use the parameter %(address)s (or %(local_part)s and %(domain)s)")
    if "%" in PLACEHOLDER.sub("", text).replace("%%", ""):
        raise ValueError(f"a literal % must be written %%{percent_note}")


class ReadOnlySource(Store):
    """A store that mirrors another system's flags, one address at a time."""

    read_only = True
    origin = "the other system"  # where the accounts are listed and managed
    match_words = ("match", "matches")  # what one search result is called, singular and plural

    def _every_match(
        self, matches: Sequence[Match], imap: Callable[[Match], bool], pop: Callable[[Match], bool]
    ) -> Switches | None:
        """None for no match; else each protocol only if every match enables it."""
        if not matches:
            return None
        if len(matches) > 1:
            one, many = self.match_words
            log.warning(
                "%s source: %d %s for one address; offering only what every %s enables",
                self.kind,
                len(matches),
                many,
                one,
            )
        return Switches(imap=all(imap(match) for match in matches), pop=all(pop(match) for match in matches))

    def _get(self, key: str) -> Account | None:
        switches = self._switches(key)
        # The other system keeps no history the service can read, so no "changed" stamps.
        return None if switches is None else Account(address=key, switches=switches)

    def _refuse(self) -> ReadOnlyStore:
        return ReadOnlyStore(self.read_only_reason)

    def _update(self, key: str, changes: dict[str, bool], actor: str, at: datetime) -> Account:
        raise self._refuse()

    def _delete(self, key: str) -> bool:
        raise self._refuse()

    def _import(self, rows: Iterable[tuple[str, Switches]], actor: str, at: datetime) -> int:
        raise self._refuse()

    def _accounts(self, domain: str | None) -> Iterator[Account]:
        raise StoreError(
            f"the {self.kind} source answers one address at a time and cannot list or export accounts; "
            f"list them in {self.origin} itself"
        )
