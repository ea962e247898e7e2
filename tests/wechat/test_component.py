"""The component token source against the sandbox's platform imitation, over 127.0.0.1."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchmove.errors import FatalApiError, UsageError
from batchmove.models import Credentials
from batchmove.registry import Registry, SharedTokens, account_key
from batchmove.registry.platform import RegistryPlatformStore
from batchmove.sandbox import PlatformConfig, RunningSandbox, authorizer_appid, running_sandbox
from batchmove.sandbox.platform import DEFAULT_COMPONENT_APPID, DEFAULT_COMPONENT_SECRET
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.component import ComponentTokenSource
from batchmove.wechat.tickets import component_of, component_source

A, B, C = (authorizer_appid(i) for i in range(3))
ENV = {"WECHAT_COMPONENT_APPID": DEFAULT_COMPONENT_APPID,
       "WECHAT_COMPONENT_SECRET": DEFAULT_COMPONENT_SECRET}


@pytest.fixture
async def platform() -> AsyncIterator[RunningSandbox]:
    config = PlatformConfig(authorizers=3, account={"users": 30, "groups": ["A"]})
    async with running_sandbox(platform=config) as sb:
        yield sb


def plat(sb: RunningSandbox):  # type: ignore[no-untyped-def]
    assert sb.platform is not None
    return sb.platform


def ticket_file(tmp_path: Path, sb: RunningSandbox, age: float = 0.0) -> Path:
    path = tmp_path / "ticket.txt"
    path.write_text(plat(sb).latest_ticket + "\n")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def store_in(directory: Path) -> RegistryPlatformStore:
    """The machine's store in a registry of its own (a new one per "process")."""
    return RegistryPlatformStore(Registry(directory))


def account_tokens(sb: RunningSandbox, src: ComponentTokenSource,
                   directory: Path) -> SharedTokens:
    """The account's slot, as a run's client has it (`engine.backend`, `registry.account_of`)."""
    return SharedTokens(Registry(directory), account_key(
        sb.base_url, "component", src.component.appid, src.authorizer))


def forget_token(sb: RunningSandbox, appid: str, directory: Path) -> None:
    """The authorizer token cached for `appid` has expired (its slot is empty)."""
    account = account_key(sb.base_url, "component", DEFAULT_COMPONENT_APPID, appid)
    SharedTokens(Registry(directory), account).forget()


def source(tmp_path: Path, sb: RunningSandbox, appid: str = A,
           store: RegistryPlatformStore | None = None) -> ComponentTokenSource:
    creds = Credentials(component=True, ticket_file=str(ticket_file(tmp_path, sb)))
    return component_source(creds, appid, store or store_in(tmp_path / "state"), ENV)


async def groups_with(sb: RunningSandbox, src: ComponentTokenSource,
                      directory: Path | None = None) -> list[str]:
    """groups/get as a run's client sends it: the account's token cached in `directory`'s
    registry (the store's own), if any."""
    if directory is None and isinstance(src.component.store, RegistryPlatformStore):
        directory = src.component.store.registry.directory
    tokens = account_tokens(sb, src, directory) if directory is not None else None
    async with WeChatClient(sb.base_url, src, token_store=tokens) as client:
        return [g.name for g in await client.get_groups()]


async def test_first_run_seeds_refresh_tokens_from_the_authorizer_list(
        tmp_path: Path, platform: RunningSandbox) -> None:
    store = store_in(tmp_path / "state")
    assert store.authorizers(DEFAULT_COMPONENT_APPID) == []
    assert "A" in await groups_with(platform, source(tmp_path, platform, B, store))
    p = plat(platform)
    assert store.authorizers(DEFAULT_COMPONENT_APPID) == [A, B, C]
    assert p.calls["api_get_authorizer_list"] == 1
    assert (p.calls["api_component_token"], dict(p.authorizer_tokens)) == (1, {B: 1})
    # B's refresh token was rotated by the exchange, and the new one is what is stored
    assert store.refresh_token(DEFAULT_COMPONENT_APPID, B) == p.refresh_token_of(B)
    assert store.refresh_token(DEFAULT_COMPONENT_APPID, A) == p.refresh_token_of(A)
    assert (tmp_path / "state" / "registry.sqlite").stat().st_mode & 0o777 == 0o600


async def test_a_restart_reuses_the_stored_tokens_then_the_stored_refresh_token(
        tmp_path: Path, platform: RunningSandbox) -> None:
    await groups_with(platform, source(tmp_path, platform))
    p = plat(platform)
    # a new process: a new store object on the same directory, a new client
    await groups_with(platform, source(tmp_path, platform, store=store_in(tmp_path /
                                                                              "state")))
    assert (p.calls["api_component_token"], p.authorizer_tokens[A]) == (1, 1)
    # the cached authorizer token has expired: the stored (rotated) refresh token is used
    store = store_in(tmp_path / "state")
    forget_token(platform, A, tmp_path / "state")
    await groups_with(platform, source(tmp_path, platform, store=store))
    assert (p.authorizer_tokens[A], p.calls["api_get_authorizer_list"]) == (2, 1)
    assert store.refresh_token(DEFAULT_COMPONENT_APPID, A) == p.refresh_token_of(A)


