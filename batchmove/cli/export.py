"""`batchmove export`: a few lines over `batchmove.export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from batchmove import api
from batchmove.cli.app import clear_errors, cli, verdict
from batchmove.cli.display import Terminal
from batchmove.cli.logs import JsonEvents, JsonLog, json_errors, log_format_option


@cli.command("export")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write: .csv or .xlsx (an input for `run` as it is).")
@click.option("--backend", type=click.Choice(["groups", "tags"]),
              help="Columns for the groups backend (default) or the tags backend.")
@click.option("--group", "groups", multiple=True, metavar="NAME|ID",
              help="Only the followers in this group (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="NAME|ID",
              help="Only the followers carrying this tag (repeatable).")
@click.option("--job", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Take api_base, [credentials], rate, [sandbox]... (and [select]) from a job.")
@click.option("--api-base", help='WeChat API base URL, or "sandbox" (embedded).')
@click.option("--account", metavar="APPID",
              help="With a platform job ([credentials] component): the account to export.")
@click.option("--rate", metavar="N|auto",
              help='API calls per second (0 = unlimited), or "auto" (the default).')
@click.option("--concurrency", type=int, help="Calls in flight at most.")
@click.option("--retries", type=int, help="Attempts per call for transient failures.")
@click.option("--quiet", "-q", is_flag=True, help="Only the final line (and errors).")
@log_format_option
@clear_errors
@json_errors
def export_command(out: Path, backend: str | None, groups: tuple[str, ...],
                   tags: tuple[str, ...], job: Path | None, quiet: bool, log_format: str,
                   **overrides: Any) -> None:
    """Write the account's followers (or some groups' or tags' followers) to OUT, with their
    current group or tags; the file is an input for `run` as it is.

    Resumable: run the same command again after a stop (quota, signal, kill) to continue.
    """
    log = JsonLog(out.stem) if log_format == "json" else None
    events = JsonEvents(log) if log is not None else Terminal(quiet=quiet)
    try:
        result = api.export(out, backend=backend, groups=groups, tags=tags, job=job,
                            events=events, handle_signals=True, **overrides)
    finally:
        if isinstance(events, Terminal):
            events.close()
    if log is not None:
        log.finished("export_finished", result.exit_code, result.message,
                     path=str(result.path) if result.path else None, rows=result.rows,
                     calls=result.calls, stop_reason=result.stop_reason,
                     backend=result.backend)
    else:
        verdict(result.message, result.exit_code)
    sys.exit(result.exit_code)
