"""The public API: what `import batchmove` offers, and what the CLI and the console call.

    result = batchmove.run("jobs/nightly.toml", rate=50, out="runs/tonight")
    if result.exit_code == 3: ...   # stopped early (quota): the same call resumes tomorrow

Every function validates exactly as the CLI does (the CLI is a client of this module), never
prompts (calling `run` is the confirmation), prints nothing (pass `events` or `on_progress` to
watch), and works from any thread: the blocking functions run their own event loop, in a helper
thread when the calling thread already has one running (a notebook). Signal handlers are
installed only with `handle_signals=True` (the CLI), so a library call leaves its caller's in
place. Bad input raises a `BatchmoveError` subclass; row failures are results, never raised.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from batchmove.engine import sharing
from batchmove.errors import RunStateError
from batchmove.flows import agency
from batchmove.flows.agency import AccountInfo

# offered here too, for watchers such as the console: EXPORT_KEYS (the job keys an export
# takes), `now` (the timestamp every batchmove file carries), `run_locked(run_dir)` (is a
# process running that run now?)
from batchmove.flows.export import EXPORT_KEYS as EXPORT_KEYS
from batchmove.flows.export import ExportResult, export_followers, export_spec
from batchmove.flows.plan import plan_job
from batchmove.flows.rollback import apply_rollback
from batchmove.flows.run import RunOptions, rewrite_reports, run_job
from batchmove.flows.verify import verify_run
from batchmove.intake import jobfile
from batchmove.ledger.lock import is_locked
from batchmove.ledger.reader import LedgerReader, ledger_changed_at
from batchmove.ledger.rundir import SUMMARY_JSON, read_summary
from batchmove.ledger.rundir import now as now
from batchmove.models import JobSpec
from batchmove.output.notify import resend
from batchmove.output.review import write_rollback
from batchmove.results import (
    AccountStatus,
    Events,
    Overlap,
    Plan,
    Progress,
    ReportFiles,
    RollbackFile,
    RunResult,
    RunView,
    RunWatch,
    Summary,
    VerifyResult,
    counts_of,
)
from batchmove.wechat.errcodes import ERRCODES

if TYPE_CHECKING:  # rehearse's module (and the sandbox it starts) is imported when called
    from batchmove.flows.rehearse import RehearsalResult

T = TypeVar("T")
#: is a process running that run now (holding its lock)? For watchers such as the console.
run_locked = is_locked
Job = str | os.PathLike[str] | JobSpec
ProgressCallback = Callable[[Progress], None]
PathLike = str | os.PathLike[str]


def job_spec(job: Job | Mapping[str, Any], *, source: PathLike | None = None,
             need_input: bool = True, **overrides: Any) -> JobSpec:
    """The validated spec of a job file or spreadsheet (or of a `JobSpec`, or of job keys in
    a mapping) with job keys overridden: what `run` and `plan` will do, before they do it.

    A mapping is checked exactly as a job file holding it would be; `source` is the file it
    came from (messages name it; relative paths are relative to its folder; default: a
    `job.toml` in the current folder). `need_input=False` checks a job's settings alone
    (neither `input` nor `[select]` required), as for a file of defaults."""
    if isinstance(job, JobSpec):
        return job.with_overrides(**jobfile.read_overrides(overrides))
    if isinstance(job, Mapping):
        where = Path(source) if source is not None else Path("job.toml")
        values = jobfile.job_values(job, where.absolute(), need_input=need_input)
        return JobSpec(**(values | jobfile.read_overrides(overrides)))
    if not need_input:
        values = jobfile.load_job(Path(job), need_input=False)
        return JobSpec(**(values | jobfile.read_overrides(overrides)))
    return jobfile.spec_for(Path(job), **overrides)


async def run_async(job: Job, *, events: Events | None = None,
                    on_progress: ProgressCallback | None = None, restart: bool = False,
                    retry_failed: bool = False, handle_signals: bool = False,
                    confirm: Callable[[Plan], bool] | None = None,
                    **overrides: Any) -> RunResult:
    """`run` for callers that have an event loop."""
    spec = agency.check_one(job_spec(job, **overrides))
    options = RunOptions(restart, retry_failed, confirm, handle_signals)
    return await run_job(spec, options, _watcher(events, on_progress))


def run(job: Job, *, events: Events | None = None, on_progress: ProgressCallback | None = None,
        restart: bool = False, retry_failed: bool = False, handle_signals: bool = False,
        confirm: Callable[[Plan], bool] | None = None, **overrides: Any) -> RunResult:
    """Move the users a job lists; resumes the run its run directory holds.

    `overrides` are job keys (`rate=50`, `out="runs/x"`, `api_base="sandbox"`...). `restart`
    discards an unfinished run's progress; `retry_failed` sends again the rows that failed
    without an answer or with a retryable errcode. `confirm` sees the plan before anything
    is sent and may say no (ConfirmationRequired). Returns how the run ended: branch on
    `exit_code` (0 done, 1 row failures, 3 stopped early and resumable, 130/143 signals).
    """
    return _blocking(lambda: run_async(
        job, events=events, on_progress=on_progress, restart=restart,
        retry_failed=retry_failed, handle_signals=handle_signals, confirm=confirm,
        **overrides))


async def plan_async(job: Job, *, events: Events | None = None,
                     rows_dir: PathLike | None = None, count_moves: bool = False,
                     **overrides: Any) -> Plan:
    """`plan` for callers that have an event loop."""
    return await plan_job(agency.check_one(job_spec(job, **overrides)),
                          _watcher(events, None),
                          Path(rows_dir) if rows_dir is not None else None,
                          count_moves=count_moves)


def plan(job: Job, *, events: Events | None = None, rows_dir: PathLike | None = None,
         count_moves: bool = False, **overrides: Any) -> Plan:
    """The dry run: validate, resolve targets, count calls and check today's quota, with
    read-only calls only; writes `plan.json` to the run directory. `Plan.can_run` says
    whether `run` would start (`blocked` says why not). `rows_dir` keeps the plan's row
    ledger there (`Plan.rows_dir`), so `watch_run(rows_dir).rows(...)` pages the invalid
    and duplicate rows without reading the input again. Who will really move is known from
    an exported input's current groups or tags, or with `count_moves=True` by reading every
    user now (`user/info/batchget`, 100 a call: `Plan.count_calls`); otherwise
    `Plan.moves_exact` is False and `users_to_move` is an upper bound."""
    return _blocking(lambda: plan_async(job, events=events, rows_dir=rows_dir,
                                        count_moves=count_moves, **overrides))


async def verify_async(run_dir: str | os.PathLike[str], api_base: str | None = None, *,
                       events: Events | None = None) -> VerifyResult:
    """`verify` for callers that have an event loop."""
    return await verify_run(Path(run_dir), api_base, _watcher(events, None))


def verify(run_dir: str | os.PathLike[str], api_base: str | None = None, *,
           events: Events | None = None) -> VerifyResult:
    """Read every moved user of a run back; `mismatches` counts those moved since (exit 1)."""
    return _blocking(lambda: verify_async(run_dir, api_base, events=events))


async def rollback_async(run_dir: str | os.PathLike[str],
                         out: str | os.PathLike[str] | None = None, *, apply: bool = False,
                         events: Events | None = None,
                         on_progress: ProgressCallback | None = None, restart: bool = False,
                         handle_signals: bool = False,
                         confirm: Callable[[Plan], bool] | None = None) -> RollbackFile:
    """`rollback` for callers that have an event loop."""
    path = Path(out) if out is not None else None
    if not apply:
        return write_rollback(Path(run_dir), path)
    options = RunOptions(restart, False, confirm, handle_signals)
    return await apply_rollback(Path(run_dir), path, options, _watcher(events, on_progress))


def rollback(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
             apply: bool = False, events: Events | None = None,
             on_progress: ProgressCallback | None = None, restart: bool = False,
             handle_signals: bool = False,
             confirm: Callable[[Plan], bool] | None = None) -> RollbackFile:
    """Write `rollback.csv` (or `out`): every user the run moved, back where the snapshot saw
    them. With `apply=True`, also run it: with the run's own settings (API address,
    credentials source, backend, limits: what its ledger recorded, never this process's
    defaults), in its own run directory `RUN_DIR/rollback/`; `applied` holds that run's
    `RunResult`, and the same call resumes it. `confirm`, `restart`, `events`...: as `run`."""
    return _blocking(lambda: rollback_async(
        run_dir, out, apply=apply, events=events, on_progress=on_progress, restart=restart,
        handle_signals=handle_signals, confirm=confirm))


def rehearse(job: Job, export: PathLike, *, quota_from_plan: PathLike | None = None,
             rate: float | str | None = None, events: Events | None = None,
             on_progress: ProgressCallback | None = None, handle_signals: bool = False,
             **overrides: Any) -> RehearsalResult:
    """Plan, run, verify and roll back (applied) the job against a sandbox on 127.0.0.1 that
    starts with exactly the followers, groups and tags of `export` (a `batchmove export`
    file), with the job's settings but its API address and credentials (never contacted),
    in the job's run directory with `-rehearsal` appended. Quotas: the job's `[sandbox]`,
    or what a plan of the real account found left (`quota_from_plan`: its plan.json). The
    result says what the real run would do and cost, the final state against the export
    and whether the rollback restored it; `exit_code` as `run`'s, or 1 when either differs.
    `rate`: the rehearsal's own pace (0: as fast as it goes); the expected time of the real
    run is still given at the job's rate."""
    from batchmove.flows.rehearse import rehearse as rehearse_job

    spec = job_spec(job, **overrides)
    pace = job_spec(spec, rate=rate).rate if rate is not None else spec.rate
    plan_json = Path(quota_from_plan) if quota_from_plan is not None else None
    return _blocking(lambda: rehearse_job(spec, Path(export), _watcher(events, on_progress),
                                          plan_json=plan_json, handle_signals=handle_signals,
                                          rate=pace))


