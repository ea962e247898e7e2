"""What the account has: each target resolved against its groups (or tags), and its quotas.

Read-only calls only (`groups/get` or `tags/get`, `openapi/quota/get`), so `plan` can use all of
it; creating the missing groups is the resolver's `create_missing`, after confirmation.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

from batchmove.engine.early import Early
from batchmove.engine.planner import WECHAT_MAX_GROUPS
from batchmove.engine.resolver import (
    Resolution,
    match_groups,
    match_tag_sets,
    refuse_missing,
)
from batchmove.engine.runner import RetryPolicy, with_retries
from batchmove.errors import UsageError
from batchmove.ledger.store import Ledger
from batchmove.models import BLACKLIST_GROUP_ID, JobSpec, Target
from batchmove.results import PlanGroups
from batchmove.wechat.client import WeChatClient


async def resolve_targets(client: WeChatClient, ledger: Ledger, spec: JobSpec,
                          early: Early | None = None, pending: Counter[str] | None = None
                          ) -> tuple[Resolution, list[Target]]:
    """One `groups/get` (or `tags/get`; `early`: asked while the input loaded): each pending
    target to an id, a name to create, or a failure. A blacklist target refuses the whole job
    (UsageError) unless allowed. `pending`: the ledger's pending rows per target, if counted."""
    kind = ledger.meta()["target_kind"]
    pending = ledger.pending_targets() if pending is None else pending
    targets = [t for t in pending if t or kind == "set"]
    groups = await (early or Early(client, spec)).listing()
    if kind == "set":
        resolution = match_tag_sets(groups, targets)
    else:
        resolution = match_groups(groups, targets, kind)
    if not spec.create_groups:
        refuse_missing(resolution)
    if spec.backend == "groups":
        _refuse_blacklist(resolution, ledger, spec)
    else:
        ledger.set_meta(untag=_untag_ids(spec, groups),  # counts price the snapshot's source
                        tag_counts=[[t.id, t.count] for t in groups])
    return resolution, groups


def _untag_ids(spec: JobSpec, tags: list[Target]) -> list[int] | None:
    """The tag ids `untag` names (None: every other tag); unknown names are skipped."""
    if spec.untag == "others":
        return None
    by_name = {t.name: t.id for t in tags}
    ids = {int(u) if u.isdigit() else by_name.get(u, -1) for u in spec.untag}
    return sorted(ids - {-1})


def _refuse_blacklist(resolution: Resolution, ledger: Ledger, spec: JobSpec) -> None:
    hits = [t for t, gid in resolution.resolved.items() if gid == BLACKLIST_GROUP_ID]
    if hits and not spec.allow_blacklist:
        n = sum(ledger.pending_targets()[t] for t in hits)
        raise UsageError(
            f"{n} rows target group 1 (黑名单, the blacklist) via {hits[0]!r}; nothing was sent. "
            "Pass --allow-blacklist (or allow_blacklist = true) if that is really meant")


def target_summary(resolution: Resolution, ledger: Ledger, groups: list[Target]) -> PlanGroups:
    """Users per resolved target, names to create and unusable targets, for the plan."""
    pending = ledger.pending_targets()
    return PlanGroups(
        users_per_group={target: {"group_id": gid, "users": pending[target]}
                         for target, gid in resolution.resolved.items()},
        create=[{"name": n, "users": pending[n]} for n in resolution.missing],
        unresolved=[{"target": t, "users": pending[t], "reason": why}
                    for t, (_, why) in resolution.failed.items()],
        existing_groups=len(groups), max_groups=WECHAT_MAX_GROUPS)


async def fetch_quotas(client: WeChatClient, endpoints: list[str],
                       spec: JobSpec) -> dict[str, dict[str, Any]]:
    """Today's quota of each endpoint (`openapi/quota/get`, one call each)."""
    policy = RetryPolicy(attempts=spec.retries)
    found: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        quota = await with_retries(partial(client.get_quota, endpoint), policy)
        found[endpoint] = {"daily_limit": quota.daily_limit, "used": quota.used,
                           "remain": quota.remain}
        if quota.call_count and quota.refresh_second:  # the frequency limit, when reported
            found[endpoint] |= {"call_count": quota.call_count,
                                "refresh_second": quota.refresh_second}
    return found

