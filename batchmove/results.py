"""What the public API returns: typed, frozen, and the same whether the CLI or Python asked.

`RunResult`, `Plan` and `VerifyResult` are frozen dataclasses; the JSON files behind them
(`summary.json`, `plan.json`) are described by TypedDicts so a scheduler reading the file and a
caller reading the attribute see the same names. Nothing here does I/O.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypedDict

from batchmove.errors import EXIT_OK
from batchmove.models import RowStatus


class StopReason(StrEnum):
    """Why a run, an export or a verification ended (`RunResult.stop_reason`, summary.json)."""

    DONE = "done"
    DAILY_QUOTA = "daily_quota"
    FATAL = "fatal"
    THRESHOLD = "failure_threshold"
    SIGINT = "sigint"
    SIGTERM = "sigterm"
    STORAGE = "storage"  # the disk filled up, a file became unwritable, the ledger was deleted
    UNRECORDED = "unrecorded"  # `batchmove report` of a run that wrote no summary (killed)


class Counts(TypedDict):
    """Rows per status; all seven are always present."""

    moved: int
    already: int
    failed: int
    invalid: int
    duplicate: int
    unknown: int
    pending: int


def counts_of(found: Mapping[str, int]) -> Counts:
    """All seven statuses, zero where `found` has none."""
    get = found.get
    return Counts(moved=get(RowStatus.MOVED, 0), already=get(RowStatus.ALREADY, 0),
                  failed=get(RowStatus.FAILED, 0), invalid=get(RowStatus.INVALID, 0),
                  duplicate=get(RowStatus.DUPLICATE, 0), unknown=get(RowStatus.UNKNOWN, 0),
                  pending=get(RowStatus.PENDING, 0))


class Summary(TypedDict, total=False):
    """`summary.json`: what a run did, as schedulers and the console read it."""

    job: str
    run_id: str | None
    exit_code: int
    stop_reason: str
    message: str
    started_at: str
    finished_at: str
    duration_s: float
    users_moved_per_s: float
    counts: Counts
    rows: int
    calls: dict[str, int]
    groups_created: list[dict[str, Any]]
    report_xlsx: str | None
    report_xlsx_skipped: str | None
    files: list[str]
    verify: dict[str, Any]
    snapshot_source: str | None
    notifications: list[dict[str, Any]]
    rate: float | str  # the job's rate: "auto" or calls per second
    rate_found: dict[str, float]  # "auto": calls/s each endpoint ran at last


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report: `on_progress` / `Events.progress` get these while rows move."""

    phase: str  # "moving"
    moved: int
    failed: int
    total: int
    elapsed_s: float
    users_per_s: float
    eta_s: float | None  # None until the rate is known

    @property
    def pending(self) -> int:
        return max(self.total - self.moved - self.failed, 0)


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended. Row failures are here (`counts`), never raised."""

    exit_code: int
    message: str
    run_dir: Path
    counts: Counts
    stop_reason: StopReason
    calls: dict[str, int]
    summary: Summary

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK


class TargetPlan(TypedDict):
    group_id: int
    users: int


class CreatePlan(TypedDict):
    name: str
    users: int


class UnresolvedPlan(TypedDict):
    target: str
    users: int
    reason: str


class PlanGroups(TypedDict, total=False):
    """Where the users go: existing targets, names to create, targets that cannot be used."""

    users_per_group: dict[str, TargetPlan]
    create: list[CreatePlan]
    unresolved: list[UnresolvedPlan]
    existing_groups: int
    max_groups: int


class QuotaFit(TypedDict):
    needed: int
    remain: int  # today's calls left, as openapi/quota/get said
    others: int  # of them, what the other runs registered on the account will still make
    daily_limit: int
    fits_today: bool  # needed <= remain - others
    days: int


@dataclass(frozen=True, slots=True)
class Overlap:
    """Another run on the account that moves some of the same users (`Plan.overlaps`)."""

    run_dir: str
    job: str
    state: str  # "running", or (console) "pending" / "approved"
    users: int  # users both runs move


@dataclass(frozen=True, slots=True)
class AccountRun:
    """A run registered on an account in the machine's registry (`batchmove.account_runs`)."""

    run_dir: str
    job: str
    state: str  # "running", "pending" or "approved"
    users: int
    registered_at: float  # wall-clock seconds
    pid: int | None


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What the machine's registry knows of the account a job talks to: the runs registered on
    it, how many runs share its rate right now, the rate each endpoint last ran clean at, and
    the calls this machine's runs spent on it today (WeChat's day)."""

    runs: list[AccountRun]
    sharing: int  # runs holding a share of the account's rate now
    rates: dict[str, float]  # endpoint -> calls/s it last ran clean at (rate = "auto")
    spent_today: dict[str, int]  # endpoint -> calls (or "*" for fixed-rate runs' totals)

    def ahead_of(self, run_dir: str) -> list[AccountRun]:
        """Runs registered before this one and still on (the console's "queued behind")."""
        mine = next((r for r in self.runs if r.run_dir == run_dir), None)
        return [r for r in self.runs if r.run_dir != run_dir
                and (mine is None or r.registered_at <= mine.registered_at)]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run would do (`batchmove plan`); `as_dict()` is `plan.json`."""

    rows: dict[str, int]
    users_to_move: int
    groups: PlanGroups
    calls: dict[str, int]  # endpoint -> calls, and "total"
    estimated_duration_s: float | None
    warnings: list[str]
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    quota: dict[str, QuotaFit] = field(default_factory=dict)
    can_run: bool = True
    blocked: str | None = None  # why it cannot run
    plan_json: Path | None = None
    #: a segment job's `[select]`: {"select", "followers", "calls" (of the listing), "frozen"}
    selection: dict[str, Any] | None = None
    #: where the snapshot reads each user's group or tags: "user/info/batchget", or (tags
    #: backend, when cheaper) "user/tag/get"; None without a snapshot
    snapshot_source: str | None = None
    #: tags backend: what the source not chosen would have cost, {endpoint: calls}
    snapshot_alternative: dict[str, int] = field(default_factory=dict)
    #: users already in their target, as far as the plan knows (not in `users_to_move`)
    already: int = 0
    #: how `already` is known: "input" (an exported file's current group or tags column),
    #: "count" (read now: `plan --count-moves`), or None (not known)
    already_source: str | None = None
    #: `users_to_move` and the move calls are exact (True) or an upper bound ("up to": the
    #: run's snapshot skips users already in their target, which the plan could not know)
    moves_exact: bool = True
    #: the read-only calls the plan made to count the moves ({"user/info/batchget": n})
    count_calls: dict[str, int] = field(default_factory=dict)
    #: where the plan's row ledger was kept (`plan(..., rows_dir=...)`); None: not kept
    rows_dir: Path | None = None
    #: other runs on the account moving some of the same users (`run` refuses them unless
    #: `allow_overlap`)
    overlaps: list[Overlap] = field(default_factory=list)
    #: the job's rate ("auto" or calls/s), and under "auto" the calls/s per endpoint the ETA
    #: assumes: the account's history, else quota/get's rate_limit, else the safe start
    rate: float | str = "auto"
    rates: dict[str, float] = field(default_factory=dict)
    sharing: int = 0  # other runs sharing the account's rate now (the ETA divides by them)

    @property
    def exit_code(self) -> int:
        return 0 if self.can_run else 2

    @property
    def message(self) -> str:
        return "the job can run" if self.can_run else f"cannot run: {self.blocked}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan_json"] = str(self.plan_json) if self.plan_json else None
        data["rows_dir"] = str(self.rows_dir) if self.rows_dir else None
        if self.blocked is None:
            del data["blocked"]
        return data


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """`verify`: every moved user read back; `mismatches` are no longer where the run put them."""

    exit_code: int
    message: str
    run_dir: Path
    checked: int
    mismatches: int


@dataclass(frozen=True, slots=True)
class RollbackFile:
    """The spreadsheet that undoes a run (an ordinary input for `run`), and, once applied
    (`rollback(..., apply=True)`), how the undo ran."""

    path: Path
    run_dir: Path  # the run it undoes
    users: int
    needs_blacklist: bool  # some users were in group 1 before: the undo run must allow it
    backend: str
    #: applied: the undo's run directory (RUN_DIR/rollback) and its result
    undo_dir: Path | None = None
    applied: RunResult | None = None
    #: applied: what the undo could not do (an embedded-sandbox run: nothing to restore)
    caveat: str | None = None

    @property
    def command(self) -> str:
        """The command that runs the undo with the run's own settings (API address,
        credentials source, backend), in its own run directory."""
        return f"batchmove rollback {shlex.quote(str(self.run_dir))} --apply"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """What `write_reports` wrote; `xlsx_skipped` says why `report_xlsx` is None."""

    report_csv: Path
    report_xlsx: Path | None
    failed_csv: Path
    summary_json: Path
    xlsx_skipped: str | None = None

    @property
    def written(self) -> list[Path]:
        return [p for p in (self.report_csv, self.report_xlsx, self.failed_csv,
                            self.summary_json) if p is not None]


class Events:
    """What a run tells whoever watches it. Subclass and override what you need; the base
    says nothing. `batchmove.run(on_progress=...)` wraps a bare callback in one of these."""

    def info(self, message: str) -> None:
        """A line worth telling a person ("loaded 60 rows from users.xlsx")."""

    def progress(self, progress: Progress) -> None:
        """Rows moved so far; called after every group commit of results (~5 times a second
        at most in a fast run)."""


class ListedRow(NamedTuple):
    """One row a watcher pages through (`RunWatch.rows`), by its spreadsheet row number."""

    row: int
    openid: str
    target: str
    status: str
    reason: str  # why invalid/duplicate, or the errcode and WeChat's message


class Answered(NamedTuple):
    """While users move only these change (`RunWatch.answered`): half a full count's cost."""

    pending: int
    failed: int
    rows: int
    unknown: int = 0  # moves never answered, not read back yet


