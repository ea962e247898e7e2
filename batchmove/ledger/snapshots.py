"""The snapshot's records: each user's group (or tags) before the run. A part of `Ledger`
(`ledger.snapshots`): the same connection, the columns `prev_group` and `prev_tags` of `rows`.

The groups backend's pipelined snapshot commits a window of users' previous groups
(`record_previous`) before any of them is moved, so `rollback` stays exact however the run
ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from batchmove.ledger.schema import ALREADY, PENDING
from batchmove.ledger.storage import Part, writes
from batchmove.models import Move

#: a WHERE clause picking the rows whose numbers are in a JSON array (the statement's last `?`)
ROWS_IN_JSON = "WHERE row IN (SELECT value FROM json_each(?))"


class Snapshots(Part):
    """`ledger.snapshots`: where each pending user was before the run."""

    def missing(self, column: str = "prev_group") -> list[Move]:
        """Pending rows whose user's state before the run is not recorded yet."""
        if column not in ("prev_group", "prev_tags"):
            raise ValueError(column)
        cur = self.ledger.conn.execute(
            f"SELECT row, openid FROM rows WHERE status = {PENDING} AND {column} IS NULL "
            "AND group_id IS NOT NULL ORDER BY row")
        return [Move(row, openid) for row, openid in cur]

    @writes
    def record_tags(self, tags: dict[int, list[int]]) -> None:
        """Each row's user's tag ids before the run."""
        with self.ledger.transaction() as conn:
            conn.executemany("UPDATE rows SET prev_tags = ? WHERE row = ?",
                             [(json.dumps(sorted(t)), row) for row, t in tags.items()])

    @writes
    def record_previous(self, groups: Mapping[int, Sequence[int]],
                        already: Sequence[int]) -> None:
        """The rows found in each previous group ({prev_group: rows}), and the rows found in
        their target already, committed together: the pipelined snapshot's version of
        `record_groups`, touching only these rows (the other scans the whole table). One
        statement per previous group, its rows as a JSON array that SQLite walks in C: 0.7 µs
        a row against 2.3 µs for `executemany` of (group, row) pairs."""
        with self.ledger.transaction() as conn:
            for prev_group, rows in groups.items():
                conn.execute("UPDATE rows SET prev_group = ? " + ROWS_IN_JSON,
                             (prev_group, json.dumps(rows)))
            if already:
                conn.execute(f"UPDATE rows SET status = {ALREADY}, updated_at = ? "
                             + ROWS_IN_JSON + f" AND status = {PENDING}",
                             (time.time(), json.dumps(already)))

    @writes
    def record_groups(self, groups: dict[int, int]) -> int:
        """Store each row's current group; rows already in their target become `already`."""
        with self.ledger.transaction() as conn:
            conn.executemany("UPDATE rows SET prev_group = ? WHERE row = ?",
                             [(gid, row) for row, gid in groups.items()])
            cur = conn.execute(
                f"UPDATE rows SET status = {ALREADY}, updated_at = ? "
                f"WHERE status = {PENDING} AND prev_group = group_id", (time.time(),))
        return cur.rowcount
