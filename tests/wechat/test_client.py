"""WeChatClient against the real sandbox on 127.0.0.1: endpoints, errcodes, faults, refresh."""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiolimiter import AsyncLimiter

from batchmove.errors import (
    ApiError,
    DailyQuotaError,
    FatalApiError,
    MinuteQuotaError,
    RowError,
    TransientError,
)
from batchmove.models import Target
from batchmove.sandbox import RunningSandbox, SandboxConfig, running_sandbox, sandbox_openids
from batchmove.wechat.answers import Ack, Follower, GroupCreated
from batchmove.wechat.client import FollowerPage, Quota, WeChatClient
from batchmove.wechat.token import CommandTokenSource, EnvTokenSource, SecretTokenSource

Sandbox = RunningSandbox


@asynccontextmanager
async def sandbox_with(**config: Any) -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxConfig(**config), host="127.0.0.1", port=0) as sb:
        yield sb


def client_for(sb: Sandbox, source: Any = None, **kw: Any) -> WeChatClient:
    source = source or SecretTokenSource(sb.state.appid, sb.state.secret)
    return WeChatClient(sb.base_url, source, **kw)


async def expire_tokens(sb: Sandbox) -> None:
    """Through the admin endpoint, as an operator would."""
    async with aiohttp.ClientSession() as session, \
            session.post(f"{sb.base_url}/sandbox/expire_tokens") as resp:
        assert resp.status == 200


# -- endpoints ------------------------------------------------------------------------------


async def test_group_endpoints_round_trip() -> None:
    async with sandbox_with(users=10, groups=["老客户"]) as sb, client_for(sb) as client:
        groups = await client.get_groups()
        assert Target(0, "未分组", 10) in groups
        assert [g.name for g in groups if g.id >= 100] == ["老客户"]

        created = await client.create_group("新客户")
        assert created.name == "新客户"
        assert created.id > 100
        await client.update_group(created.id, "重要客户")
        assert sb.state.groups[created.id].name == "重要客户"

        users = sandbox_openids(10)
        await client.move_user(users[0], created.id)
        assert await client.get_user_group(users[0]) == created.id
        await client.move_users(users[1:], created.id)
        assert all(sb.state.members[o] == created.id for o in users)

        await client.delete_group(created.id)
        assert created.id not in {g.id for g in await client.get_groups()}
        assert sb.state.members[users[0]] == 0


async def test_followers_paging_and_user_info() -> None:
    async with sandbox_with(users=25, page_size=10) as sb, client_for(sb) as client:
        page = await client.get_followers()
        assert page == FollowerPage(25, sandbox_openids(25)[:10], sandbox_openids(25)[9])
        assert [o async for o in client.iter_followers()] == sandbox_openids(25)
        assert client.calls["user/get"] == 1 + 4  # 3 pages + the empty one that ends the list

        infos = await client.batch_get_user_info(sandbox_openids(25))
        assert [i.openid for i in infos] == sandbox_openids(25)
        assert {i.groupid for i in infos if isinstance(i, Follower)} == {0}
        assert all(isinstance(i, Follower) for i in infos)


async def test_quota_endpoints() -> None:
    async with sandbox_with(users=5) as sb, client_for(sb) as client:
        await client.get_groups()
        quota = await client.get_quota("groups/get")
        assert quota == Quota(daily_limit=1000, used=1, remain=999)
        assert await client.get_quota("/cgi-bin/groups/get") == Quota(1000, 1, 999)
        await client.clear_quota(sb.state.appid)
        assert (await client.get_quota("groups/get")).used == 0


async def test_call_sends_utf8_json_unescaped() -> None:
    async with sandbox_with(users=1) as sb, client_for(sb) as client:
        data = await client.call("POST", "groups/create", answer=GroupCreated,
                                 json={"group": {"name": "三十个字以内"}})
        assert data.group.name == "三十个字以内"


@pytest.mark.parametrize(
    ("method", "size"),
    [("move_users", 51), ("move_users", 0), ("batch_get_user_info", 101),
     ("batch_get_user_info", 0)],
)
async def test_oversized_batches_refused_before_any_io(method: str, size: int) -> None:
    async with sandbox_with(users=200) as sb, client_for(sb) as client:
        openids = sandbox_openids(size)
        call = (client.move_users(openids, 0) if method == "move_users"
                else client.batch_get_user_info(openids))
        with pytest.raises(ValueError, match="openid"):
            await call
        assert sum(client.calls.values()) == 0
        assert sum(sb.state.calls.values()) == 0


# -- errcodes -------------------------------------------------------------------------------