def write_reports(run_dir: str | os.PathLike[str]) -> ReportFiles:
    """Write a run's report files again from its ledger alone (summary.json complete: rebuilt
    from the ledger when the run wrote none of its own)."""
    return rewrite_reports(Path(run_dir))


async def export_async(out: str | os.PathLike[str], *, backend: str | None = None,
                       groups: Sequence[str | int] = (), tags: Sequence[str | int] = (),
                       events: Events | None = None, on_progress: ProgressCallback | None = None,
                       handle_signals: bool = False, **overrides: Any) -> ExportResult:
    """`export` for callers that have an event loop."""
    spec = export_spec(out, backend=backend, groups=groups, tags=tags, **overrides)
    return await export_followers(spec, _watcher(events, on_progress),
                                  handle_signals=handle_signals)


def export(out: str | os.PathLike[str], *, backend: str | None = None,
           groups: Sequence[str | int] = (), tags: Sequence[str | int] = (),
           events: Events | None = None, on_progress: ProgressCallback | None = None,
           handle_signals: bool = False, **overrides: Any) -> ExportResult:
    """Write the account's followers (all, or those in `groups` / carrying `tags`, names or
    ids) to `out` (.csv or .xlsx) with their current group (`backend="groups"`) or tags: an
    input for `run` as it is. Resumable: the same call continues after a stop (exit_code 3,
    130, 143). `overrides`: api_base, credentials, rate, concurrency, retries, timeout,
    sandbox, name, and `job` (a job file lending those keys and its `[select]`)."""
    return _blocking(lambda: export_async(
        out, backend=backend, groups=groups, tags=tags, events=events, on_progress=on_progress,
        handle_signals=handle_signals, **overrides))


