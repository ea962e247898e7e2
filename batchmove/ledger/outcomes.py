"""Rows whose move was sent but never answered: status `unknown` until they are read back.

A call that timed out, was cut off or was answered out of contract may have been applied.
Its rows are neither `moved` nor `failed`: they are recorded `unknown` (with what went wrong)
and settled by reading the users back (`engine/settle.py`, read-only) before the run ends, and
again on resume if that read failed. A partial index keeps finding them free: a run with none
looks them up in ~0.1 ms instead of scanning the table (1M rows: ~70 ms), and keeping the index
costs no measurable time on the status updates of a run (1M rows in 1,000-row commits).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import NamedTuple

from batchmove.ledger.schema import FAILED, MOVED, UNKNOWN
from batchmove.ledger.snapshots import ROWS_IN_JSON
from batchmove.ledger.storage import Part, writes
from batchmove.models import RowFailure


class UnknownRow(NamedTuple):
    """A row to read back: its user, the target id and the target as typed."""

    row: int
    openid: str
    target_id: int | None  # the group or tag id (0 for a tag-set target)
    target: str
    errmsg: str


class UnknownOutcomes(Part):
    """`ledger.outcomes`: the `unknown` rows of one ledger: recorded, listed, settled."""

    @writes
    def record(self, rows: Sequence[RowFailure]) -> None:
        """These rows' calls may have been applied: `unknown`, with what went wrong."""
        if not rows:
            return
        now = time.time()
        with self.ledger.transaction() as conn:
            conn.executemany(
                f"UPDATE rows SET status = {UNKNOWN}, errcode = ?, errmsg = ?, "
                "attempts = attempts + ?, updated_at = ? WHERE row = ?",
                [(f.errcode, f.errmsg, f.attempts, now, f.row) for f in rows])

    def rows(self) -> list[UnknownRow]:
        """Every `unknown` row, in input order (through the partial index)."""
        return list(map(UnknownRow._make, self.ledger.conn.execute(
            "SELECT row, openid, group_id, target, COALESCE(errmsg, '') FROM rows "
            f"WHERE status = {UNKNOWN} ORDER BY row")))

    @writes
    def settle(self, moved: Sequence[int], not_moved: Sequence[tuple[int, str]]) -> None:
        """Read back: `moved` rows were applied; the others failed, each with what the read
        showed appended to the reason (`--retry-failed` sends them again)."""
        now = time.time()
        with self.ledger.transaction() as conn:
            conn.execute(f"UPDATE rows SET status = {MOVED}, errcode = NULL, errmsg = NULL, "
                         "updated_at = ? " + ROWS_IN_JSON + f" AND status = {UNKNOWN}",
                         (now, json.dumps(list(moved))))
            conn.executemany(
                f"UPDATE rows SET status = {FAILED}, errmsg = COALESCE(errmsg, '') || ?, "
                f"updated_at = ? WHERE row = ? AND status = {UNKNOWN}",
                [(f"; read back: {why}", now, row) for row, why in not_moved])
