"""PostgreSQL: the store for several responder nodes sharing one database.

There is no per-node cache: every client request reads its account's row
(one primary-key lookup on a pooled connection), so a switch acknowledged
by any node is what the very next request on every node sees.  Writes are
single statements (an upsert whose ``CASE`` keeps the stamp of a switch
that did not change), so concurrent writers through several nodes cannot
interleave half-updates: the row lock orders them and the last commit wins.

The schema is versioned in ``autoconfig_schema``; each start applies the
migrations the database lacks, under an advisory lock so nodes starting
together do not race, and refuses a database newer than this release.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from .base import Account, Change, Store, StoreError, StoreUnavailable, Switches, now
from .pglookup import Row as TextRow
from .pglookup import RowLookup, numbered
from .pgpool import PgConnections
from .rekey import DESCRIPTION, Merge, Row, plan, report
from .settings import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: "autoconfig" folded into a bigint; any constant works.
MIGRATION_LOCK = 0x6175746F636F6E66

# (version, description, SQL or a step run on the migration's connection).
# Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, str, str | Callable[[Conn], tuple[Merge, ...]]], ...] = (
    (
        1,
        "accounts with imap/pop switches and who changed each",
        """
        CREATE TABLE accounts (
            -- "C" collation: byte order, the order SQLite lists and exports in.
            address text COLLATE "C" PRIMARY KEY,
            domain  text COLLATE "C" NOT NULL,
            imap    boolean NOT NULL DEFAULT false,
            imap_at timestamptz,
            imap_by text,
            pop     boolean NOT NULL DEFAULT false,
            pop_at  timestamptz,
            pop_by  text
        );
        CREATE INDEX accounts_by_domain ON accounts (domain, address);
        """,
    ),
    (2, DESCRIPTION, lambda conn: _rekey(conn)),  # a lambda: _rekey is defined below
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

COLUMNS = "address, imap, imap_at, imap_by, pop, pop_at, pop_by"
# The same, for rows read as text through libpq (pglookup.py): a stamp as seconds since the
# epoch (exact to the microsecond), which reads the same whatever the session's DateStyle.
TEXT_COLUMNS = "address, imap, extract(epoch FROM imap_at), imap_by, pop, extract(epoch FROM pop_at), pop_by"

# One statement, so it is atomic per row.  A NULL parameter means "not in this change".
UPDATE = f"""
INSERT INTO accounts AS a (address, domain, imap, imap_at, imap_by, pop, pop_at, pop_by)
VALUES (
    %(address)s, %(domain)s,
    coalesce(%(imap)s::boolean, false),
    CASE WHEN %(imap)s::boolean IS NOT NULL THEN %(at)s::timestamptz END,
    CASE WHEN %(imap)s::boolean IS NOT NULL THEN %(by)s::text END,
    coalesce(%(pop)s::boolean, false),
    CASE WHEN %(pop)s::boolean IS NOT NULL THEN %(at)s::timestamptz END,
    CASE WHEN %(pop)s::boolean IS NOT NULL THEN %(by)s::text END
)
ON CONFLICT (address) DO UPDATE SET
    imap_at = CASE WHEN %(imap)s::boolean <> a.imap THEN %(at)s::timestamptz ELSE a.imap_at END,
    imap_by = CASE WHEN %(imap)s::boolean <> a.imap THEN %(by)s::text ELSE a.imap_by END,
    imap = coalesce(%(imap)s::boolean, a.imap),
    pop_at = CASE WHEN %(pop)s::boolean <> a.pop THEN %(at)s::timestamptz ELSE a.pop_at END,
    pop_by = CASE WHEN %(pop)s::boolean <> a.pop THEN %(by)s::text ELSE a.pop_by END,
    pop = coalesce(%(pop)s::boolean, a.pop)
RETURNING {TEXT_COLUMNS}
"""

# Rows arrive by COPY into a temporary table; the last row of an address wins, as in SQLite.
# The count returned is of accounts created or changed, as in SQLite.
IMPORT_TABLE = """
CREATE TEMPORARY TABLE autoconfig_import (
    seq bigint NOT NULL, address text COLLATE "C" NOT NULL, domain text COLLATE "C" NOT NULL,
    imap boolean NOT NULL, pop boolean NOT NULL
) ON COMMIT DROP
"""
IMPORT_COPY = "COPY autoconfig_import (seq, address, domain, imap, pop) FROM STDIN"
IMPORT_UPSERT = """
INSERT INTO accounts AS a (address, domain, imap, imap_at, imap_by, pop, pop_at, pop_by)
SELECT DISTINCT ON (address)
    address, domain, imap, %(at)s::timestamptz, %(by)s::text, pop, %(at)s::timestamptz, %(by)s::text
