"""The command line: a thin shell over the library.

The only module that parses argv or prints for humans. Every `BatchmoveError` becomes one line
on stderr and its exit code; nothing else escapes as a traceback.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from batchmove import __version__
from batchmove.errors import EXIT_USAGE, BatchmoveError
from batchmove.models import JobSpec

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"batchmove: {message}", err=True)
    sys.exit(code)


def clear_errors(func: F) -> F:
    """Turn a BatchmoveError into one line on stderr and its documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BatchmoveError as exc:
            _fail(exc.message, exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchmove")
def cli() -> None:
    """Move WeChat Official Account followers between user groups in bulk."""


# --- sandbox ---------------------------------------------------------------------------------


def _parse_daily_quotas(values: tuple[str, ...]) -> dict[str, int]:
    """`ENDPOINT=N` pairs -> {endpoint: n}; bad syntax or an unknown endpoint is a UsageError."""
    from batchmove.errors import UsageError
    from batchmove.sandbox import ENDPOINTS

    quotas: dict[str, int] = {}
    for value in values:
        endpoint, sep, number = value.partition("=")
        endpoint = endpoint.strip().removeprefix("/").removeprefix("cgi-bin/")
        if not sep or not number.strip().isdigit():
            raise UsageError(f"--daily-quota expects ENDPOINT=N with N >= 0, got {value!r}")
        if endpoint not in ENDPOINTS:
            raise UsageError(
                f"--daily-quota: unknown endpoint {endpoint!r} (known: {', '.join(ENDPOINTS)})"
            )
        quotas[endpoint] = int(number)
    return quotas


@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--allow-non-loopback", is_flag=True, help="Allow binding a non-loopback address.")
@click.option("--port", type=int, default=8765, show_default=True, help="0 = any free port.")
@click.option("--appid", default=None, help="[default: wxsandbox0000000001]")
@click.option("--secret", default=None, help="[default: sandbox-secret-not-real]")
@click.option("--users", type=int, default=200, show_default=True, help="Generated followers.")
@click.option("--users-file", type=click.Path(dir_okay=False), default=None,
              help="Followers, one openid a line (instead of --users).")
@click.option("--seed", type=int, default=0, show_default=True, help="Openids and fault RNG.")
@click.option("--token-ttl", type=float, default=7200.0, show_default=True, help="Seconds.")
@click.option("--max-groups", type=int, default=500, show_default=True,
              help="Groups in total, the three reserved ones included.")
@click.option("--group", "groups", multiple=True, help="Pre-create a group (repeatable).")
@click.option("--max-tags", type=int, default=100, show_default=True,
              help="Tags an account may create (the reserved 0/1/2 not counted).")
@click.option("--tag", "tags", multiple=True, metavar="NAME",
              help="Pre-create a tag (repeatable); ids from 100.")
@click.option("--tag-delete-limit", type=int, default=100_000, show_default=True,
              help="A tag with more members than this cannot be deleted (45057).")
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--jitter-ms", type=float, default=0.0, show_default=True,
              help="Uniform extra latency, 0..N ms.")
@click.option("--error-rate", type=float, default=0.0, show_default=True,
              help="Share of calls answered errcode -1.")
@click.option("--http-error-rate", type=float, default=0.0, show_default=True,
              help="Share of calls answered HTTP 502/503.")
@click.option("--drop-rate", type=float, default=0.0, show_default=True,
              help="Share of calls whose connection is closed unanswered.")
@click.option("--hang-rate", type=float, default=0.0, show_default=True,
              help="Share of calls applied but never answered.")
@click.option("--minute-quota", type=int, default=None, help="Calls a minute, all endpoints.")
@click.option("--daily-quota", "daily_quota", multiple=True, metavar="ENDPOINT=N",
              help="Override one endpoint's daily quota (repeatable).")
@click.option("--page-size", type=int, default=10_000, show_default=True,
              help="Followers per user/get page.")
