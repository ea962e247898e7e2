"""Group resolution: turn each target as typed (an id, or a name) into a group id.

Two steps, so a dry run can stop after the first:
1. `match_groups` (pure): targets against the account's groups from one `groups/get`. Names
   match exactly; a name held by two groups is ambiguous; unknown ids fail without a move call.
2. `create_missing`: creates the missing names, each recorded in the creation journal *before*
   the call. Creating a group is not idempotent, so after any doubt (a timeout, a dropped
   connection, a killed process) the name is looked up again before it is created again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from batchmove.errors import MinuteQuotaError, RowError, TransientError
from batchmove.ledger.rows import Creation
from batchmove.models import Target, TargetKind

TargetFailure = tuple[int | None, str]  # (errcode, reason) for every row of a target
#: how a missing name's rows end their reason (errcode None): what `--retry-failed
#: --create-groups` repairs, as the run's hint says (`output/advice.py`)
MISSING_GROUP = "does not exist; allow creating it with --create-groups"


class TargetClient(Protocol):
    async def list_targets(self) -> list[Target]: ...
    async def create_target(self, name: str) -> Target: ...


class CreationLog(Protocol):
    """Where creations are recorded before they are attempted (`ledger.creations`)."""

    def get(self, name: str) -> Creation | None: ...
    def started(self, name: str) -> None: ...
    def finished(self, name: str, group_id: int) -> None: ...
    def failed(self, name: str, errcode: int | None, errmsg: str) -> None: ...


@dataclass
class Resolution:
    resolved: dict[str, int] = field(default_factory=dict)
    failed: dict[str, TargetFailure] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # names that do not exist (yet)


def match_groups(groups: list[Target], targets: Iterable[str], kind: TargetKind) -> Resolution:
    """Resolve what can be resolved from the account's current groups. No I/O."""
    out = Resolution()
    if kind == "id":
        ids = {g.id for g in groups}
        for target in targets:
            gid = int(target)
            if gid in ids:
                out.resolved[target] = gid
            else:
                out.failed[target] = (40050, f"group id {gid} does not exist on this account")
        return out
    by_name: dict[str, list[int]] = {}
    for g in groups:
        by_name.setdefault(g.name, []).append(g.id)
    for target in targets:
        ids_for = by_name.get(target, [])
        if len(ids_for) == 1:
            out.resolved[target] = ids_for[0]
        elif ids_for:
            held = ", ".join(str(i) for i in sorted(ids_for))
            out.failed[target] = (None, f"ambiguous group name {target!r}: held by groups {held}")
        else:
            out.missing.append(target)
    return out


def match_tag_sets(tags: list[Target], targets: Iterable[str]) -> Resolution:
    """Tag-set targets ("101;102", what rollback writes): every id must exist. Resolved sets
    map to 0: the operations are worked out per user from the snapshot."""
    out = Resolution()
    ids = {t.id for t in tags}
    for target in targets:
        unknown = sorted(int(p) for p in target.split(";") if p and int(p) not in ids)
        if unknown:
            out.failed[target] = (45159, f"tag ids {unknown} do not exist on this account")
        else:
            out.resolved[target] = 0
    return out


def refuse_missing(resolution: Resolution) -> None:
    """Without permission to create groups, a missing name fails its rows."""
    for name in resolution.missing:
        resolution.failed[name] = (
            None, f"group {name!r} {MISSING_GROUP}")
    resolution.missing = []


async def create_missing(
    client: TargetClient,
    resolution: Resolution,
    journal: CreationLog,
    *,
    attempts: int = 6,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> list[Target]:
    """Create each missing name exactly once; returns the groups created by this call."""
    created: list[Target] = []
    for name in resolution.missing:
        try:
            group = await _create_once(client, name, journal, attempts, sleep)
        except RowError as exc:  # 45018 group limit, 45017 too long, 40051 invalid name
            journal.failed(name, exc.errcode, exc.errmsg)
            resolution.failed[name] = (exc.errcode, f"cannot create group {name!r}: {exc.errmsg}")
            continue
        resolution.resolved[name] = group.id
        created.append(group)
    resolution.missing = []
    return created


async def _create_once(
    client: TargetClient,
    name: str,
    journal: CreationLog,
    attempts: int,
    sleep: Callable[[float], Awaitable[None]] | None,
) -> Target:
    in_doubt = journal.get(name) is not None  # a previous process may have created it
    for attempt in range(1, attempts + 1):
        try:
            if in_doubt:
                existing = await _lookup(client, name)
                if existing is not None:
                    journal.finished(name, existing.id)
                    return existing
            journal.started(name)
            in_doubt = True  # from here on, the group may exist even if we never hear back
            group = await client.create_target(name)
        except MinuteQuotaError:  # refused, nothing created: wait for the next minute
            if attempt == attempts:
                raise
            if sleep is not None:
                await sleep(60.0 - time.time() % 60.0 + 0.05)
            continue
        except TransientError:
            if attempt == attempts:
                raise
            if sleep is not None:
                await sleep(min(8.0, 0.25 * 2 ** attempt))
            continue
        journal.finished(name, group.id)
        return group
    raise AssertionError("unreachable")  # pragma: no cover


async def _lookup(client: TargetClient, name: str) -> Target | None:
    same = [g for g in await client.list_targets() if g.name == name]
    return min(same, key=lambda g: g.id) if same else None
