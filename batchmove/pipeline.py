"""`run_job`: the stages in order. Reading this file top to bottom tells the whole story.

    job -> loader -> ledger -> resolve groups -> (confirm) -> create groups -> snapshot
        -> planner -> runner -> report

The CLI calls this with an `Events` object that shows progress and asks for confirmation; the
pipeline itself never prints.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from batchmove.engine.backend import api_client
from batchmove.engine.planner import chunked, plan_batches, plan_tag_batches, summarize_plan
from batchmove.engine.resolver import (
    Resolution,
    create_missing,
    match_groups,
    match_tag_sets,
    refuse_missing,
)
from batchmove.engine.runner import (
    Limits,
    RetryPolicy,
    Runner,
    RunOutcome,
    StopReason,
    StopSignals,
    signal_stop,
    with_retries,
)
from batchmove.engine.targets import (
    RowOps,
    Targets,
    group_verdict,
    parse_tag_set,
    tag_operations,
    tag_verdict,
)
from batchmove.errors import (
    EXIT_OK,
    EXIT_ROW_FAILURES,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STOPPED,
    EXIT_USAGE,
    ApiError,
    ConfirmationRequired,
    DailyQuotaError,
    FatalApiError,
    InputChangedError,
    MinuteQuotaError,
    RunStateError,
    TokenError,
    TransientError,
    UsageError,
)
from batchmove.intake import loader
from batchmove.ledger.rundir import archive, fingerprint, now, run_id, write_json
from batchmove.ledger.store import LEDGER_NAME, Failure, Ledger, ResultBuffer
from batchmove.models import (
    BLACKLIST_GROUP_ID,
    MAX_USER_INFO_BATCH,
    Batch,
    Group,
    JobSpec,
    Move,
)
from batchmove.output import report
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.errcodes import ERRCODES

#: WeChat's documented group limit for an account (the planner warns when close to it)
WECHAT_MAX_GROUPS = 500

_STOP_MESSAGES = {
    StopReason.DAILY_QUOTA: "the daily API quota is used up (45009); run the same command "
                            "again after the quota resets to resume",
    StopReason.THRESHOLD: "stopped: too many rows failed (see failed.csv); fix the cause and run "
                          "the same command again to resume",
    StopReason.SIGINT: "interrupted; run the same command again to resume",
    StopReason.SIGTERM: "terminated; run the same command again to resume",
}


class Events(Protocol):
    """What the pipeline tells the person (or scheduler) watching it."""

    def info(self, message: str) -> None: ...
    def confirm(self, plan: dict[str, Any]) -> bool: ...
    def progress(self, phase: str, done: int, failed: int, total: int) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    yes: bool = False
    restart: bool = False
    retry_failed: bool = False


@dataclass
class RunResult:
    exit_code: int
    message: str
    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)


# --- the story ---------------------------------------------------------------------------------
async def run_job(spec: JobSpec, options: RunOptions, events: Events) -> RunResult:
    started = time.time()
    source = loader.open_input(spec)
    run_dir = spec.out_dir
    with Ledger(run_dir).open() as ledger, signal_stop() as stop:
        _load_or_resume(ledger, source, spec, fingerprint(spec, source.fingerprint), options,
                        events)
        if stop.reason is not None:  # interrupted while loading: nothing was sent
            return _finish(ledger, spec, run_dir, started, stop.reason, None, events)
        outcome, error = StopReason.DONE, None
        async with api_client(spec, ledger) as client:
            try:
                resolution, groups = await _resolve(client, ledger, spec)
                if _must_confirm(spec, options, ledger):
                    plan = await _plan(client, ledger, spec, resolution, groups, quotas=True)
                    if not events.confirm(plan):
                        raise ConfirmationRequired(
                            "this run needs confirmation but there is no terminal to ask; pass "
                            "--yes (or set confirm = false in the job file) to run unattended")
                if resolution.missing and stop.reason is None:
                    await create_missing(Targets(client, spec.backend), resolution, ledger,
                                         sleep=asyncio.sleep)
                ledger.settle_creations(resolution.resolved)
                ledger.assign_groups(resolution.resolved, resolution.failed)
                if spec.snapshot and stop.reason is None:
                    outcome, error = await _snapshot(client, ledger, spec, stop, events)
                if outcome is StopReason.DONE and stop.reason is None:
                    outcome, error = await _move(client, ledger, spec, stop, events)
                if spec.verify and outcome is StopReason.DONE and stop.reason is None:
                    outcome, error = await verify_moves(client, ledger, spec, stop, events)
            except DailyQuotaError as exc:
                outcome, error = StopReason.DAILY_QUOTA, exc
            except (FatalApiError, TokenError, TransientError, MinuteQuotaError) as exc:
                outcome, error = StopReason.FATAL, exc
            finally:
                ledger.add_calls(client.calls)
        return _finish(ledger, spec, run_dir, started, stop.reason or outcome, error, events)


async def plan_job(spec: JobSpec, events: Events) -> RunResult:
    """The dry run: load, validate, resolve and count, with read-only calls only."""
    source = loader.open_input(spec)
    with tempfile.TemporaryDirectory(prefix="batchmove-plan-") as scratch, \
            Ledger(Path(scratch)).open() as ledger:
        _load(ledger, source, spec, fingerprint(spec, source.fingerprint), events)
        blocked = ""
        async with api_client(spec, ledger) as client:
            try:
                resolution, groups = await _resolve(client, ledger, spec)
            except UsageError as exc:  # e.g. a blacklist target: the run would refuse
                resolution, groups, blocked = Resolution(), [], exc.message
            except (FatalApiError, TokenError, TransientError, DailyQuotaError) as exc:
                resolution, groups, blocked = Resolution(), [], exc.message
            plan = await _plan(client, ledger, spec, resolution, groups, quotas=not blocked)
    plan["can_run"] = not blocked
    if blocked:
        plan["blocked"] = blocked
    path = write_json(spec.out_dir / "plan.json", plan)
    code = EXIT_USAGE if blocked else EXIT_OK
    message = f"cannot run: {blocked}" if blocked else "the job can run"
    return RunResult(code, message, spec.out_dir, plan | {"plan_json": str(path)})


# --- stages ------------------------------------------------------------------------------------
def _load_or_resume(ledger: Ledger, source: loader.LoadedInput, spec: JobSpec,
                    digest: str, options: RunOptions, events: Events) -> None:
    meta = ledger.meta()
    if not ledger.is_empty():
        same = meta.get("fingerprint") == digest
        finished = meta.get("finished_at") is not None
        if same and not options.restart:
            if options.retry_failed:
                n = ledger.reset_failed(retryable(ledger.failed_errcodes()))
                events.info(f"retrying {n} failed rows")
            counts = ledger.counts()
            if counts.get("pending"):
                ledger.set_meta(finished_at=None)
            events.info(f"resuming {ledger.run_dir}: {_done(counts)} rows done, "
                        f"{counts.get('pending', 0)} remain")
            return
        if not same and not finished and not options.restart:
            raise InputChangedError(
                f"the input or settings changed since the unfinished run in {ledger.run_dir}; "
                "run with --restart to discard its progress and start again, or restore the "
                "original input to resume")
        archive(ledger, meta)
    _load(ledger, source, spec, digest, events)


def _load(ledger: Ledger, source: loader.LoadedInput, spec: JobSpec, digest: str,
          events: Events) -> None:
    """A new run: every input row into the ledger, in one transaction."""
    ledger.set_meta(fingerprint=digest, run_id=run_id(), finished_at=None,
                    started_at=now(), input=str(source.path), headers=source.headers,
                    openid_column=source.openid_column, target_column=source.target_column,
                    target_kind=source.target_kind, api_base=spec.api_base, job=spec.name)
    total = ledger.load_rows(source.rows(), lambda: source.amendments)
    ledger.set_meta(invalid_by_reason=dict(source.stats.invalid_by_reason),
                    blank_rows=source.stats.blank, job_path=str(spec.job_path or ""),
                    snapshot=spec.snapshot, backend=spec.backend)
    events.info(f"loaded {total} rows from {source.path}")


async def _resolve(client: WeChatClient, ledger: Ledger,
                   spec: JobSpec) -> tuple[Resolution, list[Group]]:
    """One `groups/get` (or `tags/get`): each pending target to an id, a name to create, or a
    failure."""
    kind = ledger.meta()["target_kind"]
    targets = [t for t in ledger.pending_targets() if t or kind == "set"]
    listing = Targets(client, spec.backend).get_groups
    groups = await with_retries(listing, RetryPolicy(attempts=spec.retries))
    if kind == "set":
        resolution = match_tag_sets(groups, targets)
    else:
        resolution = match_groups(groups, targets, kind)
    if not spec.create_groups:
        refuse_missing(resolution)
    if spec.backend == "groups":
        _refuse_blacklist(resolution, ledger, spec)
    else:
        ledger.set_meta(untag=_untag_ids(spec, groups))
    return resolution, groups


def _untag_ids(spec: JobSpec, tags: list[Group]) -> list[int] | None:
    """The tag ids `untag` names (None: every other tag); unknown names are skipped."""
    if spec.untag == "others":
        return None
    by_name = {t.name: t.id for t in tags}
    ids = {int(u) if u.isdigit() else by_name.get(u, -1) for u in spec.untag}
    return sorted(ids - {-1})


async def _plan(client: WeChatClient, ledger: Ledger, spec: JobSpec, resolution: Resolution,
                groups: list[Group], *, quotas: bool) -> dict[str, Any]:
    summary = resolution_summary(resolution, ledger)
    summary |= {"existing_groups": len(groups), "max_groups": WECHAT_MAX_GROUPS}
    meta = ledger.meta()
    plan = summarize_plan(ledger.counts(), summary, spec)
    plan["invalid_by_reason"] = meta.get("invalid_by_reason", {})
    if quotas:
        policy = RetryPolicy(attempts=spec.retries)
        found = {}
        for endpoint in [e for e in plan["calls"] if e != "total"]:
            quota = await with_retries(partial(client.get_quota, endpoint), policy)
            found[endpoint] = {"daily_limit": quota.daily_limit, "used": quota.used,
                               "remain": quota.remain}
        plan = summarize_plan(ledger.counts(), summary, spec, found)
        plan["invalid_by_reason"] = meta.get("invalid_by_reason", {})
    return plan


def _refuse_blacklist(resolution: Resolution, ledger: Ledger, spec: JobSpec) -> None:
    hits = [t for t, gid in resolution.resolved.items() if gid == BLACKLIST_GROUP_ID]
    if hits and not spec.allow_blacklist:
        n = sum(ledger.pending_targets()[t] for t in hits)
        raise UsageError(
            f"{n} rows target group 1 (黑名单, the blacklist) via {hits[0]!r}; nothing was sent. "
            "Pass --allow-blacklist (or allow_blacklist = true) if that is really meant")


async def _snapshot(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
                    events: Events) -> tuple[StopReason, ApiError | None]:
    """Record every user's current group (or tags); users already where the row asks are
    not moved."""
    tags = spec.backend == "tags"
    todo = ledger.pending_without_snapshot("prev_tags" if tags else "prev_group")
    if not todo:
        return StopReason.DONE, None
    found, outcome = await read_users(client, todo, spec, stop)
    followers = {row: info for row, info in found.items() if info.get("subscribe") == 1}
    if tags:
        ledger.record_tag_snapshot({row: [t for t in info.get("tagid_list", [])
                                          if isinstance(t, int)]
                                    for row, info in followers.items()})
        return outcome.reason, outcome.error
    already = ledger.record_snapshot({row: info["groupid"] for row, info in followers.items()
                                     if isinstance(info.get("groupid"), int)})
    if already:
        events.info(f"{already} users are already in their target group: not moved")
    return outcome.reason, outcome.error


async def verify_moves(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
                       events: Events) -> tuple[StopReason, ApiError | None]:
    """Read back every moved user's group (or tags); a mismatch means someone changed it."""
    moved = ledger.moved_rows()
    found, outcome = await read_users(client, [Move(r[0], r[1]) for r in moved], spec, stop)
    tags = spec.backend == "tags"
    set_kind = ledger.meta().get("target_kind") == "set"
    untag = _frozen(ledger.meta().get("untag"))
    verdicts = {}
    for row, _, gid, target in moved:
        if row not in found:
            continue  # never answered: left unverified
        if tags:
            wanted = parse_tag_set(target) if set_kind else int(gid or 0)
            verdicts[row] = tag_verdict(wanted, found[row], untag)
        else:
            verdicts[row] = group_verdict(int(gid or 0), found[row])
    mismatches = ledger.record_verified(verdicts)
    events.info(f"verified {len(verdicts)} moved users: {mismatches} no longer as moved")
    return outcome.reason, outcome.error