@dataclass(frozen=True, slots=True)
class RunView:
    """A run directory as a watcher sees it (`batchmove.api.view_run`), read without a lock
    and without slowing the run: its ledger's facts, its summary, and whether a process is
    running it now."""

    run_dir: Path
    running: bool  # a process holds the run's lock (this console's child, a CLI run...)
    counts: Counts | None  # None: no ledger yet
    job: str | None
    input_name: str | None  # the input's file name, without its folder
    backend: str | None
    api_base: str | None
    started_at: str | None
    finished_at: str | None  # None while running or unfinished
    summary: Summary  # {} before the first summary.json

    @property
    def exit_code(self) -> int | None:
        return self.summary.get("exit_code")


class RunWatch(Protocol):
    """A read-only live view of a run's ledger (`batchmove.api.watch_run`), for pollers."""

    def version(self) -> int:
        """Changes whenever the run commits: skip re-counting while it has not."""

    def counts(self) -> Counts:
        """Rows per status (one pass over the rows)."""

    def answered(self) -> Answered:
        """Pending, failed and all rows."""

    def targets(self) -> dict[str, Counts]:
        """Rows per status for each target of the input (invalid and duplicate rows, which
        are never sent, are not counted here)."""

    def rows(self, statuses: tuple[str, ...], offset: int, limit: int) -> list[ListedRow]:
        """A page of the invalid, duplicate or failed rows, in the spreadsheet's order."""

    def close(self) -> None:
        """Close the connection."""
