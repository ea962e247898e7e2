"""Where the latest `component_verify_ticket` comes from, and the component source's factory.

The agency's own receiver writes it to a file (`ticket_file`: its text is the ticket, its
modification time when it arrived) or hands it out through a command (`ticket_command`: stdout
is the ticket, its age unknown); without either, the machine's `PlatformStore`, where
`batchmove ticket receive` keeps each pushed ticket with its time. A ticket is a credential:
it never enters a message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchmove.errors import FatalApiError, UsageError
from batchmove.models import Credentials
from batchmove.wechat.component import ComponentClient, ComponentTokenSource, PlatformStore
from batchmove.wechat.token import CommandTokenSource

_ENDPOINT = "component/api_component_token"


class FileTicket:
    """A file the agency's receiver rewrites with each push; its mtime is the push's time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def describe(self) -> str:
        return f"the ticket file {str(self.path)!r}"

    async def read(self) -> tuple[str, float | None]:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
            pushed_at = self.path.stat().st_mtime
        except (OSError, UnicodeDecodeError) as exc:
            raise FatalApiError(None, f"cannot read {self.describe}: "
                                f"{getattr(exc, 'strerror', None) or type(exc).__name__}",
                                _ENDPOINT) from None
        if not text:
            raise FatalApiError(None, f"{self.describe} is empty", _ENDPOINT)
        return text, pushed_at


class CommandTicket(CommandTokenSource):
    """A command whose stdout is the latest ticket (its age is not known)."""

    @property
    def describe(self) -> str:
        return f"the ticket command {self.name!r}"

    async def read(self) -> tuple[str, float | None]:
        token = await self.fetch(_no_http)
        return token.value, None


async def _no_http(*_: Any, **__: Any) -> Any:
    raise AssertionError("a ticket command makes no API call")  # pragma: no cover


class StoreTicket:
    """The ticket `batchmove ticket receive` stored last, with the time it arrived."""

    def __init__(self, store: PlatformStore, component_appid: str) -> None:
        self.store = store
        self.component_appid = component_appid

    @property
    def describe(self) -> str:
        return f"the ticket store ({self.store.where})"

    async def read(self) -> tuple[str, float | None]:
        found = self.store.ticket(self.component_appid)
        if found is None:
            raise FatalApiError(61006, (
                f"no component_verify_ticket has been received for {self.component_appid} "
                f"({self.store.where}): run `batchmove ticket receive` (or set ticket_file / "
                "ticket_command in [credentials]) and run the same command again once WeChat "
                "has pushed one"), _ENDPOINT)
        return found


def component_of(creds: Credentials, store: PlatformStore,
                 environ: Mapping[str, str] = os.environ) -> ComponentClient:
    """The job's platform: appid and secret from the environment, its ticket source."""
    appid = environ.get(creds.component_appid_env, "").strip()
    secret = environ.get(creds.component_secret_env, "").strip()
    if not appid or not secret:
        missing = [v for v, x in ((creds.component_appid_env, appid),
                                  (creds.component_secret_env, secret)) if not x]
        raise UsageError(f"no third-party platform credentials: set {' and '.join(missing)} "
                         "([credentials] component = true)")
    ticket: FileTicket | CommandTicket | StoreTicket
    if creds.ticket_command:
        ticket = CommandTicket(creds.ticket_command)
    elif creds.ticket_file:
        ticket = FileTicket(Path(creds.ticket_file))
    else:
        ticket = StoreTicket(store, appid)
    return ComponentClient(appid, secret, ticket, store)


def component_source(creds: Credentials, account: str | None, store: PlatformStore,
                     environ: Mapping[str, str] = os.environ) -> ComponentTokenSource:
    """The token source of one authorizer account of the job's platform."""
    if not account:
        raise UsageError("a job with [credentials] component = true moves one of the "
                         "platform's accounts: name them with accounts = [\"wx...\"] (or "
                         "\"all\") in the job file, or give --account APPID")
    return ComponentTokenSource(component_of(creds, store, environ), account)