def _frozen(untag: list[int] | None) -> frozenset[int] | None:
    return None if untag is None else frozenset(untag)


async def read_users(client: WeChatClient, moves: list[Move], spec: JobSpec,
                     stop: StopSignals) -> tuple[dict[int, dict[str, Any]], RunOutcome]:
    """Each row's user as `user/info/batchget` describes them (100 users a call); rows whose
    call never got an answer are missing from the result."""
    found: dict[int, dict[str, Any]] = {}

    def done(batch: Batch, infos: list[dict[str, Any]], attempts: int) -> None:
        by_openid = {i.get("openid"): i for i in infos}
        for row, openid in zip(batch.rows, batch.openids, strict=True):
            found[row] = by_openid.get(openid, {})

    batches = [Batch.of(0, part) for part in chunked(moves, MAX_USER_INFO_BATCH)]
    runner: Runner[list[dict[str, Any]]] = Runner(
        send=lambda b: client.batch_get_user_info(b.openids), on_done=done,
        on_failed=lambda failures: None, concurrency=spec.concurrency,
        policy=RetryPolicy(attempts=spec.retries), bisect=False)
    outcome = await stop.watch(runner, batches)
    return found, outcome


async def _move(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
                events: Events) -> tuple[StopReason, ApiError | None]:
    """Every pending row through the worker pool; each result is committed before counted."""
    targets = Targets(client, spec.backend)
    tracker: RowOps | None = None
    if spec.backend == "tags":
        meta = ledger.meta()
        operations, tracker, already = tag_operations(
            ledger.tag_rows(), meta["target_kind"], _frozen(meta.get("untag")))
        ledger.mark_already(already)
        batches = plan_tag_batches(operations, spec.batch_size)
        total = len(tracker.remaining)
    else:
        batches = plan_batches(ledger.pending_moves(), spec.batch_size)
        total = sum(map(len, batches))
    tally = Counter[str]()
    buffer = ResultBuffer(ledger)

    def commit(force: bool = False) -> None:
        if force or buffer.due():
            moved, failed = buffer.flush()
            tally["moved"] += moved
            tally["failed"] += failed
            events.progress("moving", tally["moved"], tally["failed"], total)

    def done(batch: Batch, _: object, attempts: int) -> None:
        rows = batch.rows
        buffer.moved(rows if tracker is None else tracker.complete(rows), attempts)
        commit()

    def failed(failures: list[Failure]) -> None:
        if tracker is not None:
            first = set(tracker.fail(f.row for f in failures))
            failures = [f for f in failures if f.row in first]
        buffer.failed(failures)
        commit()

    runner: Runner[object] = Runner(
        send=lambda batch: targets.send(batch, spec.batch_size), on_done=done,
        on_failed=failed, concurrency=spec.concurrency,
        policy=RetryPolicy(attempts=spec.retries),
        limits=Limits(spec.max_failure_rate, spec.failure_sample))
    events.progress("moving", 0, 0, total)
    try:
        outcome = await stop.watch(runner, batches)
    finally:
        commit(force=True)
    return outcome.reason, outcome.error


