"""`batchmove rollback`, `verify`, `report` and `notify`: after a run, over its run directory."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from batchmove import api
from batchmove.cli.app import clear_errors, cli, verdict
from batchmove.cli.display import Terminal
from batchmove.errors import EXIT_OK, EXIT_ROW_FAILURES, UsageError
from batchmove.results import RollbackFile


@cli.command("rollback")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the spreadsheet (default RUN_DIR/rollback.csv).")
@click.option("--apply", is_flag=True,
              help="Also run the undo, with the run's own settings, in RUN_DIR/rollback/.")
@click.option("--yes", "-y", is_flag=True, help="With --apply: do not ask for confirmation.")
@click.option("--restart", is_flag=True,
              help="With --apply: discard an unfinished undo's progress and start it again.")
@click.option("--quiet", "-q", is_flag=True, help="With --apply: only the final line.")
@clear_errors
def rollback_command(run_dir: Path, out: Path | None, apply: bool, yes: bool, restart: bool,
                     quiet: bool) -> None:
    """Write the spreadsheet that undoes RUN_DIR: openid -> the group (or tags) each user was
    in before. With --apply, run it too: with the run's own API address, credentials source
    and backend (recorded in its ledger), in its own run directory RUN_DIR/rollback/,
    confirming like `run` (the plan on a terminal; --yes without one). Groups the run created
    are kept. The same command resumes a stopped undo.
    """
    if not apply:
        if yes or restart or quiet:
            raise UsageError("--yes, --restart and --quiet go with --apply (they run the undo)")
        undo = api.rollback(run_dir, out)
        click.echo(f"wrote {undo.path}: {undo.users} users back to their previous "
                   f"{_what(undo)}")
        click.echo(f"undo with: {undo.command}")
        return
    console = Terminal(quiet=quiet)
    try:
        undo = api.rollback(run_dir, out, apply=True, events=console, restart=restart,
                            handle_signals=True, confirm=None if yes else console.confirm)
    finally:
        console.close()
    result = undo.applied
    assert result is not None
    if quiet and undo.caveat:  # said before the run otherwise; never left unsaid
        click.echo(f"note: {undo.caveat}", err=True)
    verdict(result.message, result.exit_code, ("report", result.run_dir / "report.csv"))
    sys.exit(result.exit_code)


def _what(undo: RollbackFile) -> str:
    return "tags" if undo.backend == "tags" else "groups"


@cli.command("verify")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--api-base", help="WeChat API base URL (default: the run's).")
@click.option("--quiet", "-q", is_flag=True, help="Only the verdict line.")
@clear_errors
def verify_command(run_dir: Path, api_base: str | None, quiet: bool) -> None:
    """Read back every moved user's group; exit 1 if any is no longer in its target."""
    console = Terminal(quiet=quiet)
    try:
        result = api.verify(run_dir, api_base, events=console)
    finally:
        console.close()
    verdict(result.message, result.exit_code)
    sys.exit(result.exit_code)


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@clear_errors
def report_command(run_dir: Path) -> None:
    """Write the report files of RUN_DIR again from its ledger."""
    files = api.write_reports(run_dir)
    click.echo("wrote " + ", ".join(str(p) for p in files.written))


@cli.command("notify")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@clear_errors
def notify_command(run_dir: Path) -> None:
    """Send RUN_DIR's notifications again: the WeCom robot message, the webhook and the end
    ping of its job's [notify] table, whatever `on` says. Exit 0 when every one was sent, 1
    when any failed or was skipped (an unset variable), 2 when there is nothing to send."""
    records = api.notify(run_dir)
    for r in records:
        where = f" {r['to']}" if r.get("to") else ""
        why = f": {r['reason']}" if r.get("reason") else ""
        click.echo(f"{r['channel']}{where}: {r['result']}{why}", err=r["result"] != "sent")
    sys.exit(EXIT_OK if all(r["result"] == "sent" for r in records) else EXIT_ROW_FAILURES)
