"""Segment jobs: a `[select]` table instead of an input file, turned into an ordinary input.

    [select]
    tag = "旧分层A"        # or group = "老客户" / group = 108 / all = true
    to = "高价值客户"      # or to_id = 120

The one hook the run and the plan call first (`flows/run.py`, `flows/plan.py`): on the first run the
selection is listed from the account (as `export` lists, resumable through the same page
checkpoint) and frozen into `RUN_DIR/input.csv` (`openid,to_group_name` or
`openid,to_groupid`, mode 600); from then on the job is an ordinary job whose `input` is that
file, so plan, confirmation, snapshot, reports, rollback, verify and resume are unchanged. A
resume never lists again; `--restart` does (a fresh selection). `plan` lists into a scratch
directory instead, so it never freezes anything.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchmove.errors import EXIT_OK, StoppedEarly
from batchmove.flows.export import ExportResult, ExportSpec, check_export, export_followers
from batchmove.models import JobSpec, Selection
from batchmove.results import Events, Plan, RunResult, StopReason, Summary, counts_of

FROZEN_INPUT = "input.csv"


@dataclass(frozen=True)
class Listed:
    """What listing the selection cost, for the plan and the run's result."""

    followers: int
    calls: dict[str, int] = field(default_factory=dict)
    frozen: bool = False  # read from an earlier run's input.csv: no call made

    def as_dict(self, select: Selection) -> dict[str, Any]:
        return {"select": describe_selection(select), "followers": self.followers,
                "calls": dict(self.calls), "frozen": self.frozen}


def describe_selection(select: Selection) -> str:
    what = "all followers" if select.kind == "all" else f"{select.kind} {select.value}"
    to = f"to_id {select.to_id}" if select.to_id is not None else f"to {select.to}"
    return f"{what} -> {to}"


async def freeze(spec: JobSpec, events: Events, *, restart: bool = False,
                 handle_signals: bool = False) -> tuple[JobSpec, RunResult | None]:
    """A segment job as an ordinary job on `RUN_DIR/input.csv`, listing it unless frozen
    already; or, when the listing stopped (quota, signal), the run's result saying so."""
    if spec.select is None:
        return spec, None
    frozen = spec.out_dir / FROZEN_INPUT
    job = replace(spec, input=frozen.absolute())
    if frozen.exists() and not restart and _rows(frozen):
        return job, None
    spec.out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = await export_followers(listing_spec(spec, frozen), events,
                                    handle_signals=handle_signals)
    if result.exit_code != EXIT_OK:
        return job, _stopped(spec, result)
    what = describe_selection(spec.select)
    if not result.rows:  # nothing frozen: the next run lists the selection afresh
        frozen.unlink(missing_ok=True)
        return job, _empty(spec, result.calls)
    events.info(f"selected {result.rows:,} followers ({what}) into {frozen}")
    return job, None


@asynccontextmanager
async def planned(spec: JobSpec, events: Events) -> AsyncIterator[tuple[JobSpec, Listed | None]]:
    """For `plan`: the job on its frozen input, or on a selection listed into a scratch
    directory (read-only calls; nothing is frozen)."""
    if spec.select is None:
        yield spec, None
        return
    frozen = spec.out_dir / FROZEN_INPUT
    if frozen.exists():
        yield replace(spec, input=frozen.absolute()), Listed(_rows(frozen), frozen=True)
        return
    with tempfile.TemporaryDirectory(prefix="batchmove-select-") as scratch:
        path = Path(scratch) / FROZEN_INPUT
        result = await export_followers(listing_spec(spec, path), events)
        if result.exit_code != EXIT_OK:
            raise StoppedEarly(f"listing the selection stopped: {result.message}")
        yield replace(spec, input=path), Listed(result.rows, result.calls)


def empty_plan(spec: JobSpec) -> Plan:
    """The plan of a selection with nobody in it: the run would move nobody (exit 0)."""
    assert spec.select is not None
    return Plan(rows={}, users_to_move=0, groups={}, calls={"total": 0},
                estimated_duration_s=0.0, warnings=[
                    f"the selection is empty ({describe_selection(spec.select)}: no follower "
                    "matches): the run would move nobody"])


def with_listing(plan: Plan, listed: Listed, select: Selection) -> Plan:
    """The plan of a segment job: the selection's size, and its listing calls counted in."""
    calls = dict(plan.calls)
    for endpoint, n in listed.calls.items():
        calls[endpoint] = calls.get(endpoint, 0) + n
    calls["total"] = sum(n for e, n in calls.items() if e != "total")
    return replace(plan, calls=calls, selection=listed.as_dict(select))


def listing_spec(spec: JobSpec, out: Path) -> ExportSpec:
    """The export that lists a selection, with the job's target on every row."""
    select = spec.select
    assert select is not None
    target = (("to_groupid", str(select.to_id)) if select.to_id is not None
              else ("to_group_name", str(select.to)))
    return check_export(ExportSpec(
        out, spec.backend, groups=(select.value,) if select.kind == "group" else (),
        tags=(select.value,) if select.kind == "tag" else (), settings=spec, target=target))


def _stopped(spec: JobSpec, listing: ExportResult) -> RunResult:
    message = f"listing the selection stopped: {listing.message.removeprefix('stopped: ')}"
    summary = Summary(job=spec.name, exit_code=listing.exit_code,
                      stop_reason=listing.stop_reason, message=message, calls=listing.calls)
    return RunResult(listing.exit_code, message, spec.out_dir, counts_of({}),
                     StopReason(listing.stop_reason), listing.calls, summary)


def _empty(spec: JobSpec, calls: dict[str, int]) -> RunResult:
    """A selection with nobody in it: nothing to move, and that is not an error (exit 0)."""
    assert spec.select is not None
    message = (f"the selection is empty ({describe_selection(spec.select)}: no follower "
               "matches): nothing to move")
    summary = Summary(job=spec.name, exit_code=EXIT_OK, stop_reason=StopReason.DONE.value,
                      message=message, calls=calls, counts=counts_of({}))
    return RunResult(EXIT_OK, message, spec.out_dir, counts_of({}), StopReason.DONE, calls, summary)


def _rows(path: Path) -> int:
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)
