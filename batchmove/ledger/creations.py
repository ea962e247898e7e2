"""The creation journal: every group (or tag) this run creates, recorded *before* the call.

Creating a group is not idempotent, so the resolver writes "creating" here first; after any
doubt (a timeout, a dropped connection, a killed process) it looks the name up before it
creates it again. A mixin of `Ledger`: the same SQLite file, table `created_groups`.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any

from batchmove.ledger.rows import Creation


class CreationJournal:
    """Methods of `Ledger` over its `created_groups` table."""

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def creation(self, name: str) -> Creation | None:
        got = self.conn.execute(
            "SELECT state, group_id FROM created_groups WHERE name = ?", (name,)).fetchone()
        return None if got is None else Creation._make(got)

    def creation_started(self, name: str) -> None:
        self.conn.execute(
            "INSERT INTO created_groups (name, state, updated_at) VALUES (?, 'creating', ?) "
            "ON CONFLICT(name) DO UPDATE SET state = 'creating', updated_at = excluded.updated_at",
            (name, time.time()))

    def creation_finished(self, name: str, group_id: int) -> None:
        self.conn.execute(
            "UPDATE created_groups SET state = 'created', group_id = ?, updated_at = ? "
            "WHERE name = ?", (group_id, time.time(), name))

    def creation_failed(self, name: str, errcode: int | None, errmsg: str) -> None:
        self.conn.execute(
            "UPDATE created_groups SET state = 'failed', errcode = ?, errmsg = ?, updated_at = ? "
            "WHERE name = ?", (errcode, errmsg, time.time(), name))

    def settle_creations(self, resolved: dict[str, int]) -> None:
        """Creations left "creating" by a killed process whose group turned up by name."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE created_groups SET state = 'created', group_id = ?, updated_at = ? "
                "WHERE name = ? AND state = 'creating'",
                [(gid, time.time(), name) for name, gid in resolved.items()])

    def created_groups(self) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT name, group_id FROM created_groups WHERE state = 'created' ORDER BY group_id")
        return [{"name": n, "id": gid} for n, gid in cur]
