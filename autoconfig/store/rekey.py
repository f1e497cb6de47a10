"""Schema 2 of both stores: every stored key in the canonical form of ``address.canonical_local``.

Releases before it keyed accounts by ``NFC(local).lower()``, which is not
idempotent, so one mailbox could own two rows (one per spelling).  The
migration computes each stored key's canonical form; a row whose form
differs moves to it, and rows whose forms meet become one row:

- each switch of the merged row is on only if it is on in every row, since
  a protocol one spelling turned off must never be advertised again;
- a switch that ends up off although some row had it on is stamped with
  the migration as the change (``MIGRATION_ACTOR``), at migration time;
  any other switch keeps the latest stamp among the rows with its value;
- every merge is logged as a warning and handed back, so the command that
  ran the migration can print it.

Only keys that are not plain lower-case ASCII can change, and the backends
select just those, so a large table costs one scan and no Python per row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..address import AddressError, canonical_local
from .base import SWITCHES, Switches

log = logging.getLogger(__name__)

MIGRATION_ACTOR = "migration:address-keys"
DESCRIPTION = "address keys in canonical form (lower case and NFC to a fixed point); rows of one mailbox merged"


@dataclass(frozen=True)
class Row:
    """One stored account, with its stamps in the backend's own type (ISO text or datetime)."""

    address: str
    imap: bool
    imap_at: Any
    imap_by: str | None
    pop: bool
    pop_at: Any
    pop_by: str | None


@dataclass(frozen=True)
class Merge:
    """Rows of one mailbox made one; what the migration reports."""

    key: str
    sources: tuple[str, ...]  # the old keys, sorted
    switches: Switches
    turned_off: tuple[str, ...]  # switches on in some of the rows, and off now

    def describe(self) -> str:
        # Escaped: the spellings differ only in invisible combining marks or their order.
        sources = ", ".join(ascii(source) for source in self.sources)
        state = ", ".join(f"{name} {'on' if getattr(self.switches, name) else 'off'}" for name in SWITCHES)
        line = f"merged {len(self.sources)} rows of one mailbox ({sources}) into {self.key!a}: {state}"
        if self.turned_off:
            line += f"; {' and '.join(self.turned_off)} turned off (on for only some of the rows)"
        return line


@dataclass(frozen=True)
class Rekeying:
    renames: tuple[tuple[str, str], ...]  # (old key, new key): a row that moves alone
    merges: tuple[tuple[Merge, Row], ...]  # each merge, with the row that replaces its sources


def canonical_key(stored: str) -> str:
    """The canonical form of a key as stored; a key that cannot be read is left as it is."""
    local, at, domain = stored.rpartition("@")
    if not at:
        return stored
    try:
        return f"{canonical_local(local)}@{domain}"
    except AddressError:
        return stored


def _merged(key: str, rows: list[Row], stamp: Any) -> tuple[Merge, Row]:
    values = {name: all(getattr(row, name) for row in rows) for name in SWITCHES}
    turned_off = tuple(name for name in SWITCHES if not values[name] and any(getattr(row, name) for row in rows))
    stamps: dict[str, tuple[Any, str | None]] = {}
    for name in SWITCHES:
        if name in turned_off:
            stamps[name] = (stamp, MIGRATION_ACTOR)
            continue
        stamped = [row for row in rows if getattr(row, f"{name}_at") is not None]
        latest = max(stamped, key=lambda row: getattr(row, f"{name}_at"), default=None)
        stamps[name] = (
            (None, None) if latest is None else (getattr(latest, f"{name}_at"), getattr(latest, f"{name}_by"))
        )
    merge = Merge(
        key=key,
        sources=tuple(sorted(row.address for row in rows)),
        switches=Switches(**values),
        turned_off=turned_off,
    )
    row = Row(key, values["imap"], *stamps["imap"], values["pop"], *stamps["pop"])
    return merge, row


def plan(candidates: Iterable[Row], row_at: Callable[[str], Row | None], stamp: Any) -> Rekeying:
    """What to change: ``candidates`` are the rows whose key may not be canonical.

    ``row_at(key)`` reads the row stored under a canonical key that is not
    among the candidates (a plain ASCII key), which then joins the merge.
    """
    groups: dict[str, list[Row]] = {}
    for row in candidates:
        groups.setdefault(canonical_key(row.address), []).append(row)
    renames: list[tuple[str, str]] = []
    merges: list[tuple[Merge, Row]] = []
    for key, rows in sorted(groups.items()):
        if all(row.address != key for row in rows):
            existing = row_at(key)
            if existing is not None:
                rows.append(existing)
        if len(rows) == 1:
            if rows[0].address != key:
                renames.append((rows[0].address, key))
            continue
        merges.append(_merged(key, rows, stamp))
    return Rekeying(tuple(renames), tuple(merges))


def report(rekeying: Rekeying, where: str) -> tuple[Merge, ...]:
    """Log the outcome of a migration; the merges, for the caller to show."""
    for merge, _row in rekeying.merges:
        log.warning("%s: address key migration %s", where, merge.describe())
    if rekeying.renames or rekeying.merges:
        log.warning(
            "%s: address key migration: keys moved: %d, mailboxes merged: %d",
            where,
            len(rekeying.renames),
            len(rekeying.merges),
        )
    return tuple(merge for merge, _row in rekeying.merges)
