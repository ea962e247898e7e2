"""The story of a run, a plan and a verification. Read top to bottom, it is the whole flow:

    job -> intake (load + validate) -> ledger -> resolve targets -> (confirm) -> create groups
        -> snapshot -> planner -> runner (move) -> (verify) -> report

Every stage lives in its package (intake/, ledger/, engine/, output/); this module only puts
them in order and turns how they ended into an exit code. It never prints: whoever watches
gets `Events`. The public API (`batchmove.api`) and through it the CLI are its only callers.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchmove import segments
from batchmove.engine.account import fetch_quotas, resolve_targets, target_summary
from batchmove.engine.backend import api_client, gate_of
from batchmove.engine.flow import send_stages
from batchmove.engine.moves import read_users
from batchmove.engine.planner import summarize_plan
from batchmove.engine.resolver import Resolution, create_missing
from batchmove.engine.runner import RunOutcome, StopReason, StopSignals, signal_stop
from batchmove.engine.sharing import (
    account_status,
    claimed,
    describe_overlap,
    expected_rates,
    overlaps_of,
    seed_rates,
    sending_endpoints,
)
from batchmove.engine.targets import Targets
from batchmove.errors import (
    EXIT_OK,
    EXIT_ROW_FAILURES,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STOPPED,
    ApiError,
    ConfirmationRequired,
    DailyQuotaError,
    FatalApiError,
    MinuteQuotaError,
    RunStateError,
    TokenError,
    TransientError,
    UsageError,
)
from batchmove.intake import jobfile, loader
from batchmove.ledger.rundir import load, load_or_resume, now, write_json
from batchmove.ledger.store import Ledger
from batchmove.models import Group, JobSpec, Move
from batchmove.output import report
from batchmove.output.review import open_run, verify_moves
from batchmove.results import (
    STATUSES,
    Events,
    Plan,
    RunResult,
    Summary,
    VerifyResult,
    counts_of,
)
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.errcodes import ERRCODES

_STOP_MESSAGES = {
    StopReason.DAILY_QUOTA: "the daily API quota is used up (45009); run the same command "
                            "again after the quota resets to resume",
    StopReason.THRESHOLD: "stopped: too many rows failed (see failed.csv); fix the cause and run "
                          "the same command again to resume",
    StopReason.SIGINT: "interrupted; run the same command again to resume",
    StopReason.SIGTERM: "terminated; run the same command again to resume",
}
#: what stops a run but leaves it resumable, rather than failing rows
_STOPPING = (FatalApiError, TokenError, TransientError, MinuteQuotaError)


@dataclass(frozen=True)
class RunOptions:
    """How to run beyond the job's keys. `confirm` sees the plan and says yes or no; None
    (every library call) means calling `run` was the confirmation."""

    restart: bool = False
    retry_failed: bool = False
    confirm: Callable[[Plan], bool] | None = None
    handle_signals: bool = False


# --- the story of a run -----------------------------------------------------------------------
async def run_job(spec: JobSpec, options: RunOptions, events: Events) -> RunResult:
    started = time.time()
    spec, stopped = await segments.freeze(spec, events, restart=options.restart,
                                          handle_signals=options.handle_signals)
    if stopped is not None:  # a segment job whose listing stopped early: nothing moved
        return stopped
    source = loader.open_input(spec)
    with Ledger(spec.out_dir).open() as ledger, signal_stop(options.handle_signals) as stop:
        load_or_resume(ledger, source, spec, restart=options.restart,
                       reset_failed=_retry_failed if options.retry_failed else None,
                       info=events.info)
        outcome, rates = RunOutcome(StopReason.DONE), dict[str, float]()
        if stop.reason is None:  # not interrupted while loading: nothing was sent yet
            with claimed(spec, ledger):  # who this run moves, on the account's registry
                outcome, rates = await _send(ledger, spec, options, events, stop)
        return _finish(ledger, spec, started, stop.reason or outcome.reason, outcome.error,
                       rates)


async def _send(ledger: Ledger, spec: JobSpec, options: RunOptions, events: Events,
                stop: StopSignals) -> tuple[RunOutcome, dict[str, float]]:
    """Resolve, confirm, create, snapshot, move, verify: everything that calls WeChat. Also
    the rate each endpoint ran at last (rate = "auto")."""
    outcome, rates = RunOutcome(StopReason.DONE), dict[str, float]()
    async with api_client(spec, ledger) as client:
        try:
            resolution, groups = await resolve_targets(client, ledger, spec)
            if options.confirm is not None and ledger.counts().get("pending"):
                plan = await _plan(client, ledger, spec, resolution, groups)
                if not options.confirm(plan):
                    raise ConfirmationRequired("not confirmed: nothing was sent")
            if resolution.missing and stop.reason is None:
                await create_missing(Targets(client, spec.backend), resolution, ledger,
                                     sleep=asyncio.sleep)
            ledger.settle_creations(resolution.resolved)
            ledger.assign_groups(resolution.resolved, resolution.failed)
            await seed_rates(client, spec, sending_endpoints(spec))
            for stage in send_stages(spec):
                if outcome.reason is StopReason.DONE and stop.reason is None:
                    outcome = await stage(client, ledger, spec, stop, events)
            if spec.verify and outcome.reason is StopReason.DONE and stop.reason is None:
                outcome = await _verify(client, ledger, spec, stop, events)
        except DailyQuotaError as exc:
            outcome = RunOutcome(StopReason.DAILY_QUOTA, exc)
        except _STOPPING as exc:
            outcome = RunOutcome(StopReason.FATAL, exc)
        finally:
            ledger.add_calls(client.calls)
            rates = _rates_found(client, events)
    return outcome, rates


def _rates_found(client: WeChatClient, events: Events) -> dict[str, float]:
    """Under rate = "auto": the rate each endpoint ran at last, said once."""
    gate = gate_of(client)
    if gate is None or not gate.auto:
        return {}
    rates = gate.rates()
    if rates:
        events.info("rate found: " + ", ".join(f"{e} {r:g}/s" for e, r in rates.items()))
    return rates


def _finish(ledger: Ledger, spec: JobSpec, started: float, reason: StopReason,
            error: ApiError | None, rates: dict[str, float]) -> RunResult:
    """The verdict, the reports, and the result every caller gets."""
    counts = ledger.counts()
    code, message = _verdict(counts, reason, error)
    finished = time.time()
    if code in (EXIT_OK, EXIT_ROW_FAILURES):
        ledger.set_meta(finished_at=now())
    summary = Summary(
        job=spec.name, run_id=ledger.meta().get("run_id"), exit_code=code,
        stop_reason=reason.value, message=message, started_at=_iso(started),
        finished_at=_iso(finished), duration_s=round(finished - started, 3),
        users_moved_per_s=round(counts.get("moved", 0) / max(finished - started, 1e-9), 1),
        rate=spec.rate, rate_found=rates)
    run_dir = spec.out_dir
    try:
        report.write_reports(ledger, run_dir, dict(summary), xlsx_max_rows=spec.xlsx_max_rows)
        summary = Summary(**report.read_summary(run_dir))  # type: ignore[typeddict-item]
    except RunStateError as exc:  # calls were sent: not exit 2 ("nothing was sent")
        code = EXIT_STOPPED
        message = (f"{message}; but {exc.message}; every result is in the ledger: "
                   f"`batchmove report {run_dir}` writes the reports again")
    return RunResult(code, message, run_dir, counts_of(counts), reason.value,
                     ledger.calls(), summary)


def _verdict(counts: Counter[str], reason: StopReason,
             error: ApiError | None) -> tuple[int, str]:
    tally = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
    if reason is StopReason.FATAL and error is not None:
        return EXIT_STOPPED, f"stopped: {error.message} ({tally})"
    if reason in _STOP_MESSAGES:
        code = {StopReason.SIGINT: EXIT_SIGINT, StopReason.SIGTERM: EXIT_SIGTERM}.get(
            reason, EXIT_STOPPED)
        return code, f"{_STOP_MESSAGES[reason]} ({tally})"
    if counts.get("pending"):
        return EXIT_STOPPED, f"stopped with rows still pending; run again to resume ({tally})"
    if counts.get("failed") or counts.get("invalid"):
        return EXIT_ROW_FAILURES, f"finished with row failures ({tally}); see failed.csv"
    return EXIT_OK, f"finished ({tally})"


# --- the story of a plan ----------------------------------------------------------------------
async def plan_job(spec: JobSpec, events: Events) -> Plan:
    """The dry run: load, validate, resolve and count, with read-only calls only; writes
    `plan.json` into the run directory. A segment job's selection is listed (read-only)."""
    async with segments.planned(spec, events) as (spec, listed):
        plan = await _plan_input(spec, events)
    if listed is not None and spec.select is not None:
        plan = segments.with_listing(plan, listed, spec.select)
    write_json(spec.out_dir / "plan.json", plan.as_dict())
    return plan


