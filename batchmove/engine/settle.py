"""The last stage that calls WeChat: rows of unknown outcome settled by reading them back.

A move call that was sent and never answered (a timeout, a cut-off body, a hang after the
headers, an answer out of contract) may have been applied; its rows are `unknown`
(`ledger/outcomes.py`). Here every such user is read back with `user/info/batchget` (100 a
call, read-only; it gives the tags too): a user now where the row asked is `moved`, any other
is `failed` with what the read showed. So the report never says "failed" for a user WeChat
moved. Rows whose read fails stay `unknown`: the run ends with exit 3, and the same command
reads them back again.
"""

from __future__ import annotations

from collections.abc import Callable

from batchmove.engine.moves import read_users
from batchmove.engine.runner import RunOutcome
from batchmove.engine.signals import StopSignals
from batchmove.engine.targets import group_verdict, parse_tag_set, tag_verdict
from batchmove.ledger.outcomes import UnknownRow
from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec, Move
from batchmove.results import Events, StopReason
from batchmove.wechat.answers import UserInfo
from batchmove.wechat.client import WeChatClient


async def settle_unknown(client: WeChatClient, ledger: Ledger, spec: JobSpec,
                         stop: StopSignals, events: Events) -> RunOutcome:
    """Read back every `unknown` row's user; each becomes `moved` or `failed`."""
    outcomes = ledger.outcomes
    rows = outcomes.rows()
    if not rows:
        return RunOutcome(StopReason.DONE)
    found, _, outcome = await read_users(client, [Move(r.row, r.openid) for r in rows],
                                         spec, stop)
    verdict = _judge(ledger)
    moved: list[int] = []
    not_moved: list[tuple[int, str]] = []
    for row in rows:
        if row.row in found:
            why = verdict(row, found[row.row])
            if why == "ok":
                moved.append(row.row)
            else:
                not_moved.append((row.row, why.removeprefix("mismatch: ")))
    outcomes.settle(moved, not_moved)
    left = len(rows) - len(moved) - len(not_moved)
    events.info(f"read back {len(rows)} users whose moves were never answered: "
                f"{len(moved)} moved, {len(not_moved)} not moved"
                + (f", {left} could not be read (the same command reads them again)"
                   if left else ""))
    return outcome


_Verdict = Callable[[UnknownRow, UserInfo], str]


def _judge(ledger: Ledger) -> _Verdict:
    """`ok` when the user is where the row asked, else what the read showed."""
    meta = ledger.meta()
    if meta.get("backend") != "tags":
        return lambda row, info: group_verdict(int(row.target_id or 0), info)
    untag = meta.get("untag")
    untag_ids = None if untag is None else frozenset(untag)
    sets = meta.get("target_kind") == "set"

    def tags(row: UnknownRow, info: UserInfo) -> str:
        wanted = parse_tag_set(row.target) if sets else int(row.target_id or 0)
        return tag_verdict(wanted, info, untag_ids)

    return tags

