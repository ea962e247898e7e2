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
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from itertools import repeat

from batchmove.models import Move


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

    def pending_count(self) -> int:
        """Pending rows whose group is resolved: what the move stage has to send."""
        return int(self.conn.execute("SELECT count(*) FROM rows WHERE status = 'pending' "
                                     "AND group_id IS NOT NULL").fetchone()[0])

    def record_previous_groups(self, groups: Sequence[tuple[int, int]],
                               already: Sequence[int]) -> None:
        """(prev_group, row) pairs, and the rows found in their target already, committed
        together: the pipelined snapshot's version of `record_snapshot`, touching only these
        rows (the other scans the whole table)."""
        with self.transaction() as conn:
            conn.executemany("UPDATE rows SET prev_group = ? WHERE row = ?", groups)
            conn.executemany("UPDATE rows SET status = 'already', updated_at = ? "
                             "WHERE row = ? AND status = 'pending'",
                             zip(repeat(time.time()), already))

    def record_snapshot(self, groups: dict[int, int]) -> int:
        """Store each row's current group; rows already in their target become `already`."""
        with self.transaction() as conn:
            conn.executemany("UPDATE rows SET prev_group = ? WHERE row = ?",
                             [(gid, row) for row, gid in groups.items()])
            cur = conn.execute(
                "UPDATE rows SET status = 'already', updated_at = ? "
                "WHERE status = 'pending' AND prev_group = group_id", (time.time(),))
        return cur.rowcount
