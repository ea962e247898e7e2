"""Agencies: the accounts of a third-party platform, and one job run for several of them.

- `sync_accounts`: every authorizer's refresh token from `api_get_authorizer_list` into the
  machine's platform store (a first run seeds them by itself; this re-seeds on demand).
- `list_accounts`: the authorizers, each with its name and today's quota of the job's move
  endpoint, through that account's own (cached) authorizer token.
- `accounts_of`: the appids a job names (`accounts = [...]`, or `"all"`: every authorizer in
  the store), synced first when the store lacks a refresh token of one of them, so the
  accounts' processes never each read WeChat's list at once.
- `check_input`, `check_one`: an input with an `appid` column names no account the job does
  not move (a run of one account reads its own rows of it, with their row numbers:
  `intake.loader`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from batchmove.engine.backend import client_for, make_limiter
from batchmove.errors import ApiError, UsageError
from batchmove.intake import loader
from batchmove.models import JobSpec
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.token import TokenSource

if TYPE_CHECKING:  # the platform's client (and its crypto) is imported when an agency job runs
    from batchmove.wechat.component import ComponentClient

_MOVE_PATH = {"groups": "/cgi-bin/groups/members/batchupdate",
              "tags": "/cgi-bin/tags/members/batchtagging"}


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """One authorised account: its appid, name, and today's quota of the move endpoint (None
    where WeChat refused to say, `problem` telling why)."""

    appid: str
    name: str
    daily_limit: int | None = None
    used: int | None = None
    remain: int | None = None
    problem: str = ""


def _need_component(spec: JobSpec) -> None:
    if not spec.credentials.component:
        raise UsageError("this needs a third-party platform job ([credentials] component = "
                         "true)")


async def sync_accounts(spec: JobSpec) -> list[str]:
    """Seed the store with every authorizer's refresh token; the appids, sorted."""
    _need_component(spec)
    component = _component(spec)
    async with _client(spec, _NoToken()) as client:
        tokens = await component.seed(client.raw)
    return sorted(tokens)


async def list_accounts(spec: JobSpec) -> list[AccountInfo]:
    """The authorizers (synced first when the store holds none) with names and quotas."""
    appids = await accounts_of(spec, every=True)
    return [await _info(spec, appid) for appid in appids]


async def _info(spec: JobSpec, appid: str) -> AccountInfo:
    """One account's name and quota, through the client a run of it would have (its token
    cached in the account's slot of the registry, its rate shared)."""
    _need_real_base(spec)
    async with client_for(spec.with_overrides(account=appid)) as client:
        source = client.tokens.source
        from batchmove.wechat.component import ComponentTokenSource

        assert isinstance(source, ComponentTokenSource)
        name = await source.component.authorizer_name(client.raw, appid)
        try:
            quota = await client.get_quota(_MOVE_PATH[spec.backend])
        except ApiError as exc:
            return AccountInfo(appid, name, problem=exc.message)
    return AccountInfo(appid, name, quota.daily_limit, quota.used, quota.remain)


def _component(spec: JobSpec) -> ComponentClient:
    from batchmove.registry.platform import RegistryPlatformStore
    from batchmove.wechat.tickets import component_of

    return component_of(spec.credentials, RegistryPlatformStore())


async def accounts_of(spec: JobSpec, *, every: bool = False) -> list[str]:
    """The appids the job moves (every authorizer with `every` or `accounts = "all"`)."""
    _need_component(spec)
    every = every or spec.accounts == "all"
    if spec.account and not every:
        return [spec.account]
    if not spec.accounts and not every:
        raise UsageError("the job names no accounts: set accounts = [\"wx...\"] or "
                         "accounts = \"all\" (or give --account APPID)")
    component = _component(spec)
    found = component.store.authorizers(component.appid)
    if every:
        return found or await sync_accounts(spec)
    named = list(dict.fromkeys(spec.accounts))
    if set(named) - set(found):  # seeded once here, not by each account's process
        await sync_accounts(spec)
    return named


def check_one(spec: JobSpec) -> JobSpec:
    """The spec, once checked: a job naming one account (`accounts = ["wx..."]`, no
    `--account`) moves all of its input, so an `appid` column names that account only."""
    if spec.credentials.component and spec.account is None and spec.single_account \
            and spec.select is None:
        check_input(spec, [spec.single_account])
    return spec


def check_input(spec: JobSpec, appids: Sequence[str]) -> set[str] | None:
    """An input with an `appid` column names only accounts the job moves, in every row (each
    account's run then reads its own rows: `intake.loader`); the appids it names (None: it
    has no such column, every account moves all of it)."""
    found = loader.open_input(spec).appids()
    unknown = sorted((found or set()) - set(appids))
    if unknown:
        raise UsageError(f"{spec.input}: the appid column names account(s) the job does not "
                         f"move: {', '.join(unknown[:5])}")
    return found


def as_rows(infos: Sequence[AccountInfo]) -> list[dict[str, Any]]:
    return [asdict(info) for info in infos]


class _NoToken(TokenSource):
    """Component endpoints carry the component token, never an account's."""

    @property
    def describe(self) -> str:
        return "no account token (component endpoints only)"

    async def fetch(self, http: Any, *, force: bool = False) -> Any:
        raise UsageError("component endpoints need no account token")  # pragma: no cover


def _need_real_base(spec: JobSpec) -> None:
    if spec.api_base == "sandbox":
        raise UsageError('accounts of a platform need a real api_base (or a `batchmove sandbox '
                         '--platform N` address), not the embedded "sandbox"')


def _client(spec: JobSpec, source: TokenSource) -> WeChatClient:
    _need_real_base(spec)
    rate = 0.0 if spec.auto_rate else float(spec.rate)  # a few calls: no shared gate needed
    return WeChatClient(spec.api_base, source, timeout=spec.timeout, limiter=make_limiter(rate))
