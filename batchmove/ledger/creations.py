"""The creation journal: every group (or tag) this run creates, recorded *before* the call.

Creating a group is not idempotent, so the resolver writes "creating" here first; after any
doubt (a timeout, a dropped connection, a killed process) it looks the name up before it
creates it again. A part of `Ledger` (`ledger.creations`): the same connection, table
`created_groups`.
"""

from __future__ import annotations

import time
from typing import Any

from batchmove.ledger.rows import Creation
from batchmove.ledger.storage import Part, writes


class Creations(Part):
    """`ledger.creations`: the journal of the groups (or tags) this run creates."""

    def get(self, name: str) -> Creation | None:
        got = self.ledger.conn.execute(
            "SELECT state, group_id FROM created_groups WHERE name = ?", (name,)).fetchone()
        return None if got is None else Creation._make(got)

    @writes
    def started(self, name: str) -> None:
        self.ledger.conn.execute(
            "INSERT INTO created_groups (name, state, updated_at) VALUES (?, 'creating', ?) "
            "ON CONFLICT(name) DO UPDATE SET state = 'creating', updated_at = excluded.updated_at",
            (name, time.time()))

    @writes
    def finished(self, name: str, group_id: int) -> None:
        self.ledger.conn.execute(
            "UPDATE created_groups SET state = 'created', group_id = ?, updated_at = ? "
            "WHERE name = ?", (group_id, time.time(), name))

    @writes
    def failed(self, name: str, errcode: int | None, errmsg: str) -> None:
        self.ledger.conn.execute(
            "UPDATE created_groups SET state = 'failed', errcode = ?, errmsg = ?, updated_at = ? "
            "WHERE name = ?", (errcode, errmsg, time.time(), name))

    @writes
    def settle(self, resolved: dict[str, int]) -> None:
        """Creations left "creating" by a killed process whose group turned up by name."""
        with self.ledger.transaction() as conn:
            conn.executemany(
                "UPDATE created_groups SET state = 'created', group_id = ?, updated_at = ? "
                "WHERE name = ? AND state = 'creating'",
                [(gid, time.time(), name) for name, gid in resolved.items()])

    def created(self) -> list[dict[str, Any]]:
        """`[{"name", "id"}]` of every group the run created, by id."""
        cur = self.ledger.conn.execute(
            "SELECT name, group_id FROM created_groups WHERE state = 'created' ORDER BY group_id")
        return [{"name": n, "id": gid} for n, gid in cur]
