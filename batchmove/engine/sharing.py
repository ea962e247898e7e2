"""What a run shares with the other runs of its account: who it moves, and its rate's start.

- `claimed`: a run registers (where its ledger is, and how many users) in the registry before
  it moves anyone and removes the registration when it ends, however it ends (a SIGKILLed
  run's registration lapses with its pid). Another live run on the account moving any of the
  same users refuses the run (UsageError, exit 2, nothing sent) unless `allow_overlap`.
- `seed_rates`: under `rate = "auto"`, one `openapi/quota/get` per endpoint about to be used
  (at once): its `rate_limit` (when WeChat reports one) is where the endpoint's rate starts
  (the groups backend's snapshot reads, which feed the moves, start at twice the pace the
  moves take their users), and its `remain`, less what the other runs registered on the account
  still plan to send, is today's quota view: nothing left for the move endpoint stops the run
  before it starts (exit 3, resumable).
- `account_status`: what the registry knows of the account (runs, sharers, rates, spent).

An embedded sandbox (`api_base = "sandbox"`) is an account of its own for one run: nothing is
claimed for it and nothing overlaps it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchmove.engine.backend import gate_of
from batchmove.engine.early import SNAPSHOT_ENDPOINT, Early
from batchmove.engine.planner import backend_endpoints, move_calls, snapshot_calls
from batchmove.errors import DailyQuotaError, UsageError
from batchmove.intake import loader
from batchmove.ledger.rundir import load
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import MAX_USER_INFO_BATCH, SANDBOX, JobSpec
from batchmove.registry import Claims, InLedger, Registry, account_of
from batchmove.registry.aimd import start_rate
from batchmove.registry.budget import history, sharing, spent_today
from batchmove.results import AccountStatus, Overlap
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.quota import Quota


@contextmanager
def claimed(spec: JobSpec, ledger: Ledger, pending: Counter[str] | None = None
            ) -> Iterator[list[Overlap]]:
    """The run's users registered on its account while the block runs; refused on overlap.
    `pending`: the ledger's pending rows per target, if the caller counted them already."""
    if spec.api_base == SANDBOX:
        yield []
        return
    registry = Registry()
    claims = Claims(registry, account_of(spec))
    run_dir = spec.out_dir
    try:
        targets = ledger.pending_targets() if pending is None else pending
        overlaps = claims.register(run_dir, spec.name, _in_ledger(ledger, targets),
                                   planned=_planned(spec, targets))
        if overlaps and not spec.allow_overlap:
            raise UsageError(describe_overlap(overlaps) + "; nothing was sent. Wait for it to "
                             "end, or pass --allow-overlap (allow_overlap = true) if both "
                             "runs are meant")
        yield overlaps
    finally:
        claims.release(run_dir)
        registry.close()


def overlaps_of(spec: JobSpec, ledger: Ledger, scratch: Path) -> list[Overlap]:
    """The live runs on the account that would move some of this plan's users (the plan is
    registered under `scratch` for the count, then removed)."""
    if spec.api_base == SANDBOX:
        return []
    registry = Registry()
    claims = Claims(registry, account_of(spec))
    try:
        users = _in_ledger(ledger, ledger.pending_targets())
        return [o for o in claims.register(scratch, spec.name, users)
                if o.run_dir != str(Path(spec.out_dir).absolute())]
    finally:
        claims.release(scratch)
        registry.close()


def claim_job(spec: JobSpec, state: str, rows_dir: Path | None = None) -> list[Overlap]:
    """Register a run that waits for approval ("pending", "approved": the console), its users
    read from its input (or from the row ledger a plan kept in `rows_dir`); the live runs it
    overlaps. `release_job` removes it."""
    if spec.api_base == SANDBOX:
        return []
    registry = Registry()
    with contextlib.ExitStack() as stack:
        if rows_dir is not None and (rows_dir / LEDGER_NAME).exists():
            ledger = stack.enter_context(Ledger(rows_dir).open())
        else:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="batchmove-claim-"))
            ledger = stack.enter_context(Ledger(Path(scratch)).open())
            load(ledger, loader.open_input(spec), spec, "", lambda _: None)
        try:
            return Claims(registry, account_of(spec)).register(
                spec.out_dir, spec.name, ledger.pending_openids(), state=state,
                planned=_planned(spec, ledger.pending_targets()))
        finally:
            registry.close()


def release_job(spec: JobSpec) -> None:
    """Remove the registration of the job's run directory (a discarded or finished run)."""
    registry = Registry()
    try:
        Claims(registry, account_of(spec)).release(spec.out_dir)
    finally:
        registry.close()


