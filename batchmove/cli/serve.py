"""`batchmove serve`: the web console a team shares, until Ctrl-C (see docs/console.md);
`batchmove serve adduser`: a person of its users file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from batchmove.cli.app import clear_errors, cli
from batchmove.cli.logs import JsonLog, json_errors, log_format_option, log_to_json
from batchmove.errors import UsageError

_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@cli.group("serve", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8700, show_default=True, help="0 = any free port.")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True,
              help="Where run directories live (the CLI's runs there are shown too).")
@click.option("--jobs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder of .toml job files the page offers to plan.")
@click.option("--defaults", type=_FILE, default=None,
              help="Job keys applied to uploads (api_base, rate, [credentials]).")
@click.option("--users", type=_FILE, default=None,
              help="People and roles (written by `batchmove serve adduser`); default: one key.")
@click.option("--key-env", default=None, metavar="NAME",
              help="Take the access key from this environment variable (default: random).")
@click.option("--public-url", multiple=True, metavar="URL",
              help="An address colleagues use (its host is accepted in Host); repeatable.")
@click.option("--certfile", type=_FILE, default=None, help="TLS certificate (PEM).")
@click.option("--keyfile", type=_FILE, default=None, help="TLS private key (PEM).")
@click.option("--max-upload-mb", type=int, default=200, show_default=True,
              help="Largest upload accepted (413 beyond).")
@click.option("--allow-non-loopback", is_flag=True, help="Allow listening on a non-loopback "
              "address (anyone who can reach it and signs in can move followers).")
@log_format_option
@click.pass_context
@clear_errors
@json_errors
def serve_command(ctx: click.Context, host: str, port: int, workspace: Path,
                  jobs: Path | None, defaults: Path | None, users: Path | None,
                  key_env: str | None, public_url: tuple[str, ...], certfile: Path | None,
                  keyfile: Path | None, max_upload_mb: int, allow_non_loopback: bool,
                  log_format: str) -> None:
    """Serve the web console: upload, plan, approve, watch, download, roll back."""
    if ctx.invoked_subcommand is not None:
        return
    from batchmove.console import ConsoleConfig, read_defaults, read_people, serve, tls_context
    from batchmove.console.security import console_key, public_host
    from batchmove.sandbox import is_loopback

    _check(host, port, max_upload_mb, allow_non_loopback, certfile, keyfile)
    for url in public_url:
        public_host(url)  # a bad one fails before listening
    people = read_people(users) if users is not None else None
    key = console_key(key_env) if people is None else None
    read_defaults(defaults)  # a bad defaults file fails before listening
    tls = tls_context(certfile, keyfile) if certfile and keyfile else None
    if tls is None and not is_loopback(host):
        click.echo("batchmove: warning: serving plain HTTP beyond this machine: secrets and "
                   "session cookies cross the network readable; use --certfile/--keyfile",
                   err=True)
    workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = ConsoleConfig(workspace=workspace.resolve(), jobs=jobs.resolve() if jobs else None,
                           defaults_path=defaults.resolve() if defaults else None,
                           max_upload=max_upload_mb << 20, host=host, port=port,
                           four_eyes=bool(people and people.four_eyes),
                           public_urls=public_url)
    log = JsonLog("console") if log_format == "json" else None
    if log is not None:  # requests as JSON lines on stderr
        log_to_json(log, "batchmove.console")

    def announce(line: str) -> None:
        """The address (with its key) goes to stdout either way: whoever started the console
        needs it, and a JSON log (which redacts keys) could not carry it."""
        click.echo(line)
        if log is not None:
            log.emit("console_ready", url=line.removeprefix("console on ").split("?")[0])

    try:
        asyncio.run(serve(config, key, announce, people=people, tls=tls))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _check(host: str, port: int, max_upload_mb: int, allow_non_loopback: bool,
           certfile: Path | None, keyfile: Path | None) -> None:
    from batchmove.sandbox import is_loopback

    if not is_loopback(host) and not allow_non_loopback:
        raise UsageError(f"refusing to listen on non-loopback address {host} "
                         "(use --allow-non-loopback to expose the console)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    if max_upload_mb < 1:
        raise UsageError(f"--max-upload-mb must be >= 1, got {max_upload_mb}")
    if (certfile is None) != (keyfile is None):
        raise UsageError("--certfile and --keyfile go together")


@serve_command.command("adduser")
@click.argument("name")
@click.option("--role", type=click.Choice(["submitter", "approver", "admin"]), required=True,
              help="submitter (upload, plan, watch, download), approver (also approve, stop, "
                   "resume, verify, roll back), admin (also settings).")
@click.option("--users", "users_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("users.toml"), show_default=True, help="The users file to write.")
@click.option("--secret-env", default=None, metavar="NAME",
              help="Take the secret from this environment variable (default: a new random "
                   "one, printed once).")
@click.option("--four-eyes/--no-four-eyes", default=None,
              help="Set the file's rule: a plan is approved by someone other than its "
                   "submitter.")
@clear_errors
def adduser_command(name: str, role: str, users_file: Path, secret_env: str | None,
                    four_eyes: bool | None) -> None:
    """Add a person to the console's users file (or replace their role and secret)."""
    from batchmove.console import add_person

    given = None
    if secret_env is not None:
        given = os.environ.get(secret_env)
        if not given:
            raise UsageError(f"--secret-env {secret_env}: the variable is not set")
    secret = add_person(users_file, name, role, given, four_eyes)
    click.echo(f"{name} ({role}) is in {users_file}")
    if given is None:
        click.echo(f"secret for {name} (shown once; give it to them): {secret}")
