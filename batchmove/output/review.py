"""After a run: undo it (`rollback`) or check it still holds (`verify`).

Both read the run's ledger. Rollback needs no API at all: the snapshot taken before moving
holds every user's previous group, so undoing is just another input, `rollback.csv`
(openid -> previous group id), that `batchmove run` moves like any other.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, NamedTuple

from batchmove.engine.backend import api_client
from batchmove.engine.runner import StopReason, signal_stop
from batchmove.errors import EXIT_OK, EXIT_ROW_FAILURES, EXIT_STOPPED, UsageError
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import BLACKLIST_GROUP_ID, JobSpec
from batchmove.output import report
from batchmove.pipeline import Events, RunResult, verify_moves

ROLLBACK_NAME = "rollback.csv"
ROLLBACK_HEADER = ("openid", "to_groupid", "source_row", "status_in_run")
#: the tags backend restores each user's whole tag set ("101;102"; "" = no tags)
TAG_ROLLBACK_HEADER = ("openid", "tagid_list", "source_row", "status_in_run")


def _open(run_dir: Path) -> Ledger:
    if not (run_dir / LEDGER_NAME).exists():
        raise UsageError(f"{run_dir} has no {LEDGER_NAME}: not a batchmove run directory")
    return Ledger(run_dir).open()


class Rollback(NamedTuple):
    path: Path
    users: int
    needs_blacklist: bool  # some users were in group 1 before: the undo run must allow it
    backend: str


def rollback_run(run_dir: Path, out: Path | None = None) -> Rollback:
    """Write the spreadsheet that undoes the run."""
    with _open(run_dir) as ledger:
        tags = ledger.meta().get("backend") == "tags"
        rows: list[tuple[int, str, int | str, str]] = list(
            ledger.rollback_tag_rows() if tags else ledger.rollback_rows())
        if not rows:
            if not ledger.counts().get("moved"):
                raise UsageError(f"{run_dir}: the run moved nobody; there is nothing to undo")
            raise UsageError(f"{run_dir}: the run took no snapshot (snapshot = false), so the "
                             "users' previous groups are unknown; it cannot be rolled back")
    path = out or run_dir / ROLLBACK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TAG_ROLLBACK_HEADER if tags else ROLLBACK_HEADER)
        writer.writerows((openid, prev, row, status) for row, openid, prev, status in rows)
    blacklisted = not tags and any(prev == BLACKLIST_GROUP_ID for _, _, prev, _ in rows)
    return Rollback(path, len(rows), blacklisted, "tags" if tags else "groups")


async def verify_run(run_dir: Path, api_base: str | None, events: Events) -> RunResult:
    """Read back every moved user's group; exit 1 when any is no longer where we put it."""
    with _open(run_dir) as ledger, signal_stop() as stop:
        meta = ledger.meta()
        spec = _spec_of(meta, api_base)
        reason, error = StopReason.DONE, None
        async with api_client(spec, ledger) as client:
            reason, error = await verify_moves(client, ledger, spec, stop, events)
        mismatches = ledger.mismatches()
        if reason is not StopReason.DONE or stop.reason is not None:
            code = EXIT_STOPPED
            message = f"verification stopped: {error.message if error else reason.value}"
        elif mismatches:
            code = EXIT_ROW_FAILURES
            message = (f"{mismatches} moved users are no longer in their target group "
                       "(see the `verified` column of report.csv)")
        else:
            code, message = EXIT_OK, "every moved user is still in their target group"
        summary = report.read_summary(run_dir) if (run_dir / "summary.json").exists() else {}
        summary["verify"] = {"checked": ledger.counts()["moved"], "mismatches": mismatches,
                             "exit_code": code, "message": message}
        report.write_reports(ledger, run_dir, summary)
    return RunResult(code, message, run_dir, summary)


def _spec_of(meta: dict[str, Any], api_base: str | None) -> JobSpec:
    """The run's job again (for credentials and limits), pointed at `api_base` if given."""
    from batchmove.intake import jobfile

    job_path = meta.get("job_path") or ""
    spec = (jobfile.load_job(Path(job_path)) if job_path and Path(job_path).exists()
            else JobSpec(input=Path(meta.get("input", "")), name=str(meta.get("job", "run"))))
    base = api_base or meta.get("api_base") or spec.api_base
    if base == "sandbox":
        raise UsageError("this run used the embedded sandbox, which ended with it; verify "
                         "during the run with `run --verify`, or pass --api-base URL")
    return spec.with_overrides(api_base=base, backend=meta.get("backend"))
