"""Pure functions that turn pending rows into API calls. No I/O, so they are property-tested.

The number of move calls for a job is fixed here: per target group, ceil(users / batch_size).
A batch refused because of one bad openid is bisected, so k bad openids among n cost about
2·k·log2(n) extra calls instead of n single calls.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any, Literal, TypeVar

from batchmove.engine.snapshotsource import choose_source
from batchmove.models import (
    BLACKLIST_GROUP_ID,
    MAX_BATCH,
    MAX_USER_INFO_BATCH,
    Batch,
    JobSpec,
    Move,
    Target,
)
from batchmove.registry.aimd import SAFE_START
from batchmove.results import Plan, PlanGroups, QuotaFit

T = TypeVar("T")


@dataclass(frozen=True)
class MoveCount:
    """Who will really move (`engine/movecount.py`): users per target as typed, and (tags)
    users per (operation, tag); `source` says how it is known: "input" (an exported file's
    current group or tags) or "count" (read now, `calls` being those reads)."""

    source: Literal["input", "count"]
    already: int
    moving: Counter[str]
    tag_ops: Counter[tuple[str, str]] = field(default_factory=Counter)  # ("tag", "101"): n
    calls: dict[str, int] = field(default_factory=dict)
#: WeChat's documented group limit for an account (the planner warns when close to it)
WECHAT_MAX_GROUPS = 500
TAG_ENDPOINT = "tags/members/batchtagging"
UNTAG_ENDPOINT = "tags/members/batchuntagging"


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    if size < 1:
        raise ValueError("size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def plan_batches(pending: Iterable[tuple[int, int, str]],
                 batch_size: int = MAX_BATCH) -> list[Batch]:
    """(target_id, row, openid) triples in input order -> batches per target group, in input
    order, `batch_size` per call; the groups take turns, in order of first appearance."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}, got {batch_size}")
    by_target: dict[int, tuple[list[int], list[str]]] = {}
    for target_id, row, openid in pending:
        if target_id not in by_target:
            by_target[target_id] = ([], [])
        rows, openids = by_target[target_id]
        rows.append(row)
        openids.append(openid)
    per_group = [[Batch(target_id, tuple(rows[i:i + batch_size]),
                        tuple(openids[i:i + batch_size]))
                  for i in range(0, len(rows), batch_size)]
                 for target_id, (rows, openids) in by_target.items()]
    # round-robin over the groups: the batches in flight then come from one stretch of the
    # input, so each ledger commit touches a few pages, not pages all over the table
    return [batch for turn in zip_longest(*per_group) for batch in turn if batch is not None]


class Batcher:
    """Users collected per target group, a batch of `size` handed out as soon as one fills:
    `plan_batches` for a stream (a 10M-row run holds at most size - 1 users per group)."""

    def __init__(self, size: int = MAX_BATCH) -> None:
        if not 1 <= size <= MAX_BATCH:
            raise ValueError(f"batch size must be 1..{MAX_BATCH}, got {size}")
        self.size = size
        self._waiting: dict[int, tuple[list[int], list[str]]] = {}

    def add(self, target_id: int, row: int, openid: str) -> Batch | None:
        rows, openids = self._waiting.setdefault(target_id, ([], []))
        rows.append(row)
        openids.append(openid)
        if len(rows) < self.size:
            return None
        del self._waiting[target_id]
        return Batch(target_id, tuple(rows), tuple(openids))

    def extend(self, target_id: int, rows: list[int], openids: list[str]) -> list[Batch]:
        """`add` for many users of one group at once: the batches they fill, cut by slicing
        (the overlapped snapshot releases ~1,000 users a commit: 100,000 `add` calls, about a
        tenth of the run's Python function calls)."""
        waiting = self._waiting.setdefault(target_id, ([], []))
        waiting[0].extend(rows)
        waiting[1].extend(openids)
        size = self.size
        full = len(waiting[0]) - len(waiting[0]) % size
        if not full:
            return []
        batches = [Batch(target_id, tuple(waiting[0][i:i + size]), tuple(waiting[1][i:i + size]))
                   for i in range(0, full, size)]
        del waiting[0][:full], waiting[1][:full]
        if not waiting[0]:
            del self._waiting[target_id]
        return batches

    def rest(self) -> list[Batch]:
        """The batches not full yet, in order of their group's first user; empties the batcher."""
        rest = [Batch(gid, tuple(rows), tuple(openids))
                for gid, (rows, openids) in self._waiting.items()]
        self._waiting.clear()
        return rest