def _finish(ledger: Ledger, spec: JobSpec, run_dir: Path, started: float, reason: StopReason,
            error: ApiError | None, events: Events) -> RunResult:
    counts = ledger.counts()
    code, message = _verdict(counts, reason, error)
    finished = time.time()
    if code in (EXIT_OK, EXIT_ROW_FAILURES):
        ledger.set_meta(finished_at=now())
    summary = {
        "job": spec.name, "run_id": ledger.meta().get("run_id"), "exit_code": code,
        "stop_reason": reason.value, "message": message,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "finished_at": datetime.fromtimestamp(finished, UTC).isoformat(timespec="seconds"),
        "duration_s": round(finished - started, 3),
        "users_moved_per_s": round(counts.get("moved", 0) / max(finished - started, 1e-9), 1),
    }
    try:
        report.write_reports(ledger, run_dir, summary, xlsx_max_rows=spec.xlsx_max_rows)
    except RunStateError as exc:  # calls were sent: not exit 2 ("nothing was sent")
        return RunResult(EXIT_STOPPED, f"{message}; but {exc.message}; every result is in "
                         f"the ledger: `batchmove report {run_dir}` writes the reports "
                         "again", run_dir, summary)
    return RunResult(code, message, run_dir, report.read_summary(run_dir))