async def _plan_input(spec: JobSpec, events: Events) -> Plan:
    source = loader.open_input(spec)
    with tempfile.TemporaryDirectory(prefix="batchmove-plan-") as scratch, \
            Ledger(Path(scratch)).open() as ledger:
        load(ledger, source, spec, "", events.info)
        blocked = None
        overlaps = overlaps_of(spec, ledger, Path(scratch))
        async with api_client(spec, ledger) as client:
            try:
                resolution, groups = await resolve_targets(client, ledger, spec)
            except (UsageError, FatalApiError, TokenError, TransientError,
                    DailyQuotaError) as exc:  # e.g. a blacklist target: the run would refuse
                resolution, groups, blocked = Resolution(), [], exc.message
            plan = await _plan(client, ledger, spec, resolution, groups, quotas=not blocked)
    if overlaps and not spec.allow_overlap and blocked is None:
        blocked = describe_overlap(overlaps) + " (--allow-overlap runs it all the same)"
    path = spec.out_dir / "plan.json"
    return replace(plan, can_run=blocked is None, blocked=blocked, plan_json=path,
                   overlaps=overlaps)


async def _plan(client: WeChatClient, ledger: Ledger, spec: JobSpec, resolution: Resolution,
                groups: list[Group], *, quotas: bool = True) -> Plan:
    counts, targets = ledger.counts(), target_summary(resolution, ledger, groups)
    invalid = ledger.meta().get("invalid_by_reason", {})
    tags = groups if spec.backend == "tags" else None  # their counts price a member listing
    others = max(0, account_status(spec).sharing - (gate_of(client) is not None))
    plan = summarize_plan(counts, targets, spec, invalid_by_reason=invalid, tags=tags,
                          rates=expected_rates(spec), sharing=others)
    if not quotas:
        return plan
    found = await fetch_quotas(client, [e for e in plan.calls if e != "total"], spec)
    return summarize_plan(counts, targets, spec, found, invalid, tags,
                          expected_rates(spec, found), others)