def account_status(job: Job, **overrides: Any) -> AccountStatus:
    """What this machine's account registry knows of the job's account: the runs registered
    on it (who moves whom, in what state; `ahead_of(run_dir)` for "queued behind"), how many
    runs share its rate now, the calls/s its endpoints last ran clean at, and the calls this
    machine's runs spent on it today."""
    return sharing.account_status(job_spec(job, **overrides))


def claim_run(job: Job, *, state: str = "pending", rows_dir: PathLike | None = None,
              **overrides: Any) -> list[Overlap]:
    """Register the job's run (its run directory) on its account before it starts, as the
    console does for an upload waiting for approval ("pending", "approved"); returns the
    live runs it overlaps. Its users are read from the input, or from the row ledger a plan
    kept (`rows_dir`, `plan(..., rows_dir=...)`: the input is not read again). A later `run`
    of the same run directory replaces the claim; `release_run` removes it. Claims that are
    not running lapse after a week."""
    return sharing.claim_job(job_spec(job, **overrides), state,
                             Path(rows_dir) if rows_dir is not None else None)


def release_run(job: Job, **overrides: Any) -> None:
    """Remove the claim of the job's run directory (an upload discarded before it ran)."""
    sharing.release_job(job_spec(job, **overrides))


def notify(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Send a finished run's notifications again (its job's [notify]), whatever `on` says;
    one record per channel, as in summary.json's `notifications`."""
    return _blocking(lambda: resend(Path(run_dir)))


