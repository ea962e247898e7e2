"""An exported file's own account of each follower, as the ledger holds it.

`batchmove export` writes each follower's group (`current_groupid`) or tags
(`current_tag_names`) beside the target column, and the loader keeps every other column's cells
in the row's `extra` (a JSON array, in header order, without the openid and target columns).
So a plan can count the rows whose target is what the file says the user has now, with one
grouped query and no call: 3,000 exported rows edited in 100 places are 100 moves, not 3,000.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, NamedTuple

from batchmove.intake.columns import normalize
from batchmove.ledger.schema import PENDING
from batchmove.ledger.store import Ledger

#: normalized header -> what the column says about each follower
CURRENT_COLUMNS: dict[str, Literal["group", "tags"]] = {
    "currentgroupid": "group", "currenttagnames": "tags"}


class CurrentColumn(NamedTuple):
    header: str  # as the file spells it
    says: Literal["group", "tags"]  # a group id, or tag names joined by ";"


def current_column(ledger: Ledger) -> tuple[CurrentColumn, int] | None:
    """The input's column of current groups or tags, and its place in `extra`; None when the
    input has none (not an export)."""
    meta = ledger.meta()
    headers = list(meta.get("headers") or [])
    used = {meta.get("openid_column"), meta.get("target_column")}
    others = [h for h in headers if h not in used]
    for place, header in enumerate(others):
        says = CURRENT_COLUMNS.get(normalize(str(header)))
        if says is not None:
            return CurrentColumn(str(header), says), place
    return None


def pending_by_current(ledger: Ledger, place: int) -> Counter[tuple[str, str]]:
    """Pending rows counted by (target as typed, the current column's cell)."""
    return Counter({(target, current if isinstance(current, str) else ""): n
                    for target, current, n in ledger.conn.execute(
                        "SELECT target, json_extract(extra, ?), count(*) FROM rows "
                        f"WHERE status = {PENDING} GROUP BY 1, 2", (f"$[{place}]",))})
