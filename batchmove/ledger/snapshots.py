"""The snapshot's records: each user's group (or tags) before the run, and the pending rows
the moves stream from. A mixin of `Ledger`: the same SQLite file, table `rows`.

The groups backend's pipelined snapshot commits a window of users' previous groups
(`record_previous_groups`) before any of them is moved, so `rollback` stays exact however the
run ends.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager

from batchmove.models import Move

#: a WHERE clause picking the rows whose numbers are in a JSON array (the statement's last `?`)
ROWS_IN_JSON = "WHERE row IN (SELECT value FROM json_each(?))"


class SnapshotRecords:
    """Methods of `Ledger` over the snapshot columns (`prev_group`, `prev_tags`) of `rows`."""

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def pending_without_snapshot(self, column: str = "prev_group") -> list[Move]:
        """Pending rows whose user's state before the run is not recorded yet."""
        if column not in ("prev_group", "prev_tags"):
            raise ValueError(column)
        cur = self.conn.execute(
            f"SELECT row, openid FROM rows WHERE status = 'pending' AND {column} IS NULL "
            "AND group_id IS NOT NULL ORDER BY row")
        return [Move(row, openid) for row, openid in cur]

    def record_tag_snapshot(self, tags: dict[int, list[int]]) -> None:
        with self.transaction() as conn:
            conn.executemany("UPDATE rows SET prev_tags = ? WHERE row = ?",
                             [(json.dumps(sorted(t)), row) for row, t in tags.items()])

    def pending_stream(self, page: int = 5_000) -> Iterator[tuple[int, int, str, int | None]]:
        """(group_id, row, openid, prev_group) of every pending row whose group is resolved, in
        input order, read a page at a time by row number, so no cursor stays open while the
        run writes results and a 10M-row run holds one page."""
        after = 0
        while found := self.conn.execute(
                "SELECT group_id, row, openid, prev_group FROM rows WHERE row > ? "
                "AND status = 'pending' AND group_id IS NOT NULL ORDER BY row LIMIT ?",
                (after, page)).fetchall():
            yield from found
            after = found[-1][1]

    def pending_openids(self, page: int = 20_000) -> Iterator[list[str]]:
        """The openids of every pending row, a page at a time (the account registry's claim
        of who this run moves; a 10M-row run holds one page)."""
        after = 0
        while found := self.conn.execute(
                "SELECT row, openid FROM rows WHERE row > ? AND status = 'pending' "
                "ORDER BY row LIMIT ?", (after, page)).fetchall():
            yield [openid for _, openid in found]
            after = found[-1][0]

    def pending_count(self) -> int:
        """Pending rows whose group is resolved: what the move stage has to send."""
        return int(self.conn.execute("SELECT count(*) FROM rows WHERE status = 'pending' "
                                     "AND group_id IS NOT NULL").fetchone()[0])

    def record_previous_groups(self, groups: Mapping[int, Sequence[int]],
                               already: Sequence[int]) -> None:
        """The rows found in each previous group ({prev_group: rows}), and the rows found in
        their target already, committed together: the pipelined snapshot's version of
        `record_snapshot`, touching only these rows (the other scans the whole table). One
        statement per previous group, its rows as a JSON array that SQLite walks in C: 0.7 µs
        a row against 2.3 µs for `executemany` of (group, row) pairs."""
        with self.transaction() as conn:
            for prev_group, rows in groups.items():
                conn.execute("UPDATE rows SET prev_group = ? " + ROWS_IN_JSON,
                             (prev_group, json.dumps(rows)))
            if already:
                conn.execute("UPDATE rows SET status = 'already', updated_at = ? "
                             + ROWS_IN_JSON + " AND status = 'pending'",
                             (time.time(), json.dumps(already)))

    def record_snapshot(self, groups: dict[int, int]) -> int:
        """Store each row's current group; rows already in their target become `already`."""
        with self.transaction() as conn:
            conn.executemany("UPDATE rows SET prev_group = ? WHERE row = ?",
                             [(gid, row) for row, gid in groups.items()])
            cur = conn.execute(
                "UPDATE rows SET status = 'already', updated_at = ? "
                "WHERE status = 'pending' AND prev_group = group_id", (time.time(),))
        return cur.rowcount
