"""The contract every account store keeps.

A store holds, per account, the two switches the user flips in webmail
(``imap`` and ``pop``) and who changed each one last.  An account the store
has never seen is an account with both switches off: that default lives
here, not in each backend, so no backend can get it wrong.

Public methods are final and do the shared checks; backends override the
underscored ones (the pattern Radicale uses for its auth plugins).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..values import OFF as OFF  # re-exported: the values the store returns
from ..values import SWITCHES as SWITCHES
from ..values import Switches as Switches

if TYPE_CHECKING:
    from .rekey import Merge


class StoreError(Exception):
    """Base class for store failures."""


class StoreUnavailable(StoreError):
    """The backing database cannot be reached; callers answer 503, never guess."""


class StoreReplaced(StoreUnavailable):
    """The database file this node opened is no longer at its path (deleted or replaced).

    Answering from the file that is open would disagree with any process
    that opens the path anew, and a write into it would be lost: 503 until
    the file is back or the node is reloaded.
    """


class ReadOnlyStore(StoreError):
    """The store mirrors another system's data and takes no writes."""


@dataclass(frozen=True)
class Change:
    at: datetime
    by: str


@dataclass(frozen=True)
class Account:
    """One account's switches and their history, for the admin API and CLI."""

    address: str
    switches: Switches = OFF
    imap_changed: Change | None = None
    pop_changed: Change | None = None

    def as_json(self) -> dict[str, object]:
        def change(c: Change | None) -> dict[str, str] | None:
            return None if c is None else {"at": c.at.isoformat(timespec="seconds"), "by": c.by}

        return {
            "address": self.address,
            "imap": self.switches.imap,
            "pop": self.switches.pop,
            "imap_changed": change(self.imap_changed),
            "pop_changed": change(self.pop_changed),
        }


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Store(abc.ABC):
    """Account switches keyed by ``Address.key`` (normalised address)."""

    read_only = False
    read_only_reason = ""  # what a refused write is told; a default is built from ``kind``
    kind = "abstract"
    # Rows of one mailbox that this process's schema migration merged (store/rekey.py), to show the operator.
    migration_merges: tuple[Merge, ...] = ()

    # -- the public surface: final, shared checks ------------------------

    def switches(self, key: str) -> Switches:
        """The switches that decide what a client may see.  Hot path."""
        return self._switches(key) or OFF

    def get(self, key: str) -> Account:
        return self._get(key) or Account(address=key)

    def update(self, key: str, changes: dict[str, bool], actor: str) -> Account:
        """Set some switches atomically; only switches whose value changes get a new timestamp."""
        self._writable()
        unknown = set(changes) - set(SWITCHES)
        if unknown:
            raise ValueError(f"unknown switch {sorted(unknown)[0]!r}")
        if not all(isinstance(v, bool) for v in changes.values()):
            raise ValueError("switch values must be booleans")
        return self._update(key, changes, actor, now())

    def reset(self, key: str) -> bool:
        """Forget an account (both switches back to off).  True if it existed."""
        self._writable()
        return self._delete(key)

    def accounts(self, domain: str | None = None) -> Iterator[Account]:
        """Every stored account, ordered by address, optionally one domain's."""
        return self._accounts(domain)

    def import_switches(self, rows: Iterable[tuple[str, Switches]], actor: str) -> int:
        """Set many accounts in one transaction: all rows land, or none.

        Returns how many accounts were created or changed; a row that matches
        what is stored is not rewritten (its "changed" stamps stay).
        """
        self._writable()
        return self._import(rows, actor, now())

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` if the store cannot answer right now."""
        self._ping()

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections; the default holds none."""

    def describe(self) -> list[str]:
        """What ``check-config`` shows about where the switches are read (a source's expanded query)."""
        return []

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStore(
                self.read_only_reason
                or f"the {self.kind} account source is read-only; change switches where it is managed"
            )

    # -- what a backend implements -----------------------------------------

    @abc.abstractmethod
    def _switches(self, key: str) -> Switches | None: ...

    @abc.abstractmethod
    def _get(self, key: str) -> Account | None: ...

    @abc.abstractmethod
    def _update(self, key: str, changes: dict[str, bool], actor: str, at: datetime) -> Account: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _accounts(self, domain: str | None) -> Iterator[Account]: ...

    @abc.abstractmethod
    def _import(self, rows: Iterable[tuple[str, Switches]], actor: str, at: datetime) -> int: ...

    @abc.abstractmethod
    def _ping(self) -> None: ...