FROM autoconfig_import
ORDER BY address, seq DESC
ON CONFLICT (address) DO UPDATE SET
    imap_at = CASE WHEN excluded.imap <> a.imap THEN excluded.imap_at ELSE a.imap_at END,
    imap_by = CASE WHEN excluded.imap <> a.imap THEN excluded.imap_by ELSE a.imap_by END,
    imap = excluded.imap,
    pop_at = CASE WHEN excluded.pop <> a.pop THEN excluded.pop_at ELSE a.pop_at END,
    pop_by = CASE WHEN excluded.pop <> a.pop THEN excluded.pop_by ELSE a.pop_by END,
    pop = excluded.pop
-- An unchanged account is not rewritten: re-importing a full export costs reads, not a table rewrite.
WHERE (a.imap, a.pop) IS DISTINCT FROM (excluded.imap, excluded.pop)
"""

Conn = psycopg.Connection[tuple[Any, ...]]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _domain(key: str) -> str:
    return key.rpartition("@")[2]


def _change(at: datetime | None, by: str | None) -> Change | None:
    return None if at is None else Change(at.astimezone(UTC), by or "")


def _text_change(epoch: bytes | None, by: bytes | None) -> Change | None:
    if epoch is None:
        return None
    at = EPOCH + timedelta(microseconds=int(Decimal(epoch.decode()) * 1_000_000))
    return Change(at, "" if by is None else by.decode())


def _text_account(row: TextRow) -> Account:
    """An account from a row of ``TEXT_COLUMNS`` as libpq sends it."""
    address, imap, imap_at, imap_by, pop, pop_at, pop_by = row
    assert address is not None  # the primary key
    return Account(
        address=address.decode(),
        switches=Switches(imap=imap == b"t", pop=pop == b"t"),
        imap_changed=_text_change(imap_at, imap_by),
        pop_changed=_text_change(pop_at, pop_by),
    )


def _account(row: tuple[Any, ...]) -> Account:
    address, imap, imap_at, imap_by, pop, pop_at, pop_by = row
    return Account(
        address=address,
        switches=Switches(imap=bool(imap), pop=bool(pop)),
        imap_changed=_change(imap_at, imap_by),
        pop_changed=_change(pop_at, pop_by),
    )


# Keys that are not plain lower-case ASCII (lower() of the "C" collation touches ASCII only):
# the only ones the canonical form can change.
_REKEY_CANDIDATES = (
    f"SELECT {COLUMNS} FROM accounts WHERE octet_length(address) <> char_length(address) OR address <> lower(address)"
)


def _rekey(conn: Conn) -> tuple[Merge, ...]:
    """Schema 2, inside the migration's transaction: every key in canonical form, rows of one mailbox merged."""

    def row_at(key: str) -> Row | None:
        found = conn.execute(f"SELECT {COLUMNS} FROM accounts WHERE address = %s", (key,)).fetchone()
        return None if found is None else Row(*found)

    candidates = [Row(*found) for found in conn.execute(_REKEY_CANDIDATES).fetchall()]
    rekeying = plan(candidates, row_at, now())
    for old, new in rekeying.renames:
        conn.execute("UPDATE accounts SET address = %s WHERE address = %s", (new, old))
    for merge, merged in rekeying.merges:
        conn.execute("DELETE FROM accounts WHERE address = ANY(%s)", (list(merge.sources),))
        conn.execute(
            "INSERT INTO accounts (address, domain, imap, imap_at, imap_by, pop, pop_at, pop_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (merged.address, _domain(merged.address), merged.imap, merged.imap_at, merged.imap_by,
             merged.pop, merged.pop_at, merged.pop_by),
        )  # fmt: skip
    return report(rekeying, "PostgreSQL store")


def migrate(conn: Conn, merges: list[Merge] | None = None) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before.

    Rows a migration merged are appended to ``merges`` (and logged).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS autoconfig_schema ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM autoconfig_schema").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"PostgreSQL schema version {found} is newer than this release understands ({SCHEMA_VERSION}); "
                "run the newer release or restore a matching database"
            )
        for version, description, statements in MIGRATIONS:
            if version > found:
                log.info("PostgreSQL store: applying schema migration %d (%s)", version, description)
                if isinstance(statements, str):
                    conn.execute(statements.encode())
                else:
                    merged = statements(conn)
                    if merges is not None:
                        merges.extend(merged)
                conn.execute(
                    "INSERT INTO autoconfig_schema (version, description) VALUES (%s, %s)", (version, description)
                )
    return found


def inspect(url: str, timeout: int) -> str:
    """The schema version found at ``url``, in a read-only session: nothing is created or migrated."""
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=max(2, int(timeout)),
            options="-c default_transaction_read_only=on",
        )
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
    try:
        with conn:
            if conn.execute("SELECT to_regclass('autoconfig_schema')").fetchone() == (None,):
                return "postgresql (no tables yet: the service creates them at start)"
            row = conn.execute("SELECT coalesce(max(version), 0) FROM autoconfig_schema").fetchone()
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL: {exc}") from None
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise StoreError(f"PostgreSQL schema version {found} is newer than this release understands ({SCHEMA_VERSION})")
    if found < SCHEMA_VERSION:
        return f"postgresql (schema {found}: the service migrates it to {SCHEMA_VERSION} at start)"
    return f"postgresql (schema {found})"


