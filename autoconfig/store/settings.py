"""``[store]`` as one settings object, and the shape every backend declares itself in.

Nothing here loads a driver or a backend: the config reader imports this
module (through ``registry.py``) at start, and importing a renderer must
stay cheap.  A backend's light ``*_settings`` module fills in a ``Backend``
with its URL schemes, its URL check and, for a read-only source, the reader
of its ``[store.<name>]`` table; its ``open`` and ``inspect`` import the
backend itself (and its driver) only when they are called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    # A backend's reader gets the config reader's own table (typed getters whose errors name file
    # and key).  Named for the type checker only: the readers are checked against the class itself,
    # with no second copy of its signatures to keep in step, and at run time this module still
    # imports nothing of the config reader (importing a renderer stays cheap).
    from ..config import _Table
    from .base import Store

    Table = _Table

# Connections per process, and whole seconds before a request gives up (503).  Whole seconds:
# MySQL's connect/read/write timeouts and libpq's connect_timeout take nothing finer, so a
# fraction could not mean the same thing on every backend.
DEFAULT_POOL_SIZE = 4
DEFAULT_TIMEOUT = 2


class SourceSettings:
    """What a read-only source read from its ``[store.<name>]`` table (a frozen dataclass per source)."""

    name: ClassVar[str]  # the source, and its table: [store.<name>]


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``: where the switches are, how many connections, how long to wait.

    ``source`` is set for a read-only source (``[store.sql]``, ``[store.ldap]``).
    """

    url: str = field(repr=False)  # a database URL may carry a password
    pool_size: int = DEFAULT_POOL_SIZE
    timeout: int = DEFAULT_TIMEOUT
    source: SourceSettings | None = None

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0]


Reader = Callable[["Table", Mapping[str, str], Path], SourceSettings]
Opener = Callable[[StoreSettings], "Store"]
Inspector = Callable[[StoreSettings], str]


@dataclass(frozen=True)
class Backend:
    """One registry entry: what the config reader and ``open_store`` know of a backend.

    A backend that owns URL ``schemes`` checks them (``check_url``, a
    ``ValueError`` whose message never repeats the URL).  A store of its own
    (sqlite, postgresql) has ``open`` and ``inspect`` and is opened by its URL
    alone.  A read-only source (sql, ldap) has ``read``, the reader of its
    ``[store.<name>]`` table; it reads the URLs in ``reads``, and its ``open``
    takes the settings that table gave.  A URL only a source reads
    (``mysql://``, ``ldap://``) says what it ``needs``.
    """

    name: str
    schemes: tuple[str, ...] = ()
    example: str = ""  # what a URL of it looks like, for the "must look like" message
    check_url: Callable[[str], str] | None = None
    open: Opener | None = None
    inspect: Inspector | None = None  # read without changing anything (check-config)
    needs: str = ""  # with no open: what the URL needs, e.g. "[store.ldap]"
    driver: tuple[str, str] | None = None  # (module, package) not in requirements.txt
    read: Reader | None = None
    reads: tuple[str, ...] = ()  # a source: the URL schemes it reads
    reads_words: str = ""  # ... said in words: "a postgresql:// or mysql:// URL"
    check: Callable[[StoreSettings, Table], None] | None = None  # a source: cross-checks on the final URL

    @property
    def opens_by_url(self) -> bool:
        """A store of its own, opened by its URL alone (not a source, and not a URL only a source reads)."""
        return self.open is not None and self.read is None