async def test_row_errors() -> None:
    async with sandbox_with(users=3) as sb, client_for(sb) as client:
        with pytest.raises(RowError) as bad_openid:
            await client.move_users([*sandbox_openids(2), "o-not-a-follower"], 0)
        assert bad_openid.value.errcode == 40003
        assert bad_openid.value.endpoint == "groups/members/batchupdate"
        with pytest.raises(RowError) as bad_group:
            await client.move_user(sandbox_openids(1)[0], 999)
        assert bad_group.value.errcode == 40050


async def test_daily_quota() -> None:
    async with sandbox_with(users=3, daily_quota={"groups/get": 1}) as sb, client_for(sb) as c:
        await c.get_groups()
        with pytest.raises(DailyQuotaError) as exc_info:
            await c.get_groups()
        assert exc_info.value.errcode == 45009


async def test_minute_quota() -> None:
    async with sandbox_with(users=3, minute_quota=2) as sb, client_for(sb) as client:
        await client.get_groups()  # the token fetch is the minute's other call
        with pytest.raises(MinuteQuotaError) as exc_info:
            await client.get_groups()
        assert exc_info.value.errcode == 45011


@pytest.mark.parametrize("kind", ["stable", "classic"])
async def test_wrong_appid_is_fatal(kind: Any) -> None:
    async with sandbox_with(users=1) as sb:
        source = SecretTokenSource("wx-wrong", sb.state.secret, kind)
        async with client_for(sb, source) as client:
            with pytest.raises(FatalApiError) as exc_info:
                await client.get_groups()
    assert exc_info.value.errcode == 40013
    assert sum(client.calls.values()) == 1


@pytest.mark.parametrize("kind", ["stable", "classic"])
async def test_wrong_secret_is_fatal_after_one_fetch(kind: Any) -> None:
    async with sandbox_with(users=1) as sb:
        source = SecretTokenSource(sb.state.appid, "wrong-secret-123", kind)
        async with client_for(sb, source) as client:
            with pytest.raises(FatalApiError, match="secret") as exc_info:
                await client.get_groups()
    assert exc_info.value.errcode == 40001
    assert "wrong-secret-123" not in str(exc_info.value)
    assert dict(client.calls) == {"stable_token" if kind == "stable" else "token": 1}


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"error_rate": 1.0}, "system error"),
        ({"http_error_rate": 1.0}, "HTTP 50"),
        ({"drop_rate": 1.0}, "closed the connection"),
        ({"hang_rate": 1.0}, "no answer within 0.3s"),
    ],
)
async def test_transient_failures(faults: dict[str, float], message: str) -> None:
    async with sandbox_with(users=3) as sb, client_for(sb, timeout=0.3) as client:
        await client.get_groups()  # token fetched before the faults start
        sb.set_faults(**faults)
        with pytest.raises(TransientError, match=message) as exc_info:
            await client.get_groups()
    assert exc_info.value.endpoint == "groups/get"
    printed = "".join(traceback.format_exception(exc_info.value))
    assert "access_token" not in printed  # the URL (and its token) never reaches a traceback
    assert not any(token in printed for token in sb.state.issued_tokens)


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = SecretTokenSource("wxapp", "the-secret")
    async with WeChatClient(f"http://127.0.0.1:{port}", source, timeout=2) as client:
        with pytest.raises(TransientError, match="cannot connect") as exc_info:
            await client.get_groups()
    assert exc_info.value.endpoint == "stable_token"
    assert "the-secret" not in str(exc_info.value)


async def test_unknown_endpoint_http_404_is_fatal() -> None:
    async with sandbox_with(users=1) as sb, client_for(sb) as client:
        with pytest.raises(FatalApiError, match="HTTP 404"):
            await client.call("GET", "no/such/endpoint", answer=Ack)


# -- tokens ---------------------------------------------------------------------------------


async def test_token_expiry_mid_use_refreshes_once() -> None:
    async with sandbox_with(users=3) as sb, client_for(sb) as client:
        await client.get_groups()
        await expire_tokens(sb)
        assert len(await client.get_groups()) == 3
        assert client.calls["stable_token"] == 2
        assert client.calls["groups/get"] == 3  # ok, 42001, ok
        assert client.tokens.refreshes == 1


async def test_token_expiring_on_the_server_clock_is_refreshed_once(
        sandbox_factory: Any, fake_clock: Any) -> None:
    sb = await sandbox_factory(SandboxConfig(users=3), clock=fake_clock)
    async with client_for(sb) as client:
        await client.get_groups()
        fake_clock.advance(7201)  # expired for WeChat, still fresh on our own clock
        assert len(await client.get_groups()) == 3
        assert dict(client.calls) == {"stable_token": 2, "groups/get": 3}
        assert client.tokens.refreshes == 1


async def test_fifty_concurrent_calls_share_one_refresh() -> None:
    async with sandbox_with(users=3) as sb, client_for(sb) as client:
        await client.get_groups()
        await expire_tokens(sb)
        before = sb.state.calls["stable_token"]
        results = await asyncio.gather(*(client.get_groups() for _ in range(50)))
        assert all(len(r) == 3 for r in results)
        assert sb.state.calls["stable_token"] - before == 1
        assert client.tokens.refreshes == 1


