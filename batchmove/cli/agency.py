"""`batchmove accounts list|sync` and `batchmove ticket receive`: a third-party platform's
accounts and the receiver of WeChat's ticket pushes, a few lines each over the library."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from batchmove import api
from batchmove.cli.app import clear_errors, cli
from batchmove.errors import UsageError
from batchmove.flows.agency import as_rows
from batchmove.models import Credentials

TOKEN_ENV = "WECHAT_COMPONENT_TOKEN"
AES_KEY_ENV = "WECHAT_COMPONENT_AESKEY"


@cli.group("accounts")
def accounts_group() -> None:
    """The accounts that authorised a third-party platform ([credentials] component = true)."""


@accounts_group.command("list")
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@clear_errors
def list_command(job: str, as_json: bool) -> None:
    """Each authorizer of JOB's platform: appid, name and today's quota of the move calls."""
    infos = api.list_accounts(job)
    if as_json:
        click.echo(json.dumps(as_rows(infos), ensure_ascii=False))
        return
    for info in infos:
        quota = (f"{info.used:,} of {info.daily_limit:,} used today, {info.remain:,} left"
                 if info.daily_limit is not None else f"quota unknown: {info.problem}")
        click.echo(f"{info.appid}  {info.name}  {quota}")


@accounts_group.command("sync")
@click.argument("job", type=click.Path(dir_okay=False))
@clear_errors
def sync_command(job: str) -> None:
    """Store every authorizer's refresh token from WeChat's authorizer list (never printed)."""
    appids = api.sync_accounts(job)
    click.echo(f"{len(appids)} account(s) authorised the platform: {', '.join(appids)}")


@cli.group("ticket")
def ticket_group() -> None:
    """The component_verify_ticket WeChat pushes to a third-party platform every 10 minutes."""


@ticket_group.command("receive")
@click.option("--job", type=click.Path(dir_okay=False, exists=True),
              help="Take [credentials] (the component appid's variable) from a job file.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (behind the platform's HTTPS proxy).")
@click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True,
              help="0 = any free port.")
@click.option("--path", "url_path", default="/", show_default=True,
              help="The URL path WeChat pushes to.")
@click.option("--ticket-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write each ticket to this file (mode 600), for ticket_file jobs.")
@clear_errors
def receive_command(job: str | None, host: str, port: int, url_path: str,
                    ticket_file: Path | None) -> None:
    """Receive WeChat's pushes: check msg_signature, decrypt with the EncodingAESKey
    ($WECHAT_COMPONENT_AESKEY, message token $WECHAT_COMPONENT_TOKEN), answer `success`, and
    store each ticket with its time for every batchmove process of this machine."""
    from batchmove.registry.platform import RegistryPlatformStore
    from batchmove.wechat.msgcrypt import MsgCrypt
    from batchmove.wechat.receiver import Receiver, serve

    creds = api.job_spec(job).credentials if job else Credentials(component=True)
    values = {name: os.environ.get(name, "").strip()
              for name in (creds.component_appid_env, TOKEN_ENV, AES_KEY_ENV)}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise UsageError(f"ticket receive needs {' and '.join(missing)} in the environment")
    try:
        crypt = MsgCrypt(values[TOKEN_ENV], values[AES_KEY_ENV],
                         values[creds.component_appid_env])
    except ValueError as exc:
        raise UsageError(f"{AES_KEY_ENV}: {exc}") from None
    receiver = Receiver(crypt, RegistryPlatformStore(keep_open=False), ticket_file,
                        say=lambda line: click.echo(line))
    try:
        serve(receiver, host, port, url_path if url_path.startswith("/") else "/" + url_path)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
