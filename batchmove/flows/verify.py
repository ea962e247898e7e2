"""The story of a verification: every moved user of a run read back (100 a call with
`user/info/batchget`), and the users moved since counted; exit 1 when any were.

`read_back` is also the last stage of a run with `verify = true` (`flows/run.py`); `spec_of`
is a finished run's job again, for the commands that act on a run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchmove.engine.backend import api_client
from batchmove.engine.moves import read_users
from batchmove.engine.runner import RunOutcome
from batchmove.engine.signals import StopSignals, signal_stop
from batchmove.errors import EXIT_OK, EXIT_ROW_FAILURES, EXIT_STOPPED, UsageError
from batchmove.intake import jobfile
from batchmove.ledger.rundir import SUMMARY_JSON, read_summary
from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec, Move, RowStatus
from batchmove.output import report
from batchmove.output.review import open_run, verify_moves
from batchmove.results import Events, StopReason, VerifyResult
from batchmove.wechat.answers import UserInfo
from batchmove.wechat.client import WeChatClient


async def verify_run(run_dir: Path, api_base: str | None, events: Events,
                     handle_signals: bool = False, spec: JobSpec | None = None) -> VerifyResult:
    """Read back every moved user of a finished run; exit 1 when any moved since. `spec`:
    the job to read with (a rehearsal's), instead of the run's job file read again."""
    with open_run(run_dir) as ledger, signal_stop(handle_signals) as stop:
        spec = spec or spec_of(ledger.meta(), api_base)
        async with api_client(spec, ledger) as client:
            outcome = await read_back(client, ledger, spec, stop, events)
        checked, mismatches = ledger.counts()[RowStatus.MOVED], ledger.review.mismatches()
        if outcome.reason is not StopReason.DONE or stop.reason is not None:
            why = outcome.error.message if outcome.error else (stop.reason or outcome.reason).value
            code, message = EXIT_STOPPED, f"verification stopped: {why}"
        elif mismatches:
            code, message = EXIT_ROW_FAILURES, (
                f"{mismatches} moved users are no longer in their target group "
                "(see the `verified` column of report.csv)")
        else:
            code, message = EXIT_OK, "every moved user is still in their target group"
        summary = read_summary(run_dir) if (run_dir / SUMMARY_JSON).exists() \
            else {}
        summary["verify"] = {"checked": checked, "mismatches": mismatches,
                             "exit_code": code, "message": message}
        report.write_reports(ledger, run_dir, summary)
    return VerifyResult(code, message, run_dir, checked, mismatches)


async def read_back(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
                  events: Events) -> RunOutcome:
    outcomes: list[RunOutcome] = []

    async def read(moves: list[Move]) -> dict[int, UserInfo]:
        found, _, outcome = await read_users(client, moves, spec, stop)  # unread: unverified
        outcomes.append(outcome)
        return found

    checked, mismatches = await verify_moves(ledger, read)
    events.info(f"verified {checked} moved users: {mismatches} no longer as moved")
    return outcomes[0] if outcomes else RunOutcome(StopReason.DONE)


def spec_of(meta: dict[str, Any], api_base: str | None) -> JobSpec:
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