@clear_errors
def sandbox_command(host: str, allow_non_loopback: bool, port: int, appid: str | None,
                    secret: str | None, users_file: str | None, groups: tuple[str, ...],
                    tags: tuple[str, ...], daily_quota: tuple[str, ...],
                    **settings: Any) -> None:
    """Serve a local imitation of WeChat's group and tag APIs (with faults) until Ctrl-C."""
    from batchmove.errors import UsageError
    from batchmove.sandbox import SandboxConfig, SandboxConfigError, is_loopback, serve

    if not is_loopback(host) and not allow_non_loopback:
        raise UsageError(f"refusing to bind non-loopback address {host} "
                         "(use --allow-non-loopback to expose the sandbox)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    try:
        if appid is not None:
            settings["appid"] = appid
        if secret is not None:
            settings["secret"] = secret
        config = SandboxConfig(users_file=users_file, groups=groups, tags=tags,
                               daily_quota=_parse_daily_quotas(daily_quota), **settings)
        if users_file:
            config.follower_openids()  # an unreadable file fails before binding
    except SandboxConfigError as exc:
        raise UsageError(str(exc)) from exc
    try:
        serve(config, host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


# --- run / plan / report ------------------------------------------------------------------------
def _job_options(func: F) -> F:
    """Options that override job file keys (shared by `run` and `plan`)."""
    options = [
        click.option("--api-base", help='WeChat API base URL, or "sandbox" (embedded).'),
        click.option("--backend", type=click.Choice(["groups", "tags"]),
                     help="Move users between groups (default) or tag them."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory: every file of the run goes exactly there."),
        click.option("--sheet", help="Excel sheet name or 0-based index."),
        click.option("--encoding", help="Input encoding, overriding detection (e.g. gb18030)."),
        click.option("--target", type=click.Choice(["id", "name", "set"]),
                     help="Whether the target column holds ids, names, or (tags) id sets."),
        click.option("--rate", type=float, help="API calls per second (0 = unlimited)."),
        click.option("--concurrency", type=int, help="Calls in flight at most."),
        click.option("--batch-size", type=int, help="Users per move call, 1..50."),
        click.option("--retries", type=int, help="Attempts per call for transient failures."),
        click.option("--max-failure-rate", type=float,
                     help="Stop when more than this share of rows fail (0..1)."),
        click.option("--create-groups/--no-create-groups", default=None,
                     help="Create target groups that do not exist yet."),
        click.option("--allow-blacklist/--no-allow-blacklist", default=None,
                     help="Allow group 1 (黑名单, the blacklist) as a target."),
        click.option("--snapshot/--no-snapshot", default=None,
                     help="Record every user's current group first (default on)."),
        click.option("--verify/--no-verify", default=None,
                     help="Read every moved user's group back at the end."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _spec(job: str, overrides: dict[str, Any]) -> JobSpec:
    from batchmove.intake import jobfile

    spec = jobfile.spec_for(Path(job))
    sheet = overrides.pop("sheet", None)
    if sheet is not None:
        overrides["sheet"] = int(sheet) if sheet.isdigit() else sheet
    return jobfile.check_spec(spec.with_overrides(**overrides))


@cli.command("run")
@click.argument("job", type=click.Path(dir_okay=False))
@_job_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--restart", is_flag=True,
              help="Discard an unfinished run's progress in the run directory and start again.")
@click.option("--retry-failed", is_flag=True,
              help="Try again the rows that failed with no answer or a retryable errcode.")
@click.option("--quiet", "-q", is_flag=True, help="Only the final line (and errors).")
@clear_errors
def run_command(job: str, yes: bool, restart: bool, retry_failed: bool, quiet: bool,
                **overrides: Any) -> None:
    """Move the users listed in JOB (a .toml job file, or a CSV/Excel file) to their groups."""
    from batchmove.pipeline import RunOptions, run_job

    spec = _spec(job, overrides)
    console = Console(quiet=quiet)
    result = asyncio.run(run_job(spec, RunOptions(yes, restart, retry_failed), console))
    console.close()
    click.echo(f"{result.message}\nreport: {result.run_dir / 'report.csv'}",
               err=result.exit_code != 0)
    sys.exit(result.exit_code)


@cli.command("plan")
@click.argument("job", type=click.Path(dir_okay=False))
@_job_options
@click.option("--quiet", "-q", is_flag=True, help="Only the verdict line.")
@clear_errors
def plan_command(job: str, quiet: bool, **overrides: Any) -> None:
    """Dry run: validate JOB, resolve its groups and count the calls; sends no change.

    Uses only read-only calls (token, groups/get, openapi/quota/get). Writes plan.json to the
    run directory. Exit 0 when the job can run, 2 when it cannot.
    """
    from batchmove.pipeline import plan_job

    spec = _spec(job, overrides)
    console = Console(quiet=quiet)
    result = asyncio.run(plan_job(spec, console))
    if not quiet:
        click.echo(format_plan(result.summary))
    click.echo(f"{result.message}\nplan: {result.summary['plan_json']}",
               err=result.exit_code != 0)
    sys.exit(result.exit_code)


@cli.command("rollback")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the spreadsheet (default RUN_DIR/rollback.csv).")
@clear_errors
def rollback_command(run_dir: Path, out: Path | None) -> None:
    """Write the spreadsheet that undoes RUN_DIR: openid -> the group each user was in before.

    It is an ordinary input: `batchmove run RUN_DIR/rollback.csv --out DIR` restores the
    previous groups (groups the run created are kept).
    """
    from batchmove.output.review import rollback_run

    undo = rollback_run(run_dir, out)
    what = "tags" if undo.backend == "tags" else "groups"
    click.echo(f"wrote {undo.path}: {undo.users} users back to their previous {what}")
    flags = (" --backend tags" if undo.backend == "tags" else "") + (
        " --allow-blacklist" if undo.needs_blacklist else "")
    click.echo(f"undo with: batchmove run {undo.path} --out {run_dir}-rollback{flags}")


@cli.command("verify")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--api-base", help="WeChat API base URL (default: the run's).")
@click.option("--quiet", "-q", is_flag=True, help="Only the verdict line.")
@clear_errors
def verify_command(run_dir: Path, api_base: str | None, quiet: bool) -> None:
    """Read back every moved user's group; exit 1 if any is no longer in its target."""
    from batchmove.output.review import verify_run

    console = Console(quiet=quiet)
    result = asyncio.run(verify_run(run_dir, api_base, console))
    console.close()
    click.echo(result.message, err=result.exit_code != 0)
    sys.exit(result.exit_code)


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@clear_errors
def report_command(run_dir: Path) -> None:
    """Write the report files of RUN_DIR again from its ledger."""
    from batchmove.pipeline import rewrite_reports

    files = rewrite_reports(run_dir)
    click.echo("wrote " + ", ".join(str(run_dir / f) for f in files))


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
@click.option("--rate", type=float, help="API calls per second (0 = unlimited).")
@click.option("--concurrency", type=int, help="Calls in flight at most.")
@click.option("--retries", type=int, help="Attempts per call for transient failures.")
@click.option("--quiet", "-q", is_flag=True, help="Only the final line (and errors).")
@clear_errors
def export_command(out: Path, backend: str | None, groups: tuple[str, ...],
                   tags: tuple[str, ...], job: Path | None, quiet: bool,
                   **overrides: Any) -> None:
    """Write the account's followers (or some groups' or tags' followers) to OUT, with their
    current group or tags; the file is an input for `run` as it is.

    Resumable: run the same command again after a stop (quota, signal, kill) to continue.
    """
    from batchmove.exporting import export_followers, export_spec

    settings = {k: v for k, v in overrides.items() if v is not None}
    spec = export_spec(out, backend=backend, groups=groups, tags=tags, job=job, **settings)
    console = Console(quiet=quiet)
    result = asyncio.run(export_followers(spec, console, handle_signals=True))
    console.close()
    click.echo(result.message, err=result.exit_code != 0)
    sys.exit(result.exit_code)


class Console:
    """Progress and questions for a person (live bar on a TTY) or a log (a line every 10 s)."""

    LOG_EVERY_S = 10.0

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None
        self._started = time.monotonic()

    def info(self, message: str) -> None:
        if not self.quiet:
            self._stop_bar()
            click.echo(message, err=True)

    def confirm(self, plan: dict[str, Any]) -> bool:
        if not sys.stdin.isatty():
            return False
        self._stop_bar()
        click.echo(format_plan(plan), err=True)
        return click.confirm("Send these calls?", default=False, err=True)

    def progress(self, phase: str, done: int, failed: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            self._show_bar(phase, done, failed, total)
            return
        now = time.monotonic()
        if now - self._last_log >= self.LOG_EVERY_S or done + failed >= total:
            self._last_log = now
            rate = done / max(now - self._started, 1e-9)
            left = total - done - failed
            eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
            word = "listed" if phase == "listing" else "moved"
            click.echo(f"{phase}: {done} {word}, {failed} failed of {total} "
                       f"({rate:.0f} users/s, ETA {eta})", err=True)

    def _show_bar(self, phase: str, done: int, failed: int, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        if self._bar is None:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                                 TextColumn("{task.fields[rate]} users/s"),
                                 TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(phase, total=total, failed=0, rate=0)
            self._started = time.monotonic()
        rate = int(done / max(time.monotonic() - self._started, 1e-9))
        self._bar.update(self._task, completed=done + failed, total=total, failed=failed,
                         rate=rate, description=phase)

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self) -> None:
        self._stop_bar()


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a person reads it before saying yes."""
    rows = dict(plan["rows"])
    valid = rows.pop("pending", 0)
    tally = ", ".join([f"{valid} valid", *(f"{n} {status}" for status, n in sorted(rows.items()))])
    lines = ["Plan:", f"  rows: {tally}"]
    lines += [f"    invalid: {n} x {reason}"
              for reason, n in sorted(plan.get("invalid_by_reason", {}).items())]
    lines.append(f"  users to move: {plan['users_to_move']}")
    for target, g in plan["groups"].get("users_per_group", {}).items():
        lines.append(f"    -> {target} (group {g['group_id']}): {g['users']} users")
    for g in plan["groups"].get("create", []):
        lines.append(f"    -> {g['name']} (NEW group, will be created): {g['users']} users")
    for u in plan["groups"].get("unresolved", []):
        lines.append(f"    !! {u['target']}: {u['users']} rows will fail: {u['reason']}")
    calls = ", ".join(f"{n} {ep}" for ep, n in plan["calls"].items() if ep != "total")
    lines.append(f"  API calls: {plan['calls']['total']} ({calls})")
    if plan.get("estimated_duration_s") is not None:
        lines.append(f"  estimated duration: {plan['estimated_duration_s']} s")
    for endpoint, fit in plan.get("quota", {}).items():
        verdict = "fits today" if fit["fits_today"] else f"needs {fit['days']} days"
        lines.append(f"  quota {endpoint}: needs {fit['needed']}, {fit['remain']} left "
                     f"today: {verdict}")
    lines += [f"  warning: {w}" for w in plan.get("warnings", [])]
    return "\n".join(lines)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except click.exceptions.Exit:
        raise
    except OSError as exc:  # broken pipe, unwritable file we did not anticipate
        _fail(str(exc), EXIT_USAGE)