def stream_batches(pending: Iterable[tuple[int, int, str]],
                   batch_size: int = MAX_BATCH) -> Iterator[Batch]:
    """Like `plan_batches` (the same calls, the same batches per group), lazily: each batch as
    soon as its group has `batch_size` users, the partial ones last."""
    batcher = Batcher(batch_size)
    for target_id, row, openid in pending:
        batch = batcher.add(target_id, row, openid)
        if batch is not None:
            yield batch
    yield from batcher.rest()


def plan_tag_batches(ops: Iterable[tuple[str, int, Move]],
                     batch_size: int = MAX_BATCH) -> list[Batch]:
    """(op, tag id, move) triples -> batches per (op, tag); untagging first, so a user near
    WeChat's 20-tag limit loses the old tags before gaining the new one."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}, got {batch_size}")
    by_key: dict[tuple[str, int], list[Move]] = {}
    for op, tag_id, move in ops:
        by_key.setdefault((op, tag_id), []).append(move)
    order = sorted(by_key, key=lambda key: (key[0] != "untag", key[1]))
    return [Batch.of(tag_id, part, op)  # type: ignore[arg-type]
            for op, tag_id in order for part in chunked(by_key[(op, tag_id)], batch_size)]


def split(batch: Batch) -> tuple[Batch, Batch]:
    """The two halves of a refused batch, each sent on its own to isolate the bad openids."""
    if len(batch) < 2:
        raise ValueError("a batch of one cannot be split")
    mid = len(batch) // 2
    return (Batch(batch.target_id, batch.rows[:mid], batch.openids[:mid], batch.op),
            Batch(batch.target_id, batch.rows[mid:], batch.openids[mid:], batch.op))


def move_calls(users_per_group: Iterable[int] | Mapping[Any, int],
               batch_size: int = MAX_BATCH) -> int:
    """Move calls a job needs with no faults: the sum over groups of ceil(users / batch)."""
    counts = users_per_group.values() if isinstance(users_per_group, Mapping) else users_per_group
    return sum(math.ceil(n / batch_size) for n in counts if n > 0)


def snapshot_calls(users: int) -> int:
    """`user/info/batchget` calls to read `users` users' current groups."""
    return math.ceil(users / MAX_USER_INFO_BATCH)


def move_endpoint(batch_size: int) -> str:
    """A job with batch size 1 uses the single-user endpoint; any other uses batchupdate."""
    return "groups/members/update" if batch_size == 1 else "groups/members/batchupdate"


def backend_endpoints(spec: JobSpec) -> dict[str, str]:
    """The endpoints a job lists, creates and moves with, on its backend."""
    if spec.backend == "tags":
        return {"list": "tags/get", "create": "tags/create", "move": TAG_ENDPOINT,
                "untag": UNTAG_ENDPOINT}
    return {"list": "groups/get", "create": "groups/create",
            "move": move_endpoint(spec.batch_size)}


def summarize_plan(
    rows: Mapping[str, int],
    groups: PlanGroups,
    spec: JobSpec,
    quotas: Mapping[str, Mapping[str, int]] | None = None,
    invalid_by_reason: Mapping[str, int] | None = None,
    tags: Sequence[Target] | None = None,
    rates: Mapping[str, float] | None = None,
    sharing: int = 0,
    count: MoveCount | None = None,
) -> Plan:
    """What a run would do: rows, groups, API calls per endpoint, duration, quota fit, warnings.

    `groups` holds `users_per_group` ({target: {"group_id", "users"}}), `create` ([{"name",
    "users"}]) and `unresolved` ([{"target", "users", "reason"}]); `quotas` maps an endpoint to
    WeChat's {"daily_limit", "used", "remain"} when it was asked; `tags` (the tags backend's
    `tags/get`, with counts) lets the snapshot read tag member lists when that is cheaper;
    `count` says who will really move. Without it, and with the snapshot on, the users and
    move calls are an upper bound (`moves_exact` False): the snapshot skips users already in
    their target.
    """
    movable = [g["users"] for g in groups.get("users_per_group", {}).values()]
    movable += [g["users"] for g in groups.get("create", [])]
    users = sum(movable)
    endpoints = backend_endpoints(spec)
    calls: dict[str, int] = {endpoints["list"]: 1}
    if groups.get("create"):
        calls[endpoints["create"]] = len(groups["create"])
    snapshot = (choose_source(users, tags, spec.snapshot_source)
                if spec.snapshot and users else None)
    if snapshot is not None and snapshot.calls:  # no tag has members: nothing to list
        calls[snapshot.source] = snapshot.calls
    moving = users if count is None else sum(count.moving.values())
    calls |= _move_calls(movable, spec, endpoints, count)
    total = sum(calls.values())
    return Plan(
        rows=dict(rows), users_to_move=moving, groups=groups, calls={**calls, "total": total},
        estimated_duration_s=_eta(calls, spec, rates or {}, sharing),
        warnings=_warnings(groups, spec, count), invalid_by_reason=dict(invalid_by_reason or {}),
        quota=_quota_fit(calls, quotas) if quotas is not None else {},
        snapshot_source=snapshot.source if snapshot else None,
        snapshot_alternative={snapshot.other: snapshot.other_calls}
        if snapshot and tags is not None else {},
        rate=spec.rate, rates=_rates(calls, spec, rates or {}), sharing=sharing,
        already=count.already if count else 0, already_source=count.source if count else None,
        moves_exact=(count is not None or not spec.snapshot  # nobody can be in a new group
                     or not any(g["users"] for g in groups.get("users_per_group", {}).values())),
        count_calls=dict(count.calls) if count else {})


