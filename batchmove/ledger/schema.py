"""The ledger's tables, how a ledger of an earlier batchmove is brought up to date, and the
check a ledger passes before anything resumes from it.

A row's `status` is constrained (`CHECK`) to the values of `RowStatus`, the one home of the
statuses, so no write can leave a status nothing counts. Bytes damaged on disk can, which is
why `check_intact` reads the whole file before a resume: SQLite's own check (`PRAGMA
quick_check`: every page and record well formed), every status one of `RowStatus`, and as many
rows as the load wrote. A 1,000,000-row ledger takes 0.23 s (0.5-0.7 s while the 2-core VM is busy).

Ledgers written before statuses were constrained (schema "1", or a `CHECK` listing other
statuses) get their `rows` table rebuilt by the first writer that opens them: one
transaction, about 1.3 s per 1,000,000 rows, once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from batchmove.ledger.storage import atomic, damaged
from batchmove.models import RowStatus

SCHEMA_VERSION = "2"


def literal(status: RowStatus) -> str:
    """A status as an SQL literal, for statements built from `RowStatus`."""
    return f"'{status.value}'"


#: the statuses the queries pick rows by, as SQL literals
PENDING, MOVED, ALREADY = map(literal, (RowStatus.PENDING, RowStatus.MOVED, RowStatus.ALREADY))
FAILED, INVALID, UNKNOWN = map(literal, (RowStatus.FAILED, RowStatus.INVALID,
                                         RowStatus.UNKNOWN))
KNOWN = "(" + ", ".join(map(literal, RowStatus)) + ")"
# a chain of `=`, not `status IN (...)`: SQLite evaluates an IN list in a CHECK through an
# ephemeral table per row (1M inserts: +2.2 s; the chain: +0.14 s)
STATUS_CHECK = "CHECK (" + " OR ".join(f"status = {literal(s)}" for s in RowStatus) + ")"

_ROWS = f"""CREATE TABLE {{name}} (
    row        INTEGER PRIMARY KEY,
    openid     TEXT NOT NULL,
    target     TEXT NOT NULL,
    status     TEXT NOT NULL {STATUS_CHECK},
    reason     TEXT NOT NULL DEFAULT '',
    group_id   INTEGER,
    prev_group INTEGER,
    errcode    INTEGER,
    errmsg     TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    updated_at REAL,
    extra      TEXT,
    prev_tags  TEXT,             -- tags backend: the user's tag ids before the run (JSON)
    verified   TEXT              -- `verify`'s verdict for a moved row: "ok" or the mismatch
)"""

SCHEMA = _ROWS.format(name="IF NOT EXISTS rows") + """;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS created_groups (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    group_id   INTEGER,
    errcode    INTEGER,
    errmsg     TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (endpoint TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""

#: the rows whose move was never answered, found without a scan (`outcomes`); made after a
#: migration too (rebuilding `rows` drops its indexes)
UNKNOWN_INDEX = (f"CREATE INDEX IF NOT EXISTS rows_unknown ON rows (row) "
                 f"WHERE status = {UNKNOWN}")

# No index on status: keeping one up to date cost more than every query it served (1M rows:
# +2.6 s of results, +0.5 s of load, against ~0.2 s per full scan). Ledgers of batchmove 0.1
# have one (rows_by_state): a writer drops it.
OLD_STATUS_INDEX = "DROP INDEX IF EXISTS rows_by_state"


def up_to_date(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                         "AND name = 'rows'").fetchone()
    return found is None or STATUS_CHECK in found[0]


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Rebuild `rows` with today's CHECK, copying every column both tables have (a status
    outside `RowStatus` is a damaged ledger: refused, the file left as it was)."""
    if up_to_date(conn):
        return
    check_statuses(conn, path)
    old = [c[1] for c in conn.execute("PRAGMA table_info(rows)")]
    with atomic(conn, "BEGIN IMMEDIATE"):
        conn.execute(_ROWS.format(name="rows_migrated"))
        new = [c[1] for c in conn.execute("PRAGMA table_info(rows_migrated)")]
        columns = ", ".join(c for c in old if c in new)
        conn.execute(f"INSERT INTO rows_migrated ({columns}) SELECT {columns} FROM rows")
        conn.execute("DROP TABLE rows")
        conn.execute("ALTER TABLE rows_migrated RENAME TO rows")
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?) ON CONFLICT(key) "
                     "DO UPDATE SET value = excluded.value", (f'"{SCHEMA_VERSION}"',))


def check_intact(conn: sqlite3.Connection, path: Path, loaded: int | None) -> None:
    """Refuse (LedgerDamagedError, exit 2) a ledger that is not as a run left it: pages or
    records damaged, a status nothing counts, rows missing or added since the load."""
    # SQLite's check without re-evaluating the CHECK of every row (1M rows: 2.6 s -> 0.3 s);
    # the statuses are counted next, in a quarter of a second
    conn.execute("PRAGMA ignore_check_constraints = 1")
    try:
        verdict = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
    finally:
        conn.execute("PRAGMA ignore_check_constraints = 0")
    if verdict != ["ok"]:
        raise damaged(path, "SQLite's check: " + "; ".join(map(str, verdict))[:200])
    total = check_statuses(conn, path)
    if loaded is not None and total != loaded:
        raise damaged(path, f"it holds {total} rows but the run loaded {loaded}")


def check_statuses(conn: sqlite3.Connection, path: Path) -> int:
    """Every row's status is a `RowStatus`; returns the rows."""
    total, known = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE status IN {KNOWN}) FROM rows").fetchone()
    if total != known:
        row, status = conn.execute(
            f"SELECT row, status FROM rows WHERE status NOT IN {KNOWN} OR status IS NULL "
            "LIMIT 1").fetchone()
        raise damaged(path, f"{total - known} rows have a status batchmove never writes "
                            f"(row {row}: {str(status)[:40]!r})")
    return int(total)