def planned_by_others(spec: JobSpec) -> dict[str, int]:
    """Calls per endpoint the other runs registered on the job's account will still make
    (planned less sent so far): the plan's quota view subtracts them from today's remain."""
    if spec.api_base == SANDBOX:
        return {}
    registry = Registry()
    try:
        return Claims(registry, account_of(spec)).to_spend(spec.out_dir)
    finally:
        registry.close()


def describe_overlap(overlaps: list[Overlap]) -> str:
    first = overlaps[0]
    more = f" (and {len(overlaps) - 1} more runs)" if len(overlaps) > 1 else ""
    return (f"{first.users} of these users are also moved by the {first.state} run "
            f"{first.job!r} in {first.run_dir}{more}")


def _in_ledger(ledger: Ledger, targets: Counter[str]) -> InLedger:
    return InLedger(ledger.path.parent, sum(targets.values()))


def _planned(spec: JobSpec, targets: Counter[str]) -> dict[str, int]:
    """The calls a run will make, as its registration tells the other runs: its moves, and
    the groups backend's snapshot reads (the tags backend's untagging is known only once its
    snapshot is read)."""
    planned = {backend_endpoints(spec)["move"]: move_calls(targets, spec.batch_size)}
    if spec.snapshot and spec.backend == "groups":
        planned[SNAPSHOT_ENDPOINT] = snapshot_calls(sum(targets.values()))
    return planned


async def seed_rates(client: WeChatClient, spec: JobSpec, early: Early | None = None) -> None:
    """`rate = "auto"`: each endpoint's start from quota/get (see the module docstring);
    `early`: where the quotas were asked (while the input loaded), else they are asked now."""
    gate = gate_of(client)
    if gate is None or not spec.auto_rate:
        return
    budget = gate.budget
    alone = budget.fixed_rate is None and sharing(budget.registry, budget.account) <= 1
    found = await (early or Early(client, spec)).quotas()
    move = backend_endpoints(spec)["move"]
    _check_move_quota(found.get(move), move, Claims(budget.registry, budget.account)
                      .to_spend(spec.out_dir).get(move, 0))
    starts = {e: start_rate(q.call_count if q else None, q.refresh_second if q else None,
                            alone=alone)
              for e, q in found.items()}
    feed = 2 * starts[move][0] * spec.batch_size / MAX_USER_INFO_BATCH if move in starts else 0.0
    for endpoint, (rate, ceiling) in starts.items():
        if endpoint == SNAPSHOT_ENDPOINT and ceiling is None:  # reads feed the moves:
            rate = max(rate, feed)  # twice what the moves' start takes: a backlog builds
        quota = found[endpoint]
        shared = start_rate(quota.call_count, quota.refresh_second, alone=False)[1] \
            if quota else None
        gate.seed(endpoint, min(rate, spec.max_rate), ceiling,
                  quota.refresh_second if quota else None, alone=alone, shared=shared)


def _check_move_quota(quota: Quota | None, endpoint: str, others: int) -> None:
    """Stop before the start when today's move calls are used up, or all spoken for by the
    other runs registered on the account."""
    if quota is None or not quota.daily_limit:
        return
    if not quota.remain:
        raise DailyQuotaError(45009, "today's quota of this endpoint is used up "
                                     "(openapi/quota/get)", endpoint)
    if quota.remain <= others:
        raise DailyQuotaError(None, f"the {quota.remain:,} calls left today are all planned "
                                    f"by other runs on this account ({others:,} calls)",
                              endpoint)  # no errcode: the quota view said so, not WeChat


def account_status(spec: JobSpec) -> AccountStatus:
    """The registry's view of the job's account."""
    if spec.api_base == SANDBOX:
        return AccountStatus([], 0, {}, {})
    registry = Registry()
    account = account_of(spec)
    try:
        return AccountStatus(Claims(registry, account).runs(), sharing(registry, account),
                             history(registry, account), spent_today(registry, account))
    finally:
        registry.close()


def expected_rates(spec: JobSpec, quotas: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> dict[str, float]:
    """Calls/s per endpoint the plan's ETA assumes: the account's history on this machine,
    else quota/get's rate_limit, else the safe start."""
    if spec.api_base == SANDBOX:
        return {}
    registry = Registry()
    try:
        found = history(registry, account_of(spec))
    finally:
        registry.close()
    for endpoint, quota in (quotas or {}).items():
        count, seconds = quota.get("call_count"), quota.get("refresh_second")
        if endpoint not in found and count and seconds:
            found[endpoint] = start_rate(int(count), float(seconds))[0]
    return found
