"""The checkpoint: one SQLite file (WAL) per run directory.

It holds the run's metadata and fingerprint, every input row with its state, the groups this run
created (recorded *before* the create call, so a resume never creates a group twice), and API
call counters. A result is committed before it is counted anywhere else, so `kill -9` at any
moment loses nothing that was reported: the worst case is that rows whose call was in flight
are sent again, which is harmless because moves are idempotent.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

from batchmove.errors import RunLockedError, RunStateError
from batchmove.ledger.cells import ReportCells
from batchmove.ledger.creations import CreationJournal
from batchmove.ledger.outcomes import INDEX as UNKNOWN_INDEX
from batchmove.ledger.rows import LedgerRow, MovedRow, RollbackRow, TagRow
from batchmove.ledger.snapshots import ROWS_IN_JSON, SnapshotRecords
from batchmove.models import InputRow, RowFailure, RowStatus

#: row numbers -> (row, openid, target) of those rows, in row order
RowLookup = Callable[[list[int]], Iterator[tuple[int, str, str]]]

LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = ".lock"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    row        INTEGER PRIMARY KEY,
    openid     TEXT NOT NULL,
    target     TEXT NOT NULL,
    status     TEXT NOT NULL,
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
);
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

# No index on status: keeping one up to date cost more than every query it served (1M rows:
# +2.6 s of results, +0.5 s of load, against ~0.2 s per full scan). Ledgers of batchmove 0.1
# have one (rows_by_state): a writer drops it.
_OLD_STATUS_INDEX = "DROP INDEX IF EXISTS rows_by_state"
_ROWS = ("SELECT row, openid, target, status, reason, group_id, prev_group, errcode, errmsg, "
         "attempts, extra, verified FROM rows")
_INSERT_FULL = "INSERT INTO rows (row, openid, target, status, reason, extra) VALUES (?,?,?,?,?,?)"
_INSERT_PLAIN = "INSERT INTO rows (row, openid, target, status) VALUES (?, ?, ?, ?)"
_FIRST_FOUR = itemgetter(0, 1, 2, 3)
_REASON, _EXTRA = itemgetter(4), itemgetter(5)
_COUNTS = "SELECT " + ", ".join(  # one pass, no sort: 2x faster than GROUP BY status
    f"count(*) FILTER (WHERE status = '{s.value}')" for s in RowStatus) + " FROM rows"


def _insert_rows(conn: sqlite3.Connection, chunk: list[InputRow]) -> None:
    """The usual rows (no reason, no extra cells) by their first four fields, the columns'
    defaults doing the rest: binding "" and None cost 40% of the insert (100,000 rows: 0.22 s
    -> 0.14 s). An InputRow is already the row's tuple (its status a str): only `extra` needs
    encoding (1M rows: 0.33 s -> 0.03 s)."""
    if any(map(_REASON, chunk)) or any(map(_EXTRA, chunk)):
        conn.executemany(_INSERT_FULL, [
            r if r.extra is None else (*r[:5], json.dumps(r.extra, ensure_ascii=False))
            for r in chunk if r.reason or r.extra])
        chunk = [r for r in chunk if not (r.reason or r.extra)]
    conn.executemany(_INSERT_PLAIN, map(_FIRST_FOUR, chunk))


class Ledger(CreationJournal, SnapshotRecords):
    """The run's SQLite checkpoint. Not thread-safe: one event loop writes it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LEDGER_NAME
        self._lock_fd: int | None = None
        self.db: sqlite3.Connection | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def open(self, *, lock: bool = True) -> Ledger:
        """Open (creating if needed) and, unless `lock` is False, take the run's exclusive lock."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if lock:
                self._take_lock()
            fresh = not self.path.exists()
            old_umask = os.umask(0o077)
            try:
                self.db = sqlite3.connect(self.path, isolation_level=None)
            finally:
                os.umask(old_umask)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute("PRAGMA cache_size=-65536")  # 64 MB: a 1M-row load stays in memory
            # sorts (GROUP BY target) spill to a deleted temp file, not to memory: 10M rows
            # held ~450 MB in an in-memory temp store
            self.db.execute("PRAGMA temp_store=FILE")
            self.db.executescript(_SCHEMA)
            self.db.execute(UNKNOWN_INDEX)
            if lock:
                self.db.execute(_OLD_STATUS_INDEX)
            if fresh:
                self.set_meta(schema=SCHEMA_VERSION)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise RunStateError(f"{self.path} is not a batchmove ledger ({exc})") from exc
        except OSError as exc:
            self.close()
            raise RunStateError(f"cannot use run directory {self.run_dir}: {exc.strerror}") from exc
        return self

    def _take_lock(self) -> None:
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"another batchmove process is running this job (run directory {self.run_dir}); "
                "wait for it to finish or stop it first"
            ) from None
        self._lock_fd = fd

    def close_db(self) -> None:
        """Close the database but keep the run's lock (to move files around)."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def close(self) -> None:
        self.close_db()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self.db is None:
            raise RunStateError("the ledger is closed")
        return self.db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One commit for a group of writes; rolled back whole if anything fails."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- metadata ---------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        self.conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v, ensure_ascii=False)) for k, v in values.items()],
        )

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def is_empty(self) -> bool:
        return self.conn.execute("SELECT 1 FROM rows LIMIT 1").fetchone() is None

    # --- loading ----------------------------------------------------------------------------
    def load_rows(
        self,
        chunks: Iterable[list[InputRow]],
        settle: Callable[[RowLookup], Iterable[tuple[int, RowStatus, str]]],
    ) -> int:
        """Insert every input row in one transaction, then the verdicts `settle` gives once
        every chunk is in (duplicates: it may read rows back through the lookup it gets)."""
        total = 0
        with self.transaction() as conn:
            conn.execute("DELETE FROM rows")
            for chunk in chunks:
                _insert_rows(conn, chunk)
                total += len(chunk)
            conn.executemany(
                "UPDATE rows SET status = ?, reason = ? WHERE row = ?",
                [(status.value, reason, row) for row, status, reason in settle(self._targets_of)],
            )
        return total

    def _targets_of(self, rows: list[int]) -> Iterator[tuple[int, str, str]]:
        """(row, openid, target) of these rows, in row order (rows: ascending)."""
        for start in range(0, len(rows), 500):
            part = rows[start:start + 500]
            yield from self.conn.execute(
                "SELECT row, openid, target FROM rows WHERE row IN "
                f"({','.join('?' * len(part))}) ORDER BY row", part)

    # --- queries ----------------------------------------------------------------------------
    def counts(self) -> Counter[str]:
        found = self.conn.execute(_COUNTS).fetchone()
        return Counter({s.value: n for s, n in zip(RowStatus, found, strict=True) if n})

    def pending_targets(self) -> Counter[str]:
        """Pending rows per target as typed (group id digits or name)."""
        return Counter(dict(self.conn.execute(
            "SELECT target, count(*) FROM rows WHERE status = 'pending' GROUP BY target")))

    def pending_moves(self) -> Iterator[tuple[int, int, str]]:
        """(group_id, row, openid) of every pending row whose group is resolved, in input
        order."""
        return iter(self.conn.execute(
            "SELECT group_id, row, openid FROM rows WHERE status = 'pending' "
            "AND group_id IS NOT NULL ORDER BY row"))

    def record_verified(self, verdicts: dict[int, str]) -> int:
        """Store `verify`'s verdict per row; returns the number of mismatches."""
        with self.transaction() as conn:
            conn.executemany("UPDATE rows SET verified = ? WHERE row = ?",
                             [(verdict, row) for row, verdict in verdicts.items()])
        return self.mismatches()

    def verified_any(self) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM rows WHERE verified IS NOT NULL LIMIT 1").fetchone() is not None

    def mismatches(self) -> int:
        return int(self.conn.execute(
            "SELECT count(*) FROM rows WHERE verified IS NOT NULL AND verified != 'ok'"
        ).fetchone()[0])

    def moved_rows(self) -> list[MovedRow]:
        """Every moved row: its user, the group or tag id and the target as typed."""
        return list(map(MovedRow._make, self.conn.execute(
            "SELECT row, openid, group_id, target FROM rows WHERE status = 'moved' ORDER BY row")))

    def tag_rows(self) -> list[TagRow]:
        """The pending rows with a resolved target, with the tags the snapshot saw."""
        cur = self.conn.execute(
            "SELECT row, openid, group_id, target, prev_tags FROM rows "
            "WHERE status = 'pending' AND group_id IS NOT NULL ORDER BY row")
        return [TagRow(row, openid, tag_id, target, None if prev is None else json.loads(prev))
                for row, openid, tag_id, target, prev in cur]

    def mark_already(self, rows: list[int]) -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE rows SET status = 'already', updated_at = ? "
                "WHERE row = ? AND status = 'pending'", [(now, row) for row in rows])

    def rollback_rows(self, *, tags: bool = False) -> list[RollbackRow]:
        """Every user the run may have moved, with where the snapshot saw them before: the
        group id, or (tags) the tag set as `101;102`.

        Pending, failed and unknown rows are included: their call may have been applied (just
        before a kill, or never answered). Restoring a user already in their old group is
        harmless (and the rollback run's own snapshot skips it)."""
        column = "prev_tags" if tags else "prev_group"
        cur = self.conn.execute(
            f"SELECT row, openid, {column}, status FROM rows WHERE {column} IS NOT NULL "
            "AND status IN ('moved', 'pending', 'failed', 'unknown') ORDER BY row")
        if not tags:
            return list(map(RollbackRow._make, cur))
        return [RollbackRow(row, openid, ";".join(map(str, json.loads(prev))), status)
                for row, openid, prev, status in cur]

    def rows(self) -> Iterator[LedgerRow]:
        """Every row in input order."""
        yield from map(LedgerRow._make, self.conn.execute(_ROWS + " ORDER BY row"))

    def row(self, number: int) -> LedgerRow | None:
        """The row with this spreadsheet row number, if the input has one."""
        found = self.conn.execute(_ROWS + " WHERE row = ?", (number,)).fetchone()
        return None if found is None else LedgerRow._make(found)

    def valid_openids(self) -> list[str]:
        """Every openid of a row that passed validation, once each, sorted."""
        return [o for (o,) in self.conn.execute(
            "SELECT DISTINCT openid FROM rows WHERE status != 'invalid' ORDER BY openid")]

    def report_rows(self, cells: ReportCells, *, failed_only: bool = False
                    ) -> Iterator[tuple[Any, ...]]:
        """The report's (or failed.csv's) cells of every row, in input order, computed by
        SQLite (a Python function per row cost 3 s of a 1M-row report)."""
        cells.register(self.conn)
        columns = cells.failed if failed_only else cells.report
        where = " WHERE status IN ('failed', 'invalid')" if failed_only else ""
        return iter(self.conn.execute(
            f"SELECT {', '.join(columns)} FROM rows{where} ORDER BY row"))

    # --- results ----------------------------------------------------------------------------
    def assign_groups(self, resolved: dict[str, int],
                      failed: dict[str, tuple[int | None, str]]) -> None:
        """Record each pending target's group id, or fail its rows with the reason."""
        now = time.time()
        with self.transaction() as conn:
            # one pass over the pending rows, not one per target (20 targets, 1M rows: 12 s -> 2 s)
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS resolved "
                         "(target TEXT PRIMARY KEY, group_id INTEGER NOT NULL)")
            conn.execute("DELETE FROM temp.resolved")
            conn.executemany("INSERT INTO temp.resolved (target, group_id) VALUES (?, ?)",
                             resolved.items())
            conn.execute(
                "UPDATE rows SET group_id = (SELECT r.group_id FROM temp.resolved AS r "
                "WHERE r.target = rows.target) "
                "WHERE status = 'pending' AND target IN (SELECT target FROM temp.resolved)")
            conn.executemany(
                "UPDATE rows SET status = 'failed', errcode = ?, errmsg = ?, updated_at = ? "
                "WHERE status = 'pending' AND target = ?",
                [(code, msg, now, target) for target, (code, msg) in failed.items()],
            )

    def record_moved(self, rows: list[int], attempts: int) -> None:
        self.record_results({attempts: rows}, [])

    def record_failed(self, failures: list[RowFailure]) -> None:
        self.record_results({}, failures)

    def record_results(self, moved: dict[int, list[int]], failures: list[RowFailure]) -> None:
        """Moved rows ({attempts: rows}) and failures, committed together. Moved rows go as
        one JSON array per statement, walked by SQLite in C: 1.5 µs a row against 2.4 µs for
        `executemany` (1,000-row commits, 100,000-row ledger), the most of a run's writes."""
        now = time.time()
        with self.transaction() as conn:
            for attempts, rows in moved.items():
                conn.execute("UPDATE rows SET status = 'moved', errcode = NULL, errmsg = NULL, "
                             "attempts = attempts + ?, updated_at = ? " + ROWS_IN_JSON,
                             (attempts, now, json.dumps(rows)))
            conn.executemany(
                "UPDATE rows SET status = 'failed', errcode = ?, errmsg = ?, "
                "attempts = attempts + ?, updated_at = ? WHERE row = ?",
                [(f.errcode, f.errmsg, f.attempts, now, f.row) for f in failures],
            )

    def failures_by_answer(self) -> Counter[tuple[int | None, str]]:
        """Failed rows counted by (errcode, errmsg): what notifications list as reasons."""
        return Counter({(code, msg): n for code, msg, n in self.conn.execute(
            "SELECT errcode, COALESCE(errmsg, ''), count(*) FROM rows "
            "WHERE status = 'failed' GROUP BY 1, 2")})

    def failed_errcodes(self) -> set[int | None]:
        return {c for (c,) in self.conn.execute(
            "SELECT DISTINCT errcode FROM rows WHERE status = 'failed'")}

    def reset_failed(self, retryable: Iterable[int | None]) -> int:
        """Make failed rows with these errcodes (None = no answer) pending again."""
        codes = list(retryable)
        known = [c for c in codes if c is not None]
        marks = ",".join("?" * len(known)) or "NULL"
        cur = self.conn.execute(
            f"UPDATE rows SET status = 'pending', group_id = NULL "
            f"WHERE status = 'failed' AND (errcode IN ({marks}) OR "
            f"(errcode IS NULL AND ?))", (*known, None in codes))
        return cur.rowcount

    def add_calls(self, calls: Counter[str]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO calls (endpoint, n) VALUES (?, ?) "
                "ON CONFLICT(endpoint) DO UPDATE SET n = n + excluded.n",
                list(calls.items()),
            )

    def calls(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT endpoint, n FROM calls ORDER BY endpoint"))