def errcode_meaning(errcode: int) -> str | None:
    """What a WeChat errcode means, in English, from the one errcode table (the client, the
    sandbox and the reports read it too); None for a code the table does not know."""
    entry = ERRCODES.get(errcode)
    return entry.meaning if entry is not None else None


def watch_run(run_dir: PathLike) -> RunWatch:
    """A read-only live view of a run's ledger (or of a plan's kept rows) for pollers: it
    takes no lock and never slows the run; `close()` it when done. RunStateError when there
    is no ledger (yet)."""
    return LedgerReader(Path(run_dir)).__enter__()


def view_run(run_dir: PathLike, *, recount: bool = False) -> RunView:
    """What a run directory says about its run now, without disturbing it: its ledger's
    facts, its summary.json, and whether a process runs it. The counts come from the summary
    when it is newer than the ledger and nothing runs (no scan of a million rows for each
    line of a history), else from the ledger (`recount=True`: always)."""
    folder = Path(run_dir)
    summary = _summary_of(folder)
    running = run_locked(folder)
    meta: dict[str, Any] = {}
    counts = None
    changed = ledger_changed_at(folder)
    if changed is not None:
        try:
            with LedgerReader(folder) as reader:
                meta = reader.meta()
                fresh = _summary_is_fresh(folder, changed) and "counts" in summary
                if fresh and not running and not recount:
                    counts = counts_of(cast(Mapping[str, int], summary["counts"]))
                else:
                    counts = reader.counts()
        except RunStateError:
            pass
    return RunView(
        run_dir=folder, running=running, counts=counts,
        job=summary.get("job") or meta.get("job"),
        input_name=Path(str(meta["input"])).name if meta.get("input") else None,
        backend=meta.get("backend"), api_base=meta.get("api_base"),
        started_at=summary.get("started_at") or meta.get("started_at"),
        finished_at=None if running else summary.get("finished_at"), summary=summary)


def _summary_of(run_dir: Path) -> Summary:
    try:
        found: Summary = Summary(**read_summary(run_dir))  # type: ignore[typeddict-item]
        return found
    except RunStateError:
        return Summary()


def _summary_is_fresh(run_dir: Path, ledger_changed: float) -> bool:
    try:
        return (run_dir / SUMMARY_JSON).stat().st_mtime >= ledger_changed
    except OSError:
        return False


def list_accounts(job: Job, **overrides: Any) -> list[AccountInfo]:
    """The accounts that authorised the job's third-party platform (`[credentials] component
    = true`), each with its name and today's quota of the move endpoint."""
    return _blocking(lambda: agency.list_accounts(_settings(job, **overrides)))


def sync_accounts(job: Job, **overrides: Any) -> list[str]:
    """Store every authorizer's refresh token from WeChat's list (the machine's platform
    store, shared by every process); the appids."""
    return _blocking(lambda: agency.sync_accounts(_settings(job, **overrides)))


def _settings(job: Job, **overrides: Any) -> JobSpec:
    """A job's settings without its input, which need not exist yet (an agency lists its
    accounts before it writes their spreadsheet)."""
    if isinstance(job, JobSpec):
        return job_spec(job, **overrides)
    return jobfile.settings_for(Path(job), **overrides)


class _Watcher(Events):
    """`events` and `on_progress` together, behind the one `Events` the pipeline talks to."""

    def __init__(self, events: Events | None, on_progress: ProgressCallback | None) -> None:
        self.events, self.on_progress = events, on_progress

    def info(self, message: str) -> None:
        if self.events is not None and hasattr(self.events, "info"):
            self.events.info(message)

    def progress(self, progress: Progress) -> None:
        if self.events is not None and hasattr(self.events, "progress"):
            self.events.progress(progress)
        if self.on_progress is not None:
            self.on_progress(progress)


def _watcher(events: Events | None, on_progress: ProgressCallback | None) -> Events:
    if on_progress is None and isinstance(events, Events):
        return events
    return _Watcher(events, on_progress)


def _blocking(start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end from blocking code, in any thread: on a fresh event loop
    here, or in a helper thread when this thread already runs one (a notebook cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(start())
    with ThreadPoolExecutor(1, thread_name_prefix="batchmove") as pool:
        return pool.submit(lambda: asyncio.run(start())).result()