class PostgresStore(Store):
    kind = "postgresql"

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, timeout: int = DEFAULT_TIMEOUT) -> None:
        self._db = PgConnections(url, pool_size=pool_size, timeout=timeout)

        # Everything a request does goes through libpq with the [store] timeout deadline
        # (pglookup.py); only the bulk work of the CLI (import, export) runs through psycopg.
        def lookup(sql: str) -> RowLookup:
            return RowLookup(sql, timeout=timeout, what="PostgreSQL")

        self._lookup = lookup("SELECT imap, pop FROM accounts WHERE address = $1")
        self._get_row = lookup(f"SELECT {TEXT_COLUMNS} FROM accounts WHERE address = $1")
        update, self._update_names = numbered(UPDATE)
        self._update_row = lookup(update)
        self._delete_row = lookup("DELETE FROM accounts WHERE address = $1 RETURNING address")
        self._select_1 = lookup("SELECT 1")
        self._migrated = False
        try:
            self._migrate()
        except StoreUnavailable as exc:
            # A node started during a database outage still starts: it answers 503 and
            # /healthz says "down" until the database is back, then migrates on first use.
            log.warning("PostgreSQL store unreachable at start, will retry on use: %s", exc)

    def _migrate(self) -> None:
        conn = self._db.connect()
        merges: list[Merge] = []
        try:
            migrate(conn, merges)
            self.migration_merges = tuple(merges)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        finally:
            conn.close()
        self._migrated = True

    def _run(self, work: Any, *, retry: bool = True) -> Any:
        if not self._migrated:
            self._migrate()
        try:
            return self._db.run(work, retry=retry)
        except psycopg.Error as exc:
            # Not a lost connection (those are StoreUnavailable already) but the database
            # refusing our own statements: the table dropped or altered under us.  No guess:
            # a 503 for the requests it touches, and the reason in the log.
            log.error("PostgreSQL store: the database refused a statement: %s", exc)
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def _switches(self, key: str) -> Switches | None:
        params = [key.encode()]

        def work(conn: Conn) -> Switches | None:
            # The hot path: libpq's own calls with a deadline (pglookup.py says why).
            rows = self._lookup.rows(conn, params, 1)
            return None if not rows else Switches(imap=rows[0][0] == b"t", pop=rows[0][1] == b"t")

        result: Switches | None = self._run(work)
        return result

    def _get(self, key: str) -> Account | None:
        def work(conn: Conn) -> Account | None:
            rows = self._get_row.rows(conn, [key.encode()], 1)
            return _text_account(rows[0]) if rows else None

        result: Account | None = self._run(work)
        return result

    def _update(self, key: str, changes: dict[str, bool], actor: str, at: datetime) -> Account:
        def flag(name: str) -> bytes | None:
            value = changes.get(name)
            return None if value is None else (b"true" if value else b"false")

        given = {
            "address": key.encode(),
            "domain": _domain(key).encode(),
            "imap": flag("imap"),
            "pop": flag("pop"),
            "at": at.isoformat().encode(),
            "by": actor.encode(),
        }
        params = [given[name] for name in self._update_names]

        def work(conn: Conn) -> Account:
            rows = self._update_row.rows(conn, params, 1)
            assert rows  # RETURNING of an upsert always yields the row
            return _text_account(rows[0])

        # Retrying is safe: setting a switch to the value it already has changes nothing.
        result: Account = self._run(work)
        return result

    def _delete(self, key: str) -> bool:
        def work(conn: Conn) -> bool:
            return bool(self._delete_row.rows(conn, [key.encode()], 1))

        result: bool = self._run(work, retry=False)
        return result

    def _accounts(self, domain: str | None) -> Iterator[Account]:
        if not self._migrated:
            self._migrate()
        # A server-side cursor streams a million rows without holding them in memory.
        with self._db.connection() as conn, conn.transaction(), conn.cursor(name="autoconfig_accounts") as cur:
            cur.itersize = 5000
            if domain is None:
                cur.execute(f"SELECT {COLUMNS} FROM accounts ORDER BY address")
            else:
                cur.execute(f"SELECT {COLUMNS} FROM accounts WHERE domain = %s ORDER BY address", (domain,))
            for row in cur:
                yield _account(row)

    def _import(self, rows: Iterable[tuple[str, Switches]], actor: str, at: datetime) -> int:
        def work(conn: Conn) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = 0")
                cur.execute(IMPORT_TABLE)
                with cur.copy(IMPORT_COPY) as copy:
                    for seq, (key, switches) in enumerate(rows):
                        copy.write_row((seq, key, _domain(key), switches.imap, switches.pop))
                cur.execute(IMPORT_UPSERT, {"at": at, "by": actor})
                return cur.rowcount

        # Never retried: the rows may be a one-shot iterator.
        result: int = self._run(work, retry=False)
        return result

    def _ping(self) -> None:
        self._run(lambda conn: self._select_1.rows(conn, [], 1))

    def close(self) -> None:
        self._db.close()
