"""What the public API returns: typed, frozen, and the same whether the CLI or Python asked.

`RunResult`, `Plan` and `VerifyResult` are frozen dataclasses; the JSON files behind them
(`summary.json`, `plan.json`) are described by TypedDicts so a scheduler reading the file and a
caller reading the attribute see the same names. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict


class StopReason(StrEnum):
    """Why a run, an export or a verification ended (`RunResult.stop_reason`, summary.json)."""

    DONE = "done"
    DAILY_QUOTA = "daily_quota"
    FATAL = "fatal"
    THRESHOLD = "failure_threshold"
    SIGINT = "sigint"
    SIGTERM = "sigterm"
    STORAGE = "storage"  # the disk filled up, a file became unwritable, the ledger was deleted
    UNKNOWN = "unknown"  # `batchmove report` of a run that wrote no summary (killed, say)


class Counts(TypedDict):
    """Rows per status; all six are always present."""

    moved: int
    already: int
    failed: int
    invalid: int
    duplicate: int
    pending: int


def counts_of(found: Mapping[str, int]) -> Counts:
    """All six statuses, zero where `found` has none."""
    return Counts(moved=found.get("moved", 0), already=found.get("already", 0),
                  failed=found.get("failed", 0), invalid=found.get("invalid", 0),
                  duplicate=found.get("duplicate", 0), pending=found.get("pending", 0))


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
        return self.exit_code == 0


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
    remain: int
    daily_limit: int
    fits_today: bool
    days: int


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

    @property
    def exit_code(self) -> int:
        return 0 if self.can_run else 2

    @property
    def message(self) -> str:
        return "the job can run" if self.can_run else f"cannot run: {self.blocked}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan_json"] = str(self.plan_json) if self.plan_json else None
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
    """The spreadsheet that undoes a run (an ordinary input for `run`)."""

    path: Path
    run_dir: Path  # the run it undoes
    users: int
    needs_blacklist: bool  # some users were in group 1 before: the undo run must allow it
    backend: str

    @property
    def command(self) -> str:
        """The command that runs the undo."""
        flags = (" --backend tags" if self.backend == "tags" else "") + (
            " --allow-blacklist" if self.needs_blacklist else "")
        return f"batchmove run {self.path} --out {self.run_dir}-rollback{flags}"


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