def _verdict(counts: Counter[str], reason: StopReason,
             error: ApiError | None) -> tuple[int, str]:
    tally = ", ".join(f"{counts[s]} {s}" for s in
                      ("moved", "already", "failed", "invalid", "duplicate", "pending")
                      if counts.get(s))
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


# --- helpers -----------------------------------------------------------------------------------
def resolution_summary(resolution: Resolution, ledger: Ledger) -> dict[str, Any]:
    pending = ledger.pending_targets()
    return {
        "users_per_group": {target: {"group_id": gid, "users": pending[target]}
                            for target, gid in resolution.resolved.items()},
        "create": [{"name": n, "users": pending[n]} for n in resolution.missing],
        "unresolved": [{"target": t, "users": pending[t], "reason": why}
                       for t, (_, why) in resolution.failed.items()],
    }


def retryable(errcodes: set[int | None]) -> list[int | None]:
    """What `--retry-failed` sends again: no answer (None: also unusable groups, which are
    resolved afresh), transient and quota errcodes, and errcodes missing from the table."""
    again = (TransientError, MinuteQuotaError, DailyQuotaError)
    return [c for c in errcodes
            if c is None or c not in ERRCODES or issubclass(ERRCODES[c].kind, again)]


def _must_confirm(spec: JobSpec, options: RunOptions, ledger: Ledger) -> bool:
    """Ask before sending, unless told not to or there is nothing to send."""
    return not (options.yes or not spec.confirm or not ledger.counts().get("pending"))


def _done(counts: Counter[str]) -> int:
    return sum(n for status, n in counts.items() if status != "pending")


def rewrite_reports(run_dir: Path) -> list[str]:
    """`batchmove report`: the report files again, from the ledger alone."""
    if not (run_dir / LEDGER_NAME).exists():
        raise UsageError(f"{run_dir} has no {LEDGER_NAME}: not a batchmove run directory")
    with Ledger(run_dir).open(lock=False) as ledger:
        summary = report.read_summary(run_dir) if (run_dir / "summary.json").exists() else {}
        files = report.write_reports(ledger, run_dir, summary)
    written = (files.report_csv, files.report_xlsx, files.failed_csv, files.summary_json)
    return [p.name for p in written if p is not None]
