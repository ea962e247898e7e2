"""The input's rows into the ledger's `rows` table: the load's inner loop (`Ledger.load_rows`
holds its transaction).

Rows go in as the intake yields them, chunk by chunk; the verdicts that need every row
(duplicates) come after the last chunk. A run whose account listing arrives while its input
loads (`engine/early.py`) writes each pending row's group id with the row: resolving the
targets later (`Ledger.assign_groups`) was an UPDATE of every row (100,000 rows: 0.09 s,
between the load and the first call); written with the insert, the ids cost ~0.01 s.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import NamedTuple

from batchmove.models import InputRow, RowStatus

#: a chunk's pending targets -> the group ids known for them so far (None: nothing known yet)
GroupIds = Callable[[set[str]], Mapping[str, int] | None]

_INSERT_FULL = ("INSERT INTO rows (row, openid, target, status, reason, extra, group_id) "
                "VALUES (?,?,?,?,?,?,?)")
_INSERT_PLAIN = "INSERT INTO rows (row, openid, target, status) VALUES (?, ?, ?, ?)"
# The group id is found by SQLite from the row's target, so each row is still bound by its
# first four fields. 100,000 rows, 8 targets: 0.15 s without ids; 0.16 s with a CASE over the
# targets; 0.19-0.20 s looking each up in a temp table; 0.29 s building a 5-tuple per row in
# Python. The CASE compares targets one by one: beyond CASE_TARGETS, the temp table.
_INSERT_GROUPED = ("INSERT INTO rows (row, openid, target, status, group_id) "
                   "VALUES (?1, ?2, ?3, ?4, {})")
_LOOKUP = "(SELECT group_id FROM temp.load_ids WHERE target = ?3)"
CASE_TARGETS = 32
_FIRST_FOUR = itemgetter(0, 1, 2, 3)
_REASON, _EXTRA = itemgetter(4), itemgetter(5)
_PENDING = RowStatus.PENDING.value


class Loaded(NamedTuple):
    total: int  # rows written
    ids: dict[str, int]  # target -> the group id every pending row of it was written with


def insert_rows(conn: sqlite3.Connection, chunks: Iterable[list[InputRow]],
                settle: Callable[[], Iterable[tuple[int, RowStatus, str]]],
                group_ids: GroupIds | None) -> Loaded:
    """Every chunk (the table emptied first), then `settle`'s verdicts. `group_ids`: asked
    for each chunk's pending targets; a target some row of which was written without an id
    (the listing had not come yet) is left out of `Loaded.ids`."""
    total = 0
    written: dict[str, int] = {}
    without: set[str] = set()
    conn.execute("DELETE FROM rows")
    for chunk in chunks:
        ids: Mapping[str, int] = {}
        if group_ids is not None:
            targets = {r.target for r in chunk if r.status == _PENDING}
            ids = group_ids(targets) or {}
            written.update(ids)
            without |= targets - ids.keys()
        _insert_chunk(conn, chunk, ids)
        total += len(chunk)
    conn.executemany(  # a duplicate, say, moves nobody: no group id
        "UPDATE rows SET status = ?, reason = ?, group_id = NULL WHERE row = ?",
        [(status.value, reason, row) for row, status, reason in settle()])
    return Loaded(total, {t: gid for t, gid in written.items() if t not in without})


def _insert_chunk(conn: sqlite3.Connection, chunk: list[InputRow],
                  ids: Mapping[str, int]) -> None:
    """The usual rows (no reason, no extra cells) by their first four fields, the columns'
    defaults doing the rest: binding "" and None cost 40% of the insert (100,000 rows: 0.22 s
    -> 0.14 s). An InputRow is already the row's tuple (its status a str): only `extra` needs
    encoding (1M rows: 0.33 s -> 0.03 s). A pending row whose target is in `ids` gets its
    group id with it (`_INSERT_GROUPED`)."""
    if any(map(_REASON, chunk)) or any(map(_EXTRA, chunk)):
        conn.executemany(_INSERT_FULL, [
            (*r[:5], None if r.extra is None else json.dumps(r.extra, ensure_ascii=False),
             ids.get(r.target) if r.status == _PENDING else None)
            for r in chunk if r.reason or r.extra])
        chunk = [r for r in chunk if not (r.reason or r.extra)]
    if ids:
        conn.executemany(_INSERT_GROUPED.format(_group_id_of_target(conn, ids)),
                         map(_FIRST_FOUR, chunk))
    else:
        conn.executemany(_INSERT_PLAIN, map(_FIRST_FOUR, chunk))


def _group_id_of_target(conn: sqlite3.Connection, ids: Mapping[str, int]) -> str:
    """SQL giving the group id of the row's target (`?3`) from `ids`, NULL for any other."""
    if len(ids) <= CASE_TARGETS and not any("\0" in target for target in ids):
        return "CASE ?3 " + " ".join(
            "WHEN '{}' THEN {:d}".format(target.replace("'", "''"), gid)
            for target, gid in ids.items()) + " END"
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS load_ids "
                 "(target TEXT PRIMARY KEY, group_id INTEGER NOT NULL)")
    conn.execute("DELETE FROM temp.load_ids")
    conn.executemany("INSERT INTO temp.load_ids (target, group_id) VALUES (?, ?)", ids.items())
    return _LOOKUP
