"""`batchmove serve`: the web console for analysts, until Ctrl-C (see docs/console.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from batchmove.cli.app import clear_errors, cli
from batchmove.cli.logs import JsonLog, json_errors, log_format_option, log_to_json
from batchmove.errors import UsageError


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8700, show_default=True, help="0 = any free port.")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True,
              help="Where run directories live (the CLI's runs there are shown too).")
@click.option("--jobs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder of .toml job files the page offers to plan.")
@click.option("--defaults", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Job keys applied to uploads (api_base, rate, [credentials]).")
@click.option("--key-env", default=None, metavar="NAME",
              help="Take the access key from this environment variable (default: random).")
@click.option("--max-upload-mb", type=int, default=200, show_default=True,
              help="Largest upload accepted (413 beyond).")
@click.option("--allow-non-loopback", is_flag=True, help="Allow listening on a non-loopback "
              "address (anyone who can reach it and has the key can move followers).")
@log_format_option
@clear_errors
@json_errors
def serve_command(host: str, port: int, workspace: Path, jobs: Path | None,
                  defaults: Path | None, key_env: str | None, max_upload_mb: int,
                  allow_non_loopback: bool, log_format: str) -> None:
    """Serve the web console: upload, plan, approve, watch, download, roll back."""
    from batchmove.console import ConsoleConfig, read_defaults, serve
    from batchmove.console.security import console_key
    from batchmove.sandbox import is_loopback

    if not is_loopback(host) and not allow_non_loopback:
        raise UsageError(f"refusing to listen on non-loopback address {host} "
                         "(use --allow-non-loopback to expose the console)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    if max_upload_mb < 1:
        raise UsageError(f"--max-upload-mb must be >= 1, got {max_upload_mb}")
    key = console_key(key_env)
    read_defaults(defaults)  # a bad defaults file fails before listening
    workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = ConsoleConfig(workspace=workspace.resolve(), jobs=jobs.resolve() if jobs else None,
                           defaults_path=defaults.resolve() if defaults else None,
                           max_upload=max_upload_mb << 20, host=host, port=port)
    log = JsonLog("console") if log_format == "json" else None
    if log is not None:  # requests as JSON lines on stderr
        log_to_json(log, "batchmove.console")

    def announce(line: str) -> None:
        """The address with its key goes to stdout either way: whoever started the console
        needs it, and a JSON log (which redacts keys) could not carry it."""
        click.echo(line)
        if log is not None:
            log.emit("console_ready", url=line.removeprefix("console on ").split("?")[0])

    try:
        asyncio.run(serve(config, key, announce))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
