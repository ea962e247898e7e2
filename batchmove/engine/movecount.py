"""How many users a run will really move, when a plan can know it.

The run's snapshot reads every user first and does not move those already in their target, so
from the input alone a plan can only say "up to N". Two ways to know more:

- **the input says so**: an exported file carries each follower's group (`current_groupid`)
  or tags (`current_tag_names`) as they were when it was exported; a row whose target is that
  is counted `already` (one grouped query, no call);
- **`plan --count-moves`** reads every pending user now with `user/info/batchget` (100 a
  call, read-only, the calls shown in the plan).

Either way the moves are counted per target (the tags backend: per tag, tagging and untagging
apart), so the plan's move calls are the calls the run makes if nothing changes meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from batchmove.engine.moves import read_users
from batchmove.engine.planner import MoveCount
from batchmove.engine.resolver import Resolution
from batchmove.engine.signals import StopSignals
from batchmove.engine.snapshotsource import BATCHGET, batchget_calls
from batchmove.engine.targets import parse_tag_set, tag_changes
from batchmove.ledger.exported import current_column, pending_by_current
from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec, Move, Target
from batchmove.wechat.answers import Follower, NotFollower, UserInfo
from batchmove.wechat.client import WeChatClient

#: a user's group id, or their tag ids; None when unknown (then the user is counted as moving)
Current = int | frozenset[int] | None
#: a tag that does not exist yet (to be created): counted under its name
_NEW_TAG = -1


def count_from_input(ledger: Ledger, spec: JobSpec, resolution: Resolution,
                     targets: list[Target]) -> MoveCount | None:
    """From the input's current group or tags column; None when it has none."""
    found = current_column(ledger)
    if found is None or not spec.snapshot:
        return None
    column, place = found
    if (column.says == "tags") != (spec.backend == "tags"):
        return None  # a groups export run on the tags backend: it says nothing about tags
    by_name = {t.name: t.id for t in targets}
    pairs = ((target, _parse(cell, column.says, by_name), n)
             for (target, cell), n in pending_by_current(ledger, place).items())
    return tally(pairs, spec, resolution, ledger.meta(), "input")


async def count_by_reading(client: WeChatClient, ledger: Ledger, spec: JobSpec,
                           resolution: Resolution, stop: StopSignals) -> MoveCount:
    """Every pending user read now (read-only); a user the read did not answer counts as
    moving, one who does not follow the account as neither (the run fails that row without a
    move). A stop (daily quota, fatal error) is raised as the run's would be."""
    ledger.assign_groups(resolution.resolved, {})  # a plan's scratch ledger: ids for reading
    rows = ledger.tag_rows()
    infos, _, outcome = await read_users(client, [Move(r.row, r.openid) for r in rows], spec,
                                         stop)
    if outcome.error is not None:
        raise outcome.error
    tags = spec.backend == "tags"
    pairs = Counter((r.target, _of_info(infos.get(r.row), tags)) for r in rows
                    if not isinstance(infos.get(r.row), NotFollower))
    pending = ledger.pending_targets()
    new = [(t, None, pending[t]) for t in resolution.missing]  # to be created: all move
    found = tally([*((t, c, n) for (t, c), n in pairs.items()), *new], spec, resolution,
                  ledger.meta(), "count")
    return MoveCount("count", found.already, found.moving, found.tag_ops,
                     {BATCHGET: batchget_calls(len(rows))})


def tally(pairs: Iterable[tuple[str, Current, int]], spec: JobSpec, resolution: Resolution,
          meta: dict[str, Any], source: Literal["input", "count"]) -> MoveCount:
    """(target as typed, the user's current group or tags, users) -> who moves and how."""
    already, moving, ops = 0, Counter[str](), Counter[tuple[str, str]]()
    usable = set(resolution.resolved) | set(resolution.missing)
    untag = meta.get("untag")
    untag_ids = None if untag is None else frozenset(untag)
    for target, current, n in pairs:
        if target not in usable:
            continue  # its rows fail before any call
        if spec.backend != "tags":
            if current is not None and current == resolution.resolved.get(target):
                already += n
            else:
                moving[target] += n
            continue
        changes = list(_tag_ops(target, current, resolution, meta, untag_ids))
        if not changes:
            already += n
            continue
        moving[target] += n
        for op in changes:
            ops[op] += n
    return MoveCount(source, already, moving, ops)


def _tag_ops(target: str, current: Current, resolution: Resolution, meta: dict[str, Any],
             untag: frozenset[int] | None) -> Iterator[tuple[str, str]]:
    wanted: int | frozenset[int] = (parse_tag_set(target) if meta.get("target_kind") == "set"
                                    else resolution.resolved.get(target, _NEW_TAG))
    have = current if isinstance(current, frozenset) else None
    add, remove = tag_changes(wanted, have, untag)
    yield from (("untag", str(t)) for t in sorted(remove))
    yield from (("tag", target if t == _NEW_TAG else str(t)) for t in sorted(add))


def _parse(cell: str, says: str, tag_ids: dict[str, int]) -> Current:
    """A current-column cell as a group id or a tag set; None when it cannot be read."""
    text = cell.strip()
    if says == "group":
        return int(text) if text.isdigit() else None
    names = [n for n in text.split(";") if n]
    ids = {tag_ids.get(n) for n in names}
    return None if None in ids else frozenset(i for i in ids if i is not None)


def _of_info(info: UserInfo | None, tags: bool) -> Current:
    if not isinstance(info, Follower):
        return None  # never answered: counted as moving
    return frozenset(info.tagid_list) if tags else info.groupid