async def test_an_authorizer_token_is_kept_once_in_the_accounts_own_slot(
        tmp_path: Path, platform: RunningSandbox) -> None:
    src = source(tmp_path, platform)
    await groups_with(platform, src)
    issued = set(plat(platform).accounts[A].state.issued_tokens)
    db = Registry(tmp_path / "state").conn
    rows = [(account, kind) for account, kind, value in db.execute(
        "SELECT account, kind, value FROM tokens") if value in issued]
    assert rows == [(account_tokens(platform, src, tmp_path / "state").account, "access")]
    assert not db.execute("SELECT 1 FROM tokens WHERE kind LIKE 'authorizer%'").fetchall()


async def test_a_refresh_token_rotated_elsewhere_is_found_again_in_the_list(
        tmp_path: Path, platform: RunningSandbox) -> None:
    store = store_in(tmp_path / "state")
    store.put_refresh_tokens(DEFAULT_COMPONENT_APPID, {A: "refreshtoken@@@stale"})
    await groups_with(platform, source(tmp_path, platform, store=store))
    assert store.refresh_token(DEFAULT_COMPONENT_APPID, A) == plat(platform).refresh_token_of(A)


async def test_a_revoked_account_is_one_clear_error(tmp_path: Path,
                                                    platform: RunningSandbox) -> None:
    await groups_with(platform, source(tmp_path, platform))
    plat(platform).revoke(A)
    store = store_in(tmp_path / "state")
    forget_token(platform, A, tmp_path / "state")
    with pytest.raises(FatalApiError, match="61003") as caught:
        await groups_with(platform, source(tmp_path, platform, store=store))
    assert caught.value.exit_code == 3


async def test_a_stale_ticket_is_never_sent_and_a_fresh_one_resumes(
        tmp_path: Path, platform: RunningSandbox) -> None:
    creds = Credentials(component=True, ticket_file=str(ticket_file(tmp_path, platform,
                                                                    age=13 * 3600)))
    store = store_in(tmp_path / "state")
    with pytest.raises(FatalApiError, match=r"is 13\.0 h old .*fresh ticket") as caught:
        await groups_with(platform, component_source(creds, A, store, ENV))
    assert (caught.value.errcode, caught.value.exit_code) == (61005, 3)
    assert plat(platform).calls["api_component_token"] == 0
    plat(platform).push_ticket()
    ticket_file(tmp_path, platform)  # the receiver writes the new one
    assert "A" in await groups_with(platform, component_source(creds, A, store, ENV))


async def test_wechat_refusing_the_ticket_is_one_clear_error(
        tmp_path: Path, platform: RunningSandbox) -> None:
    src = source(tmp_path, platform)
    plat(platform).expire_tickets()
    with pytest.raises(FatalApiError, match=r"61005.*refused the component_verify_ticket"):
        await groups_with(platform, src)


async def test_an_unlisted_ip_and_a_wrong_secret_stop_with_their_errcodes(
        tmp_path: Path, platform: RunningSandbox) -> None:
    plat(platform).ip_blocked = True
    with pytest.raises(FatalApiError, match="61004"):
        await groups_with(platform, source(tmp_path, platform))
    plat(platform).ip_blocked = False
    creds = Credentials(component=True, ticket_file=str(ticket_file(tmp_path, platform)))
    wrong = {**ENV, "WECHAT_COMPONENT_SECRET": "wrong"}
    with pytest.raises(FatalApiError, match=r"40125.*appid/secret"):
        await groups_with(platform, component_source(creds, A, store_in(tmp_path / "s2"),
                                                     wrong))


async def test_a_rejected_authorizer_token_is_refreshed_once(
        tmp_path: Path, platform: RunningSandbox) -> None:
    src = source(tmp_path, platform)
    async with WeChatClient(platform.base_url, src) as client:
        await client.get_groups()
        plat(platform).accounts[A].state.expire_tokens()
        await client.get_groups()
        assert client.tokens.refreshes == 1
    assert plat(platform).authorizer_tokens[A] == 2


async def test_two_platforms_never_share_a_cached_token(tmp_path: Path) -> None:
    other = PlatformConfig(authorizers=1, component_appid="wxcomponent000000002",
                           component_secret="second")
    store = store_in(tmp_path / "state")
    async with running_sandbox(platform=PlatformConfig(authorizers=1)) as one, \
            running_sandbox(platform=other) as two:
        await groups_with(one, source(tmp_path, one, store=store))
        creds = Credentials(component=True, ticket_file=str(ticket_file(tmp_path, two)))
        env = {"WECHAT_COMPONENT_APPID": other.component_appid,
               "WECHAT_COMPONENT_SECRET": "second"}
        await groups_with(two, component_source(creds, A, store, env))
        assert plat(two).calls["api_component_token"] == 1
        assert store.refresh_token(other.component_appid, A) == plat(two).refresh_token_of(A)
        assert store.refresh_token(DEFAULT_COMPONENT_APPID, A) == plat(one).refresh_token_of(A)


def test_missing_platform_credentials_or_account_are_usage_errors(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    with pytest.raises(UsageError, match="set WECHAT_COMPONENT_SECRET"):
        component_of(Credentials(component=True), store, {"WECHAT_COMPONENT_APPID": "wxc"})
    with pytest.raises(UsageError, match="--account"):
        component_source(Credentials(component=True), None, store, ENV)
