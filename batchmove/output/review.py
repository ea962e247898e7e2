"""After a run: undo it (`rollback`) or check it still holds (`verify`).

Both read the run's ledger. Rollback needs no API at all: the snapshot taken before moving
holds every user's previous group, so undoing is just another input, `rollback.csv`
(openid -> previous group id), that `batchmove run` moves like any other. Verify judges what
WeChat says about each moved user now; reading them is the engine's job, handed in as `read`,
so this module never calls the API itself.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from batchmove.engine.targets import group_verdict, parse_tag_set, tag_verdict
from batchmove.errors import UsageError
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import BLACKLIST_GROUP_ID, Move, RowStatus
from batchmove.output.report import neutral
from batchmove.results import RollbackFile
from batchmove.wechat.answers import UserInfo

ROLLBACK_NAME = "rollback.csv"
ROLLBACK_HEADER = ("openid", "to_groupid", "source_row", "status_in_run")
#: the tags backend restores each user's whole tag set ("101;102"; "" = no tags)
TAG_ROLLBACK_HEADER = ("openid", "tagid_list", "source_row", "status_in_run")

#: reads users as `user/info/batchget` describes them: {row: info}; unanswered rows missing
UserReader = Callable[[list[Move]], Awaitable[dict[int, UserInfo]]]


def open_run(run_dir: Path, *, lock: bool = True) -> Ledger:
    """The ledger of an existing run directory (UsageError if there is none), checked as a
    resume checks it (LedgerDamagedError, exit 2, if it is not intact)."""
    if not (run_dir / LEDGER_NAME).exists():
        raise UsageError(f"{run_dir} has no {LEDGER_NAME}: not a batchmove run directory")
    ledger = Ledger(run_dir).open(lock=lock)
    try:
        ledger.check()
    except BaseException:
        ledger.close()
        raise
    return ledger


def write_rollback(run_dir: Path, out: Path | None = None) -> RollbackFile:
    """Write the spreadsheet that undoes the run."""
    with open_run(run_dir) as ledger:
        tags = ledger.meta().get("backend") == "tags"
        rows = ledger.review.rollback_rows(tags=tags)
        if not rows:
            if not ledger.counts().get(RowStatus.MOVED):
                raise UsageError(f"{run_dir}: the run moved nobody; there is nothing to undo")
            raise UsageError(f"{run_dir}: the run took no snapshot (snapshot = false), so the "
                             "users' previous groups are unknown; it cannot be rolled back")
    path = out or run_dir / ROLLBACK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TAG_ROLLBACK_HEADER if tags else ROLLBACK_HEADER)
        writer.writerows(neutral((r.openid, r.previous, r.row, r.status)) for r in rows)
    blacklisted = not tags and any(r.previous == BLACKLIST_GROUP_ID for r in rows)
    return RollbackFile(path, run_dir, len(rows), blacklisted, "tags" if tags else "groups")


async def verify_moves(ledger: Ledger, read: UserReader) -> tuple[int, int]:
    """Read back every moved user; store each verdict. Returns (checked, mismatches)."""
    moved = ledger.review.moved_rows()
    found = await read([Move(r.row, r.openid) for r in moved])
    meta = ledger.meta()
    tags = meta.get("backend") == "tags"
    set_kind = meta.get("target_kind") == "set"
    untag = meta.get("untag")
    untag_ids = None if untag is None else frozenset(untag)
    verdicts = {}
    for r in moved:
        if r.row not in found:
            continue  # never answered: left unverified
        if tags:
            wanted = parse_tag_set(r.target) if set_kind else int(r.group_id or 0)
            verdicts[r.row] = tag_verdict(wanted, found[r.row], untag_ids)
        else:
            verdicts[r.row] = group_verdict(int(r.group_id or 0), found[r.row])
    return len(verdicts), ledger.review.record_verified(verdicts)
