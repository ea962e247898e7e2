"""What the reports, `rollback` and `verify` read of a run, and the verdicts `verify` writes. A
part of `Ledger` (`ledger.review`): the same connection, table `rows`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from batchmove.ledger.cells import ReportCells
from batchmove.ledger.rows import MovedRow, RollbackRow
from batchmove.ledger.schema import FAILED, INVALID, MOVED, PENDING, UNKNOWN
from batchmove.ledger.storage import Part, writes


class Review(Part):
    """`ledger.review`: a run's rows as the files and checks after it see them."""

    def report_rows(self, cells: ReportCells, *, failed_only: bool = False
                    ) -> Iterator[tuple[Any, ...]]:
        """The report's (or failed.csv's) cells of every row, in input order, computed by
        SQLite (a Python function per row cost 3 s of a 1M-row report)."""
        conn = self.ledger.conn
        cells.register(conn)
        columns = cells.failed if failed_only else cells.report
        where = f" WHERE status IN ({FAILED}, {INVALID})" if failed_only else ""
        return iter(conn.execute(f"SELECT {', '.join(columns)} FROM rows{where} ORDER BY row"))

    def rollback_rows(self, *, tags: bool = False) -> list[RollbackRow]:
        """Every user the run may have moved, with where the snapshot saw them before: the
        group id, or (tags) the tag set as `101;102`.

        Pending, failed and unknown rows are included: their call may have been applied (just
        before a kill, or never answered). Restoring a user already in their old group is
        harmless (and the rollback run's own snapshot skips it)."""
        column = "prev_tags" if tags else "prev_group"
        cur = self.ledger.conn.execute(
            f"SELECT row, openid, {column}, status FROM rows WHERE {column} IS NOT NULL "
            f"AND status IN ({MOVED}, {PENDING}, {FAILED}, {UNKNOWN}) ORDER BY row")
        if not tags:
            return list(map(RollbackRow._make, cur))
        return [RollbackRow(row, openid, ";".join(map(str, json.loads(prev))), status)
                for row, openid, prev, status in cur]

    def moved_rows(self) -> list[MovedRow]:
        """Every moved row: its user, the group or tag id and the target as typed."""
        return list(map(MovedRow._make, self.ledger.conn.execute(
            f"SELECT row, openid, group_id, target FROM rows WHERE status = {MOVED} "
            "ORDER BY row")))

    @writes
    def record_verified(self, verdicts: dict[int, str]) -> int:
        """Store `verify`'s verdict per row; returns the number of mismatches."""
        with self.ledger.transaction() as conn:
            conn.executemany("UPDATE rows SET verified = ? WHERE row = ?",
                             [(verdict, row) for row, verdict in verdicts.items()])
        return self.mismatches()

    def verified_any(self) -> bool:
        return self.ledger.conn.execute(
            "SELECT 1 FROM rows WHERE verified IS NOT NULL LIMIT 1").fetchone() is not None

    def mismatches(self) -> int:
        return int(self.ledger.conn.execute(
            "SELECT count(*) FROM rows WHERE verified IS NOT NULL AND verified != 'ok'"
        ).fetchone()[0])

    def failures_by_answer(self) -> Counter[tuple[int | None, str]]:
        """Failed rows counted by (errcode, errmsg): what notifications list as reasons."""
        return Counter({(code, msg): n for code, msg, n in self.ledger.conn.execute(
            "SELECT errcode, COALESCE(errmsg, ''), count(*) FROM rows "
            f"WHERE status = {FAILED} GROUP BY 1, 2")})
