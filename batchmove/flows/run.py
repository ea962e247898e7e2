"""The story of a run. Read top to bottom, it is the whole flow:

    notify (start ping) -> select (a segment job's followers, frozen into input.csv)
        -> load (intake: validate every row into the ledger, or resume it)
        -> claim (the run's users, on the account's registry)
        -> resolve targets -> plan (shown for confirmation) -> create missing groups
        -> snapshot and move (the worker pool) -> settle (moves never answered, read back)
        -> verify (read back) -> report -> notify (robot, webhook, end ping)

Every stage lives in its package (intake/, ledger/, engine/, output/); this module only puts
them in order and turns how they ended into an exit code. It never prints: whoever watches
gets `Events`. Beside it in `flows/`: the plan (`plan.py`), the verification (`verify.py`),
segment jobs' selection (`segments.py`), the export (`export.py`), the undo (`rollback.py`) and
a platform's accounts (`agency.py`). The public API
(`batchmove.api`) and through it the CLI and the console are its only callers.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from batchmove.engine.account import resolve_targets
from batchmove.engine.backend import api_client, client_for, gate_of
from batchmove.engine.early import Early
from batchmove.engine.flow import send_stages
from batchmove.engine.resolver import create_missing
from batchmove.engine.runner import RunOutcome
from batchmove.engine.settle import settle_unknown
from batchmove.engine.sharing import claimed, seed_rates
from batchmove.engine.signals import StopSignals, signal_stop
from batchmove.engine.targets import TargetApi
from batchmove.errors import (
    EXIT_OK,
    EXIT_ROW_FAILURES,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STOPPED,
    ApiError,
    BatchmoveError,
    ConfirmationRequired,
    DailyQuotaError,
    FatalApiError,
    MinuteQuotaError,
    RunStateError,
    StorageError,
    TokenError,
    TransientError,
)
from batchmove.flows import segments
from batchmove.flows.plan import plan_of
from batchmove.flows.verify import read_back
from batchmove.intake import loader
from batchmove.ledger.rundir import load_or_resume, now, read_summary
from batchmove.ledger.store import Ledger
from batchmove.models import SANDBOX, STATUSES, JobSpec, RowStatus, TargetKind
from batchmove.output import report
from batchmove.output.advice import RetryAdvice, retry_advice, retryable
from batchmove.output.notify import Notifier, notify_refused, notify_result
from batchmove.output.review import open_run
from batchmove.results import (
    Events,
    Plan,
    ReportFiles,
    RunResult,
    StopReason,
    Summary,
    counts_of,
)
from batchmove.wechat.client import WeChatClient

_STOP_MESSAGES = {
    StopReason.DAILY_QUOTA: "the daily API quota is used up (45009); run the same command "
                            "again after the quota resets to resume",
    StopReason.THRESHOLD: "stopped: too many rows failed (see failed.csv); fix the cause and run "
                          "the same command again to resume",
    StopReason.SIGINT: "interrupted; run the same command again to resume",
    StopReason.SIGTERM: "terminated; run the same command again to resume",
}
#: stops after which the moves never answered are still read back before the run ends: the
#: account still answers (a daily quota is per endpoint; the read has its own)
_SETTLE_AFTER = (StopReason.DONE, StopReason.DAILY_QUOTA, StopReason.THRESHOLD)
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
    """notify -> select -> load -> plan -> move -> report -> notify."""
    notifier = Notifier(spec.notify) if spec.notify.configured else None
    if notifier is not None:
        await notifier.start()
    try:
        result = await _select_and_move(spec, options, events)
    except BatchmoveError as exc:  # refused before it could write a summary: say so anyway
        if notifier is not None:
            await notify_refused(notifier, spec, exc)
        raise
    return result if notifier is None else await notify_result(notifier, result)


async def _select_and_move(spec: JobSpec, options: RunOptions, events: Events) -> RunResult:
    started = time.time(), time.monotonic()  # the timestamp, and the clock of the duration
    spec, stopped = await segments.freeze(spec, events, restart=options.restart,
                                          handle_signals=options.handle_signals)
    if stopped is not None:  # a segment job whose listing stopped early: nothing moved
        return stopped
    source = loader.open_input(spec)
    with Ledger(spec.out_dir).open(reserve=True) as ledger, \
            signal_stop(options.handle_signals) as stop:
        ledger.on_trouble(lambda: stop.request(StopReason.STORAGE))  # a full disk, say
        load = partial(load_or_resume, ledger, source, spec, restart=options.restart,
                       reset_failed=_retry_failed if options.retry_failed else None)
        outcome, rates = RunOutcome(StopReason.DONE), dict[str, float]()
        async with _loaded(load, ledger, spec, events, source.target_kind) as (client, early):
            if stop.reason is None:  # not interrupted while loading: nothing was sent yet
                pending = ledger.pending_targets()  # counted once: registered, then resolved
                with claimed(spec, ledger, pending):  # who this run moves, on the registry
                    outcome, rates = await _send(client, early, pending, ledger, spec,
                                                 options, events, stop)
        return _finish(ledger, spec, started, stop.reason or outcome.reason, outcome.error,
                       rates)


@asynccontextmanager
async def _loaded(load: Callable[..., None], ledger: Ledger, spec: JobSpec, events: Events,
                  kind: TargetKind) -> AsyncIterator[tuple[WeChatClient, Early]]:
    """The input loaded into the ledger (`load`), and the client. Against WeChat, when the
    ledger is new (the whole input to load), the client opens first and asks what needs no
    ledger (`Early`: token, listing, quotas) while the load runs in a thread (the ledger is
    touched by nothing else meanwhile); rows loaded once the listing has come are written
    with their group ids (`kind`: how the input names its targets). A ledger to resume is
    checked before any call (a damaged one is refused having sent nothing); an embedded
    sandbox takes its followers from the loaded input, so it starts after the load."""
    if spec.api_base == SANDBOX or not _fresh(ledger):
        load(info=events.info)
        async with api_client(spec, ledger) as client:
            yield client, Early(client, spec)
        return
    loop = asyncio.get_running_loop()
    async with client_for(spec) as client:
        early = Early(client, spec).start()
        try:
            await asyncio.to_thread(  # messages reach `events` on the loop's thread
                load, info=lambda message: loop.call_soon_threadsafe(events.info, message),
                group_ids=early.group_ids(kind))
            yield client, early
        finally:
            await early.close()


def _fresh(ledger: Ledger) -> bool:
    """Whether the ledger holds no run yet (one it cannot even say is not fresh)."""
    try:
        return ledger.is_empty()
    except (sqlite3.Error, BatchmoveError):  # damaged: `load_or_resume` says so
        return False


async def _send(client: WeChatClient, early: Early, pending: Counter[str], ledger: Ledger,
                spec: JobSpec, options: RunOptions, events: Events, stop: StopSignals
                ) -> tuple[RunOutcome, dict[str, float]]:
    """Resolve, confirm, create, snapshot, move, verify: everything that calls WeChat. Also
    the rate each endpoint ran at last (rate = "auto")."""
    outcome, rates = RunOutcome(StopReason.DONE), dict[str, float]()
    try:
        resolution, groups = await resolve_targets(client, ledger, spec, early, pending)
        if options.confirm is not None and ledger.counts().get(RowStatus.PENDING):
            plan = await plan_of(client, ledger, spec, resolution, groups)
            if not options.confirm(plan):
                raise ConfirmationRequired("not confirmed: nothing was sent")
        ledger.set_meta(nothing_sent=False)  # from here on a change may reach WeChat
        if resolution.missing and stop.reason is None:
            await create_missing(TargetApi(client, spec.backend), resolution, ledger.creations,
                                 sleep=asyncio.sleep)
        ledger.creations.settle(resolution.resolved)
        ledger.assign_groups(resolution.resolved, resolution.failed)
        await seed_rates(client, spec, early)
        for stage in send_stages(spec):
            if outcome.reason is StopReason.DONE and stop.reason is None:
                outcome = await stage(client, ledger, spec, stop, events)
        if outcome.reason in _SETTLE_AFTER and stop.reason is None:  # may have moved:
            settled = await settle_unknown(client, ledger, spec, stop, events)  # read back
            outcome = settled if outcome.reason is StopReason.DONE else outcome
        if spec.verify and outcome.reason is StopReason.DONE and stop.reason is None:
            outcome = await read_back(client, ledger, spec, stop, events)
    except DailyQuotaError as exc:
        outcome = RunOutcome(StopReason.DAILY_QUOTA, exc)
    except _STOPPING as exc:
        outcome = RunOutcome(StopReason.FATAL, exc)
    except StorageError as exc:  # the reserve is used up too: what is unwritten is lost
        ledger.storage.report(exc)
        outcome = RunOutcome(StopReason.STORAGE)
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


def _finish(ledger: Ledger, spec: JobSpec, started: tuple[float, float], reason: StopReason,
            error: ApiError | None, rates: dict[str, float]) -> RunResult:
    """The verdict, the reports, and the result every caller gets."""
    counts = ledger.counts()
    ledger.storage.check(ledger.conn)  # the ledger deleted since the last commit?
    if ledger.storage.trouble is not None and reason is StopReason.DONE:
        reason = StopReason.STORAGE
    failed = counts.get(RowStatus.FAILED)
    advice = retry_advice(ledger.review.failures_by_answer()) if failed else None
    code, message = _verdict(counts, reason, error or ledger.storage.trouble, advice)
    seconds = time.monotonic() - started[1]  # a clock stepped back an hour changes nothing
    if code in (EXIT_OK, EXIT_ROW_FAILURES):
        ledger.set_meta(finished_at=now())
    summary = Summary(
        job=spec.name, run_id=ledger.meta().get("run_id"), exit_code=code,
        stop_reason=reason.value, message=message, started_at=_iso(started[0]),
        finished_at=_iso(time.time()), duration_s=round(seconds, 3),
        users_moved_per_s=round(counts.get(RowStatus.MOVED, 0) / max(seconds, 1e-9), 1),
        rate=spec.rate, rate_found=rates)
    run_dir = spec.out_dir
    try:
        report.write_reports(ledger, run_dir, dict(summary), xlsx_max_rows=spec.xlsx_max_rows,
                             counts=counts)
        summary = Summary(**read_summary(run_dir))  # type: ignore[typeddict-item]
    except RunStateError as exc:  # calls were sent: not exit 2 ("nothing was sent")
        code = EXIT_STOPPED
        message = (f"{message}; but {exc.message}; every result is in the ledger: "
                   f"`batchmove report {run_dir}` writes the reports again")
    ledger.storage.check(ledger.conn)  # deleted while the reports were written?
    if ledger.storage.trouble is not None and code in (EXIT_OK, EXIT_ROW_FAILURES):
        code, message = EXIT_STOPPED, f"{message}; but {ledger.storage.trouble.message}"
        with suppress(RunStateError):
            summary = Summary(**report.update_summary(  # type: ignore[typeddict-item]
                run_dir, exit_code=code, stop_reason=StopReason.STORAGE.value, message=message))
    return RunResult(code, message, run_dir, counts_of(counts), reason,
                     ledger.calls(), summary)


def _verdict(counts: Counter[str], reason: StopReason, error: BatchmoveError | None,
             advice: RetryAdvice | None = None) -> tuple[int, str]:
    tally = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
    if reason in (StopReason.FATAL, StopReason.STORAGE) and error is not None:
        return EXIT_STOPPED, f"stopped: {error.message} ({tally})"
    if (reason is StopReason.DAILY_QUOTA and isinstance(error, ApiError)
            and error.errcode is None):  # the quota view stopped it, not WeChat
        return EXIT_STOPPED, (f"stopped before moving anyone: {error.errmsg}; run the same "
                              f"command again once they are done (or tomorrow) to resume "
                              f"({tally})")
    if reason in _STOP_MESSAGES:
        code = {StopReason.SIGINT: EXIT_SIGINT, StopReason.SIGTERM: EXIT_SIGTERM}.get(
            reason, EXIT_STOPPED)
        return code, f"{_STOP_MESSAGES[reason]} ({tally})"
    if counts.get(RowStatus.UNKNOWN):
        return EXIT_STOPPED, (f"stopped: WeChat never answered the moves of "
                              f"{counts[RowStatus.UNKNOWN]} rows and reading them back failed; "
                              f"run the same command again to read them back ({tally})")
    if counts.get(RowStatus.PENDING):
        return EXIT_STOPPED, f"stopped with rows still pending; run again to resume ({tally})"
    if counts.get(RowStatus.FAILED) or counts.get(RowStatus.INVALID):
        hint = advice.hint() if advice is not None else ""
        return EXIT_ROW_FAILURES, (f"finished with row failures ({tally}); see failed.csv"
                                   + (f"; {hint}" if hint else ""))
    return EXIT_OK, f"finished ({tally})"


def rewrite_reports(run_dir: Path) -> ReportFiles:
    """`batchmove report`: the report files again from the ledger alone, with a complete
    summary.json: the run's own if it describes the ledger as it is, else one rebuilt from
    the ledger (a killed run wrote none: stop reason "unrecorded", the verdict from the counts)."""
    with open_run(run_dir, lock=False) as ledger:
        summary = report.earlier_summary(ledger, run_dir)
        if not summary:
            meta, counts = ledger.meta(), ledger.counts()
            code, message = _verdict(counts, StopReason.UNRECORDED, None)
            summary = dict(Summary(
                job=str(meta.get("job") or run_dir.name), run_id=meta.get("run_id"),
                exit_code=code, stop_reason=StopReason.UNRECORDED.value, message=message,
                started_at=str(meta.get("started_at") or ""),
                finished_at=str(meta.get("finished_at") or "")))
        return report.write_reports(ledger, run_dir, summary)


# --- helpers ----------------------------------------------------------------------------------
def _retry_failed(ledger: Ledger) -> int:
    """`--retry-failed`: the failed rows worth another try, pending again."""
    return ledger.reset_failed(retryable(ledger.failed_errcodes()))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