async def test_fifty_concurrent_first_calls_fetch_one_token() -> None:
    async with sandbox_with(users=3) as sb, client_for(sb) as client:
        await asyncio.gather(*(client.get_groups() for _ in range(50)))
        assert sb.state.calls["stable_token"] == 1


async def test_bad_external_token_is_fatal_without_fetching(monkeypatch: Any) -> None:
    monkeypatch.setenv("WECHAT_ACCESS_TOKEN", "not-a-real-token")
    async with sandbox_with(users=1) as sb, client_for(sb, EnvTokenSource()) as client:
        with pytest.raises(FatalApiError, match=r"\$WECHAT_ACCESS_TOKEN was rejected") as e:
            await client.get_groups()
    assert "has no newer one" in str(e.value)
    assert dict(client.calls) == {"groups/get": 1}


async def test_source_handing_new_bad_tokens_stops_after_bounded_tries() -> None:
    """A token server that hands out a new bad token each time: no loop (wechatpy did 138)."""
    command = 'python3 -c "import uuid; print(uuid.uuid4())"'
    async with sandbox_with(users=1) as sb, client_for(sb, CommandTokenSource(command)) as c:
        with pytest.raises(FatalApiError, match="rejected again"):
            await c.get_groups()
        assert c.tokens.fetches == 2
        assert dict(c.calls) == {"groups/get": 2}
        with pytest.raises(FatalApiError):  # later calls stay bounded too
            await c.get_groups()
        assert c.tokens.fetches <= 3


async def test_max_refreshes_bounds_the_run() -> None:
    async with sandbox_with(users=1) as sb, client_for(sb, max_refreshes=2) as client:
        await client.get_groups()
        for _ in range(2):
            await expire_tokens(sb)
            await client.get_groups()
        await expire_tokens(sb)
        with pytest.raises(FatalApiError, match="max_refreshes=2"):
            await client.get_groups()
        assert client.calls["stable_token"] == 3


async def test_limiter_covers_every_attempt_including_token_fetches() -> None:
    class CountingLimiter(AsyncLimiter):
        acquired = 0

        async def acquire(self, amount: float = 1) -> None:
            CountingLimiter.acquired += 1
            await super().acquire(amount)

    limiter = CountingLimiter(1000, 1)
    async with sandbox_with(users=3) as sb, client_for(sb, limiter=limiter) as client:
        await client.get_groups()
        await expire_tokens(sb)
        await asyncio.gather(*(client.get_groups() for _ in range(5)))
        assert client.calls["stable_token"] == 2
        assert limiter.acquired == sum(client.calls.values()) == sum(sb.state.calls.values())


# -- secrets --------------------------------------------------------------------------------


async def test_no_secret_or_token_leaks(caplog: Any, capsys: Any) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def record(exc: BaseException) -> None:
        seen.extend([str(exc), repr(exc)])
        seen.extend(str(a) for a in exc.args)
        if isinstance(exc, ApiError):
            seen.append(exc.errmsg)

    async with sandbox_with(users=5, seed=3) as sb, client_for(sb, timeout=0.3) as client:
        seen.extend([repr(client), repr(client.tokens), repr(client.tokens.source)])
        await client.get_groups()
        for faults in ({"error_rate": 1.0}, {"http_error_rate": 1.0}, {"drop_rate": 1.0},
                       {"hang_rate": 1.0}, {"error_rate": 0.3, "drop_rate": 0.3}):
            sb.set_faults(**{"error_rate": 0.0, "drop_rate": 0.0, **faults})
            for _ in range(3):
                try:
                    await client.move_user("o-bad", 0)
                except ApiError as exc:
                    record(exc)
            sb.set_faults(error_rate=0, http_error_rate=0, drop_rate=0, hang_rate=0)
        await expire_tokens(sb)
        await client.get_groups()
        for source in (SecretTokenSource(sb.state.appid, "nope-" + sb.state.secret),
                       SecretTokenSource(sb.state.appid, sb.state.secret, "classic")):
            async with client_for(sb, source) as other:
                seen.append(repr(other))
                try:
                    await other.get_groups()
                    await expire_tokens(sb)
                    await other.call("GET", "no/such/endpoint", answer=Ack)
                except ApiError as exc:
                    record(exc)
        issued = list(sb.state.issued_tokens)
        secret = sb.state.secret
    assert len(issued) >= 3
    assert len(seen) > 20
    captured = capsys.readouterr()
    haystack = "\n".join([*seen, caplog.text, captured.out, captured.err])
    assert secret not in haystack
    for token in issued:
        assert token not in haystack
