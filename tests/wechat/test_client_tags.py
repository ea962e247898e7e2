"""WeChatClient's tag methods against the real sandbox on 127.0.0.1: results and errcodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from batchmove.errors import DailyQuotaError, RowError, TransientError
from batchmove.models import Target
from batchmove.sandbox import RunningSandbox, SandboxConfig, running_sandbox, sandbox_openids
from batchmove.wechat.answers import Follower
from batchmove.wechat.client import FollowerPage, WeChatClient
from batchmove.wechat.token import SecretTokenSource

USERS = sandbox_openids(60)


@asynccontextmanager
async def tagged_sandbox(**config: Any) -> AsyncIterator[tuple[RunningSandbox, WeChatClient]]:
    settings = {"users": 60, "tags": ["甲", "乙"], **config}
    async with running_sandbox(SandboxConfig(**settings), host="127.0.0.1", port=0) as sb:
        source = SecretTokenSource(sb.state.appid, sb.state.secret)
        async with WeChatClient(sb.base_url, source) as client:
            yield sb, client


async def test_tag_management_round_trip() -> None:
    async with tagged_sandbox() as (sb, client):
        tags = await client.get_tags()
        assert tags == [Target(0, "未分组", 0), Target(1, "黑名单", 0), Target(2, "星标组", 0),
                        Target(100, "甲", 0), Target(101, "乙", 0)]
        created = await client.create_tag("高价值客户")
        assert created == Target(102, "高价值客户")
        await client.update_tag(created.id, "重要客户")
        assert sb.state.tags.tags[102].name == "重要客户"
        await client.tag_users(USERS[:3], created.id)
        assert Target(102, "重要客户", 3) in await client.get_tags()
        await client.delete_tag(created.id)
        assert [t.id for t in await client.get_tags()] == [0, 1, 2, 100, 101]
        assert await client.get_user_tags(USERS[0]) == []


async def test_tagging_untagging_and_reading_back() -> None:
    async with tagged_sandbox() as (sb, client):
        await client.tag_users(USERS[:50], 100)
        await client.tag_users(tuple(USERS[:50]), 100)  # idempotent; any sequence
        await client.tag_users([USERS[0]], 2)
        assert await client.get_user_tags(USERS[0]) == [2, 100]
        await client.untag_users(USERS[10:20], 100)
        await client.untag_users(USERS[10:20], 100)
        assert {t.id: t.count for t in await client.get_tags()}[100] == 40
        infos = await client.batch_get_user_info(USERS[9:11])
        assert [i.tagid_list for i in infos if isinstance(i, Follower)] == [[100], []]
        assert sb.state.tag_log[-1] == ("untag", USERS[19], 100)
        assert client.calls["tags/members/batchtagging"] == 3


async def test_tag_follower_paging() -> None:
    async with tagged_sandbox(page_size=4) as (_, client):
        await client.tag_users(USERS[::6], 101)  # 10 users
        page = await client.get_tag_followers(101)
        assert page == FollowerPage(0, USERS[0:24:6], USERS[18])
        assert await client.get_tag_followers(101, USERS[54]) == FollowerPage(0, [], "")
        assert [o async for o in client.iter_tag_followers(101)] == USERS[::6]
        assert [o async for o in client.iter_tag_followers(100)] == []
        assert client.calls["user/tag/get"] == 2 + 4 + 1  # pages of 4, 4, 2, then an empty one


Call = Callable[[WeChatClient], Awaitable[Any]]


@pytest.mark.parametrize(("action", "errcode"), [
    (lambda c: c.create_tag("甲"), 45157),
    (lambda c: c.create_tag(" "), 45157),
    (lambda c: c.create_tag("长" * 11), 45158),
    (lambda c: c.update_tag(999, "x"), 45159),
    (lambda c: c.update_tag(2, "x"), 45058),
    (lambda c: c.update_tag(101, "甲"), 45157),
    (lambda c: c.delete_tag(0), 45058),
    (lambda c: c.delete_tag(999), 45159),
    (lambda c: c.delete_tag(100), 45057),
    (lambda c: c.tag_users(USERS[:2], 999), 45159),
    (lambda c: c.tag_users(USERS[:2], 1), 45058),
    (lambda c: c.tag_users([USERS[0], "o-nobody"], 100), 40003),
    (lambda c: c.untag_users(["o-nobody"], 100), 40003),
    (lambda c: c.get_user_tags("o-nobody"), 40003),
    (lambda c: c.get_tag_followers(999), 45159),
    (lambda c: c.get_tag_followers(100, "o-nobody"), 40003),
])
async def test_errcodes_become_row_errors(action: Call, errcode: int) -> None:
    async with tagged_sandbox(tag_delete_limit=1) as (sb, client):
        sb.state.tag_directly(USERS[0], 100)
        sb.state.tag_directly(USERS[1], 100)
        with pytest.raises(RowError) as caught:
            await action(client)
        assert caught.value.errcode == errcode
        assert caught.value.errmsg
        assert caught.value.endpoint


async def test_too_many_tags_for_account_and_user() -> None:
    names = [f"t{i}" for i in range(20)]
    async with tagged_sandbox(tags=names, max_tags=21) as (sb, client):
        await client.create_tag("t20")
        with pytest.raises(RowError) as caught:
            await client.create_tag("t21")
        assert caught.value.errcode == 45056
        for tagid in range(100, 120):
            sb.state.tag_directly(USERS[0], tagid)
        with pytest.raises(RowError) as caught:
            await client.tag_users(USERS[:5], 120)
        assert caught.value.errcode == 45059
        assert [o async for o in client.iter_tag_followers(120)] == []


@pytest.mark.parametrize("method", ["tag_users", "untag_users"])
@pytest.mark.parametrize(("openids", "error"), [
    ([], ValueError), (USERS[:51], ValueError), ("o-a-string", TypeError),
])
async def test_bad_batches_refused_before_io(method: str, openids: Any,
                                             error: type[Exception]) -> None:
    async with tagged_sandbox() as (sb, client):
        with pytest.raises(error, match=method):
            await getattr(client, method)(openids, 100)
        assert not client.calls
        assert not sb.state.calls


async def test_tag_calls_share_the_error_translation() -> None:
    async with tagged_sandbox(daily_quota={"tags/get": 0}) as (sb, client):
        with pytest.raises(DailyQuotaError):
            await client.get_tags()
        sb.set_faults(error_rate=1.0, fault_endpoints=["tags/members/batchuntagging"])
        with pytest.raises(TransientError) as caught:
            await client.untag_users(USERS[:1], 100)
        assert caught.value.errcode == -1
        sb.set_faults(error_rate=0.0)
        sb.state.expire_tokens()  # the call refreshes its token and goes through
        await client.tag_users(USERS[:1], 100)
        assert await client.get_user_tags(USERS[0]) == [100]
        assert len(sb.state.issued_tokens) == 2
