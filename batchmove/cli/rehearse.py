"""`batchmove rehearse JOB --from EXPORT`: a few lines over `batchmove.rehearse`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from batchmove import api
from batchmove.cli.app import clear_errors, cli, verdict
from batchmove.cli.display import Terminal
from batchmove.flows.rehearse import RehearsalResult
from batchmove.results import Counts

MAX_CHANGES_SHOWN = 20


@cli.command("rehearse")
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--from", "export", required=True, metavar="EXPORT",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A `batchmove export` file of the real account (CSV or XLSX, groups or "
                   "tags): the sandbox starts with exactly its followers, groups and tags.")
@click.option("--quota-from-plan", type=click.Path(dir_okay=False, path_type=Path),
              metavar="PLAN.JSON", help="The real account's quotas left (and, with rate = "
                                        "\"auto\", its rates) from a plan's plan.json.")
@click.option("--input", type=click.Path(dir_okay=False),
              help="The spreadsheet to load, instead of the job file's input.")
@click.option("--rate", metavar="N|auto",
              help="Calls per second of the rehearsal (0 = unlimited); the expected time is "
                   "still given at the job's rate.")
@click.option("--concurrency", type=int, help="Calls in flight at most.")
@click.option("--create-groups/--no-create-groups", default=None,
              help="Create target groups that do not exist yet.")
@click.option("--quiet", "-q", is_flag=True, help="Only the rehearsal's findings.")
@clear_errors
def rehearse_command(job: str, export: Path, quota_from_plan: Path | None, quiet: bool,
                     rate: str | None, **overrides: Any) -> None:
    """Rehearse JOB on a copy of the account: plan, run, verify and rollback --apply against
    a sandbox on 127.0.0.1 started from EXPORT, with the job's settings but its API address
    and credentials (never contacted), in the job's run directory + "-rehearsal". Prints
    what the real run would do and cost, who changes, and whether the rollback restored
    the export. Exit codes as `run`'s; 1 also when the final state is not the job's intent
    or the rollback did not restore the export.
    """
    spec = api.job_spec(job, **overrides)
    console = Terminal(quiet=quiet)
    try:
        result = api.rehearse(spec, export, quota_from_plan=quota_from_plan, events=console,
                              handle_signals=True, rate=rate)
    finally:
        console.close()
    if result.run is not None:
        _findings(result)
    verdict(result.message, result.exit_code, ("run directory", result.run_dir))
    sys.exit(result.exit_code)


def _findings(result: RehearsalResult) -> None:
    echo = click.echo
    echo("what the real run would do:")
    for target, counts in sorted(result.moved.items()):
        echo(f"  to {target}: {_counts(counts)}")
    for phase, calls in result.calls.items():
        shown = ", ".join(f"{e} {n:,}" for e, n in calls.items()) or "none"
        echo(f"  calls of the {phase}: {shown}")
    when = ("unknown" if result.expected_s is None else _duration(result.expected_s))
    echo(f"  expected time of the run: {when} ({result.rate_basis})")
    echo(f"the final state against the export: {result.changed:,} users changed "
         f"({result.intended:,} meant by the job, {result.unintended:,} otherwise; "
         f"{result.unmoved:,} meant but not moved)")
    for change in result.changes[:MAX_CHANGES_SHOWN]:
        echo(f"  {change.before} -> {change.after}: {change.users:,}")
    if len(result.changes) > MAX_CHANGES_SHOWN:
        echo(f"  ... and {len(result.changes) - MAX_CHANGES_SHOWN} more kinds of change")
    if result.verify is not None:
        echo(f"verify: {result.verify.checked:,} checked, {result.verify.mismatches:,} "
             "mismatches")
    if result.rollback is not None:
        restored = ("the export exactly" if not result.not_restored else
                    f"all but {result.not_restored:,} users")
        echo(f"rollback: {result.rollback.users:,} users back; restored {restored}")


def _counts(counts: Counts) -> str:
    shown = [f"{n:,} {status}" for status, n in counts.items() if n]
    return ", ".join(shown) or "nobody"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