# --- the story of a verification --------------------------------------------------------------
async def verify_run(run_dir: Path, api_base: str | None, events: Events,
                     handle_signals: bool = False) -> VerifyResult:
    """Read back every moved user of a finished run; exit 1 when any moved since."""
    with open_run(run_dir) as ledger, signal_stop(handle_signals) as stop:
        spec = _spec_of(ledger.meta(), api_base)
        async with api_client(spec, ledger) as client:
            outcome = await _verify(client, ledger, spec, stop, events)
        checked, mismatches = ledger.counts()["moved"], ledger.mismatches()
        if outcome.reason is not StopReason.DONE or stop.reason is not None:
            why = outcome.error.message if outcome.error else (stop.reason or outcome.reason).value
            code, message = EXIT_STOPPED, f"verification stopped: {why}"
        elif mismatches:
            code, message = EXIT_ROW_FAILURES, (
                f"{mismatches} moved users are no longer in their target group "
                "(see the `verified` column of report.csv)")
        else:
            code, message = EXIT_OK, "every moved user is still in their target group"
        summary = report.read_summary(run_dir) if (run_dir / report.SUMMARY_JSON).exists() \
            else {}
        summary["verify"] = {"checked": checked, "mismatches": mismatches,
                             "exit_code": code, "message": message}
        report.write_reports(ledger, run_dir, summary)
    return VerifyResult(code, message, run_dir, checked, mismatches)


async def _verify(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
                  events: Events) -> RunOutcome:
    outcomes: list[RunOutcome] = []

    async def read(moves: list[Move]) -> dict[int, dict[str, Any]]:
        found, outcome = await read_users(client, moves, spec, stop)
        outcomes.append(outcome)
        return found

    checked, mismatches = await verify_moves(ledger, read)
    events.info(f"verified {checked} moved users: {mismatches} no longer as moved")
    return outcomes[0] if outcomes else RunOutcome(StopReason.DONE)


def _spec_of(meta: dict[str, Any], api_base: str | None) -> JobSpec:
    """The run's job again (for credentials and limits), pointed at `api_base` if given."""
    job_path = meta.get("job_path") or ""
    base = api_base or meta.get("api_base")
    if base == "sandbox":
        raise UsageError("this run used the embedded sandbox, which ended with it; verify "
                         "during the run with `run --verify`, or pass --api-base URL")
    overrides = {"api_base": base, "backend": meta.get("backend")}
    if job_path and Path(job_path).exists():
        return jobfile.spec_for(Path(job_path), **overrides)
    return JobSpec(input=Path(meta.get("input", "")), name=str(meta.get("job", "run"))
                   ).with_overrides(**overrides)


# --- helpers ----------------------------------------------------------------------------------
def _retry_failed(ledger: Ledger) -> int:
    """`--retry-failed`: the failed rows worth another try, pending again."""
    return ledger.reset_failed(retryable(ledger.failed_errcodes()))


def retryable(errcodes: set[int | None]) -> list[int | None]:
    """No answer (None: also unusable groups, which are resolved afresh), transient and quota
    errcodes, and errcodes missing from the table."""
    again = (TransientError, MinuteQuotaError, DailyQuotaError)
    return [c for c in errcodes
            if c is None or c not in ERRCODES or issubclass(ERRCODES[c].kind, again)]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