def _move_calls(movable: list[int], spec: JobSpec, endpoints: dict[str, str],
                count: MoveCount | None) -> dict[str, int]:
    """The move (tag, untag) calls: per target, or per tag when the count knows the users'
    tags."""
    if count is None:
        return {endpoints["move"]: move_calls(movable, spec.batch_size)} if sum(movable) else {}
    if spec.backend != "tags":
        n = move_calls(count.moving.values(), spec.batch_size)
        return {endpoints["move"]: n} if n else {}
    found = {endpoint: move_calls([n for (op, _), n in count.tag_ops.items() if op == kind],
                                  spec.batch_size)
             for endpoint, kind in ((TAG_ENDPOINT, "tag"), (UNTAG_ENDPOINT, "untag"))}
    return {endpoint: n for endpoint, n in found.items() if n}


def _rates(calls: Mapping[str, int], spec: JobSpec, rates: Mapping[str, float]
           ) -> dict[str, float]:
    if not spec.auto_rate:
        return {}
    return {e: round(min(rates.get(e, SAFE_START), spec.max_rate), 1) for e in calls}


def _eta(calls: Mapping[str, int], spec: JobSpec, rates: Mapping[str, float],
         sharing: int) -> float | None:
    """Seconds the calls take: at the fixed rate, or at each endpoint's expected rate shared
    with the account's other runs (endpoints in turn: a bound from above)."""
    if not spec.auto_rate:
        rate = float(spec.rate)
        return round(sum(calls.values()) / rate, 1) if rate > 0 else None
    per = _rates(calls, spec, rates)
    return round(sum(n * (1 + sharing) / per[e] for e, n in calls.items()), 1)


def _quota_fit(calls: Mapping[str, int],
               quotas: Mapping[str, Mapping[str, int]]) -> dict[str, QuotaFit]:
    fit: dict[str, QuotaFit] = {}
    for endpoint, needed in calls.items():
        quota = quotas.get(endpoint)
        if quota is None:
            continue
        remain, limit = int(quota.get("remain", 0)), int(quota.get("daily_limit", 0))
        others = int(quota.get("others", 0))  # the other registered runs' calls come first
        free = max(0, remain - others)
        if needed <= free:
            days = 1
        elif limit > 0:
            days = 1 + math.ceil((needed - free) / limit)
        else:
            days = 0  # never fits: WeChat gives this account no quota for it
        fit[endpoint] = {"needed": needed, "remain": remain, "others": others,
                         "daily_limit": limit, "fits_today": needed <= free, "days": days}
    return fit


def _warnings(groups: PlanGroups, spec: JobSpec, count: MoveCount | None) -> list[str]:
    warnings = []
    if spec.backend == "tags" and (spec.untag or spec.target == "set") and count is None:
        warnings.append("untagging adds calls that depend on the users' current tags "
                        "(read by the snapshot); they are not counted above")
    targets = groups.get("users_per_group", {})
    if any(g["group_id"] == BLACKLIST_GROUP_ID for g in targets.values()):
        warnings.append("some rows target group 1 (黑名单, the blacklist)")
    created = len(groups.get("create", []))
    if created >= 10:
        warnings.append(f"{created} new groups would be created")
    if groups.get("unresolved"):
        n = sum(u["users"] for u in groups["unresolved"])
        warnings.append(f"{n} rows have a target group that cannot be used")
    existing = groups.get("existing_groups")
    if existing is not None and existing + created > 0.9 * groups.get("max_groups",
                                                                      WECHAT_MAX_GROUPS):
        warnings.append(f"the account would have {existing + created} groups, close to the limit")
    return warnings
