"""Which backend serves which store URL scheme and which ``[store.<name>]`` table.

``BACKENDS`` is the one list: ``open_store``, ``inspect_store`` and the
config reader all look a backend up here.  Importing this module loads only
the backends' light ``*_settings`` modules: no driver, no backend.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .base import StoreError
from .ldap_settings import LDAP
from .mysql_settings import MYSQL
from .postgres_settings import POSTGRESQL
from .settings import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, Backend, Inspector, Opener, StoreSettings
from .sql_settings import SQL
from .sqlite_settings import SQLITE

if TYPE_CHECKING:
    from .settings import Table

__all__ = ["BACKENDS", "StoreSettings", "check_store", "check_url", "read_store"]

BACKENDS: tuple[Backend, ...] = (SQLITE, POSTGRESQL, MYSQL, SQL, LDAP)


def by_scheme() -> dict[str, Backend]:
    """URL scheme (``"mysql://"``) -> the backend that owns it."""
    return {scheme: backend for backend in BACKENDS for scheme in backend.schemes}


def sources() -> dict[str, Backend]:
    """Source name (``"sql"``, its table ``[store.sql]``) -> the read-only source."""
    return {backend.name: backend for backend in BACKENDS if backend.read is not None}


def backend_for(url: str) -> Backend | None:
    """The backend that owns ``url``'s scheme, if any does."""
    return next((backend for scheme, backend in by_scheme().items() if url.startswith(scheme)), None)


def check_url(value: str) -> str:
    """A store URL some backend owns, checked by that backend (``ValueError``: the URL is never repeated)."""
    backend = backend_for(value)
    if backend is None or backend.check_url is None:
        examples = [b.example for b in BACKENDS if b.example]
        raise ValueError(
            f"must look like {', '.join(examples[:-1])} or {examples[-1]}; got {value.split(':', 1)[0]!r}..."
        )
    return backend.check_url(value)


def read_store(table: Table, env: Mapping[str, str], base: Path) -> StoreSettings:
    """``[store]``: the URL, the pool, and at most one source table, read by its source.

    ``env`` and ``base`` (the config file's directory) are for a source's
    secrets and files.  The URL is checked on its own here; ``check_store``
    checks it against the source once the final URL (the environment's, if
    set) is known.
    """
    url = table.string("url", check=check_url)
    pool_size = table.integer("pool_size", DEFAULT_POOL_SIZE, low=1, high=100)
    timeout = table.integer("timeout", DEFAULT_TIMEOUT, low=1, high=30)
    given = [name for name in sources() if table.has(name)]
    if len(given) > 1:
        raise table.error(
            table.key(given[1]), f"[store.{given[0]}] and [store.{given[1]}] are two different sources; keep one"
        )
    source = None
    read = sources()[given[0]].read if given else None
    if read is not None:
        source = read(table.table(given[0]), env, base)
    table.finish()
    return StoreSettings(url, pool_size, timeout, source)


def check_store(settings: StoreSettings, table: Table) -> None:
    """The URL and the source fit together; errors name the keys of ``[store]`` (``table``)."""
    if settings.source is None:
        backend = backend_for(settings.url)
        if backend is not None and not backend.opens_by_url:
            raise table.error(table.key("url"), f"{settings.scheme}:// is a read-only source; it needs {backend.needs}")
        return
    source = sources()[settings.source.name]
    if not settings.url.startswith(source.reads):
        raise table.error(
            table.key("url"), f"the {source.name} source ([store.{source.name}]) needs {source.reads_words}"
        )
    if source.check is not None:
        source.check(settings, table)


def opener(settings: StoreSettings) -> tuple[Opener, Inspector | None]:
    """How to open the store ``settings`` name, and how to inspect it without changing it (None: a
    read-only source, which changes nothing, is opened and asked).  ``StoreError`` says why there is none."""
    if settings.source is not None:
        source = sources().get(settings.source.name)
        if source is None or source.open is None:
            raise StoreError(f"no {settings.source.name} source is registered")
        if not settings.url.startswith(source.reads):
            raise StoreError(f"the {source.name} source needs {source.reads_words}")
        require_driver(backend_for(settings.url) or source)
        return source.open, None
    backend = backend_for(settings.url)
    if backend is None:
        raise StoreError(f"unsupported store URL scheme: {settings.scheme!r}")
    if not backend.opens_by_url or backend.open is None:
        raise StoreError(f"a {settings.scheme}:// URL is a read-only source: it needs {backend.needs}")
    return backend.open, backend.inspect


def require_driver(backend: Backend) -> None:
    """The MySQL and LDAP drivers build from source against C libraries, so they are not in
    requirements.txt (the demo and SQLite/PostgreSQL need neither): say how to get them."""
    if backend.driver is None:
        return
    module, package = backend.driver
    if importlib.util.find_spec(module) is None:
        what = backend.schemes[0] if backend.schemes else f"the {backend.name} source"
        raise StoreError(
            f"{what} needs the {package} package, which is not installed: install Debian's "
            "libmariadb-dev libldap2-dev libsasl2-dev pkg-config, then "
            "pip install -r requirements-sources.txt"
        )
