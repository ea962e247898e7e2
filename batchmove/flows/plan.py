"""The story of a plan: the dry run. Load and validate, resolve targets, count calls and check
today's quota, with read-only calls only; writes `plan.json` into the run directory. A segment
job's selection is listed (read-only) into a scratch directory, never frozen.

`plan_of` is also the plan a run shows before it asks for confirmation (`flows/run.py`).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from pathlib import Path

from batchmove.engine.account import fetch_quotas, resolve_targets, target_summary
from batchmove.engine.backend import api_client, gate_of
from batchmove.engine.movecount import count_by_reading, count_from_input
from batchmove.engine.planner import MoveCount, summarize_plan
from batchmove.engine.resolver import Resolution
from batchmove.engine.sharing import (
    account_status,
    describe_overlap,
    expected_rates,
    overlaps_of,
    planned_by_others,
)
from batchmove.engine.signals import signal_stop
from batchmove.errors import (
    ApiError,
    DailyQuotaError,
    FatalApiError,
    TokenError,
    TransientError,
    UsageError,
)
from batchmove.flows import segments
from batchmove.intake import loader
from batchmove.ledger.rundir import fresh_dir, load, write_json
from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec, Target
from batchmove.results import Events, Plan
from batchmove.wechat.client import WeChatClient


async def plan_job(spec: JobSpec, events: Events, rows_dir: Path | None = None, *,
                   count_moves: bool = False) -> Plan:
    """select -> load -> resolve -> count and price: the plan, also written as `plan.json`.
    The rows are loaded into a scratch ledger, kept in `rows_dir` when given (a watcher pages
    them by row number without parsing the input again), else deleted. `count_moves` reads
    every user now (read-only) to count those already in their target."""
    async with segments.planned(spec, events) as (spec, listed):
        if listed is not None and not listed.followers:
            plan = replace(segments.empty_plan(spec), plan_json=spec.out_dir / "plan.json")
        else:
            plan = await _plan_input(spec, events, rows_dir, count_moves)
    if listed is not None and spec.select is not None:
        plan = segments.with_listing(plan, listed, spec.select)
    write_json(spec.out_dir / "plan.json", plan.as_dict())
    return plan


async def _plan_input(spec: JobSpec, events: Events, rows_dir: Path | None,
                      count_moves: bool) -> Plan:
    source = loader.open_input(spec)
    with contextlib.ExitStack() as stack:
        if rows_dir is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="batchmove-plan-")))
        else:
            scratch = fresh_dir(rows_dir)
        ledger = stack.enter_context(Ledger(scratch).open())
        load(ledger, source, spec, "", events.info)
        blocked = None
        overlaps = overlaps_of(spec, ledger, Path(scratch))
        async with api_client(spec, ledger) as client:
            try:
                resolution, groups = await resolve_targets(client, ledger, spec)
            except (UsageError, FatalApiError, TokenError, TransientError,
                    DailyQuotaError) as exc:  # e.g. a blacklist target: the run would refuse
                resolution, groups, blocked = Resolution(), [], exc.message
            plan = await plan_of(client, ledger, spec, resolution, groups, quotas=not blocked,
                                 count_moves=count_moves and not blocked)
    if overlaps and not spec.allow_overlap and blocked is None:
        blocked = describe_overlap(overlaps) + " (--allow-overlap runs it all the same)"
    path = spec.out_dir / "plan.json"
    return replace(plan, can_run=blocked is None, blocked=blocked, plan_json=path,
                   rows_dir=rows_dir, overlaps=overlaps)


async def plan_of(client: WeChatClient, ledger: Ledger, spec: JobSpec, resolution: Resolution,
                  groups: list[Target], *, quotas: bool = True,
                  count_moves: bool = False) -> Plan:
    """The plan of the rows a ledger holds, priced against today's quota unless `quotas` is
    false (a plan that cannot run). Who will really move comes from the input when it is an
    export, or (`count_moves`, on a plan's own scratch ledger) from reading every user now."""
    counts, targets = ledger.counts(), target_summary(resolution, ledger, groups)
    invalid = ledger.meta().get("invalid_by_reason", {})
    tags = groups if spec.backend == "tags" else None  # their counts price a member listing
    others = max(0, account_status(spec).sharing - (gate_of(client) is not None))
    count, warning = count_from_input(ledger, spec, resolution, groups), None
    if count_moves and count is None:
        count, warning = await _count(client, ledger, spec, resolution)
    plan = summarize_plan(counts, targets, spec, invalid_by_reason=invalid, tags=tags,
                          rates=expected_rates(spec), sharing=others, count=count)
    if quotas:
        found = await fetch_quotas(client, [e for e in plan.calls if e != "total"], spec)
        for endpoint, calls in planned_by_others(spec).items():  # today's calls they take
            if endpoint in found:
                found[endpoint]["others"] = calls
        plan = summarize_plan(counts, targets, spec, found, invalid, tags,
                              expected_rates(spec, found), others, count)
    return replace(plan, warnings=[*plan.warnings, warning]) if warning else plan


async def _count(client: WeChatClient, ledger: Ledger, spec: JobSpec,
                 resolution: Resolution) -> tuple[MoveCount | None, str | None]:
    """`--count-moves`: the read, or why it could not be made (the plan says "up to")."""
    if not spec.snapshot:
        return None, "--count-moves: without the snapshot every user is sent; nothing to count"
    try:
        with signal_stop(False) as stop:
            return await count_by_reading(client, ledger, spec, resolution, stop), None
    except ApiError as exc:
        return None, f"--count-moves: the users could not be read ({exc.message})"
