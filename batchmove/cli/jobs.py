"""`batchmove run` and `batchmove plan`: a few lines each over `batchmove.run` / `.plan`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from batchmove import api
from batchmove.cli.app import F, clear_errors, cli, verdict
from batchmove.cli.display import Terminal, format_plan
from batchmove.cli.logs import JsonEvents, JsonLog, json_errors, log_format_option
from batchmove.cli.parallel import die_with_parent, run_accounts, run_many


def _job_options(func: F) -> F:
    """Options that override job file keys (shared by `run` and `plan`)."""
    options = [
        click.option("--api-base", help='WeChat API base URL, or "sandbox" (embedded).'),
        click.option("--input", type=click.Path(dir_okay=False),
                     help="The spreadsheet to load, instead of the job file's input."),
        click.option("--account", metavar="APPID",
                     help="A platform job ([credentials] component): the one account to "
                          "move."),
        click.option("--backend", type=click.Choice(["groups", "tags"]),
                     help="Move users between groups (default) or tag them."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory: every file of the run goes exactly there."),
        click.option("--sheet", help="Excel sheet name or 0-based index."),
        click.option("--encoding", help="Input encoding, overriding detection (e.g. gb18030)."),
        click.option("--target", type=click.Choice(["id", "name", "set"]),
                     help="Whether the target column holds ids, names, or (tags) id sets."),
        click.option("--rate", metavar="N|auto",
                     help='API calls per second (0 = unlimited), or "auto" (the default): as '
                          "fast as the account allows, shared with its other runs."),
        click.option("--max-rate", type=float, help='The most calls per second "auto" tries.'),
        click.option("--concurrency", type=int,
                     help='Calls in flight at most (with "auto": the ceiling it adapts under).'),
        click.option("--batch-size", type=int, help="Users per move call, 1..50."),
        click.option("--retries", type=int, help="Attempts per call for transient failures."),
        click.option("--max-failure-rate", type=float,
                     help="Stop when more than this share of rows fail (0..1)."),
        click.option("--create-groups/--no-create-groups", default=None,
                     help="Create target groups that do not exist yet."),
        click.option("--allow-blacklist/--no-allow-blacklist", default=None,
                     help="Allow group 1 (黑名单, the blacklist) as a target."),
        click.option("--allow-overlap/--no-allow-overlap", default=None,
                     help="Run even when another run on the account moves some of the "
                          "same users."),
        click.option("--snapshot/--no-snapshot", default=None,
                     help="Record every user's current group first (default on)."),
        click.option("--verify/--no-verify", default=None,
                     help="Read every moved user's group back at the end."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command("run")
@click.argument("jobs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_job_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--restart", is_flag=True,
              help="Discard an unfinished run's progress in the run directory and start again.")
@click.option("--retry-failed", is_flag=True,
              help="Try again the rows that failed with no answer or a retryable errcode.")
@click.option("--quiet", "-q", is_flag=True, help="Only the final line (and errors).")
@click.option("--parallel", type=click.IntRange(min=1), default=None,
              help="With several JOBS: how many run at once, each in its own process "
                   "[default: 1]. Exit code: the worst of the jobs'.")
@log_format_option
@clear_errors
@json_errors
def run_command(jobs: tuple[str, ...], yes: bool, restart: bool, retry_failed: bool,
                quiet: bool, parallel: int | None, log_format: str, **overrides: Any) -> None:
    """Move the users listed in JOB (a .toml job file, or a CSV/Excel file) to their groups.

    Several JOBS (one per account, say) run side by side with --parallel N, one line per job;
    so do the accounts of a platform job (accounts = [...] or "all"), one process each.
    """
    die_with_parent()  # a child of --parallel stops with its parent, however that one ends
    passed = {**overrides, "log_format": log_format if log_format != "text" else None}
    flags = {"yes": yes, "restart": restart, "retry_failed": retry_failed}
    if len(jobs) > 1:
        sys.exit(run_many(jobs, parallel or 1, passed, json_logs=log_format == "json", **flags))
    spec = api.job_spec(jobs[0], **overrides)
    if spec.credentials.component and spec.single_account is None:
        sys.exit(run_accounts(spec, jobs[0], parallel or 1, passed,
                              json_logs=log_format == "json", **flags))
    if parallel is not None:
        sys.exit(run_many(jobs, parallel, passed, json_logs=log_format == "json", **flags))
    log = JsonLog(spec.name, spec.out_dir) if log_format == "json" else None
    events = JsonEvents(log) if log is not None else Terminal(quiet=quiet)
    ask = events.confirm if spec.confirm and not yes else None
    try:
        result = api.run(spec, events=events, restart=restart, retry_failed=retry_failed,
                         handle_signals=True, confirm=ask)
    finally:
        if isinstance(events, Terminal):
            events.close()
    # only a report this run wrote is named (the disk may have been full)
    written = "report.csv" in result.summary.get("files", [])
    report = str(result.run_dir / "report.csv") if written else None
    if log is not None:
        summary = result.summary
        log.finished("run_finished", result.exit_code, result.message,
                     stop_reason=result.stop_reason, counts=result.counts, calls=result.calls,
                     duration_s=summary.get("duration_s"),
                     rate=summary.get("users_moved_per_s"), run_dir=str(result.run_dir),
                     report=report, notifications=summary.get("notifications", []))
    else:
        _unsent(result.summary.get("notifications", []))
        verdict(result.message, result.exit_code,
                *([("report", result.run_dir / "report.csv")] if report else []))
    sys.exit(result.exit_code)


def _unsent(records: list[dict[str, Any]]) -> None:
    """A notification that failed is said once, on stderr (URLs already redacted)."""
    for r in records:
        if r["result"] == "failed":
            click.echo(f"notification not sent: {r['channel']} {r.get('to', '')}: "
                       f"{r.get('reason', '')}", err=True)


@cli.command("plan")
@click.argument("job", type=click.Path(dir_okay=False))
@_job_options
@click.option("--count-moves", is_flag=True,
              help="Read every user now (user/info/batchget, 100 a call) to count those "
                   "already in their target.")
@click.option("--quiet", "-q", is_flag=True, help="Only the verdict line.")
@log_format_option
@clear_errors
@json_errors
def plan_command(job: str, count_moves: bool, quiet: bool, log_format: str,
                 **overrides: Any) -> None:
    """Dry run: validate JOB, resolve its groups and count the calls; sends no change.

    Uses only read-only calls (token, groups/get, openapi/quota/get; with --count-moves also
    user/info/batchget). Writes plan.json to the run directory. Exit 0 when the job can run,
    2 when it cannot.
    """
    spec = api.job_spec(job, **overrides)
    log = JsonLog(spec.name) if log_format == "json" else None
    plan = api.plan(spec, events=JsonEvents(log) if log else Terminal(quiet=quiet),
                    count_moves=count_moves)
    if log is not None:
        log.finished("plan_finished", plan.exit_code, plan.message, can_run=plan.can_run,
                     blocked=plan.blocked, rows=plan.rows, users_to_move=plan.users_to_move,
                     moves_exact=plan.moves_exact, already=plan.already,
                     calls=plan.calls, estimated_duration_s=plan.estimated_duration_s,
                     warnings=plan.warnings, plan_json=str(plan.plan_json))
        sys.exit(plan.exit_code)
    if not quiet:
        click.echo(format_plan(plan))
    verdict(plan.message, plan.exit_code, *([("plan", plan.plan_json)] if plan.plan_json else []))
    sys.exit(plan.exit_code)
