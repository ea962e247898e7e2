"""Every WeChat answer is checked at the client boundary: against a sandbox behind the fault
server, each endpoint batchmove uses answers without a field it must return, or with the field
of the wrong type, and the client raises `ProtocolError` naming the endpoint and the field."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest

from batchmove.errors import (
    ApiError,
    MinuteQuotaError,
    OutcomeUnknownError,
    ProtocolError,
    TransientError,
)
from batchmove.sandbox import SandboxConfig, sandbox_openids
from batchmove.wechat import answers, component
from batchmove.wechat.answers import Follower, NotFollower
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.token import SecretTokenSource
from tests.support.faultserver import Fault, RunningFaults, running_fault_server

USERS = sandbox_openids(5)
Call = Callable[[WeChatClient], Awaitable[Any]]


@asynccontextmanager
async def faulty(*faults: Fault, kind: str = "stable",
                 wait: float = 5.0) -> AsyncIterator[tuple[RunningFaults, WeChatClient]]:
    async with running_fault_server(SandboxConfig(users=5, groups=("老客户",))) as fs:
        state = fs.sandbox.state
        source = SecretTokenSource(state.appid, state.secret, kind)  # type: ignore[arg-type]
        async with WeChatClient(fs.base_url, source, timeout=wait) as client:
            fs.set(*faults)
            yield fs, client


# (what the client is asked, the endpoint, the field made wrong, how, the field reported)
CASES: list[tuple[str, Call, str, str, str, str]] = [
    ("groups", lambda c: c.get_groups(), "groups/get", "groups", "drop", "groups"),
    ("group id", lambda c: c.get_groups(), "groups/get", "groups[*].id", "retype",
     "groups[0].id"),
    ("group count", lambda c: c.get_groups(), "groups/get", "groups[*].count", "drop",
     "groups[0].count"),
    ("created id", lambda c: c.create_group("新组"), "groups/create", "group.id", "drop",
     "group.id"),
    ("created", lambda c: c.create_group("新组"), "groups/create", "group", "retype", "group"),
    ("getid", lambda c: c.get_user_group(USERS[0]), "groups/getid", "groupid", "retype",
     "groupid"),
    ("update", lambda c: c.update_group(100, "改名"), "groups/update", "errcode", "drop",
     "errcode"),
    ("delete", lambda c: c.delete_group(100), "groups/delete", "errcode", "retype", "errcode"),
    ("move one", lambda c: c.move_user(USERS[0], 100), "groups/members/update", "errcode",
     "drop", "errcode"),
    ("move", lambda c: c.move_users(USERS, 100), "groups/members/batchupdate", "errcode",
     "drop", "errcode"),
    ("tags", lambda c: c.get_tags(), "tags/get", "tags", "drop", "tags"),
    ("tag name", lambda c: c.get_tags(), "tags/get", "tags[*].name", "retype", "tags[0].name"),
    ("tag created", lambda c: c.create_tag("新标签"), "tags/create", "tag.id", "retype",
     "tag.id"),
    ("tag update", lambda c: c.update_tag(2, "星标"), "tags/update", "errcode", "drop",
     "errcode"),
    ("tag delete", lambda c: c.delete_tag(2), "tags/delete", "errcode", "drop", "errcode"),
    ("tagging", lambda c: c.tag_users(USERS, 2), "tags/members/batchtagging", "errcode",
     "drop", "errcode"),
    ("untagging", lambda c: c.untag_users(USERS, 2), "tags/members/batchuntagging", "errcode",
     "drop", "errcode"),
    ("tag ids", lambda c: c.get_user_tags(USERS[0]), "tags/getidlist", "tagid_list", "retype",
     "tagid_list"),
    ("tag members", lambda c: c.get_tag_followers(2), "user/tag/get", "next_openid", "drop",
     "next_openid"),
    ("tag member count", lambda c: c.get_tag_followers(2), "user/tag/get", "count", "retype",
     "count"),
    ("followers", lambda c: c.get_followers(), "user/get", "data.openid", "retype",
     "data.openid"),
    ("follower total", lambda c: c.get_followers(), "user/get", "total", "drop", "total"),
    ("cursor", lambda c: c.get_followers(), "user/get", "next_openid", "retype",
     "next_openid"),
    ("user list", lambda c: c.batch_get_user_info(USERS), "user/info/batchget",
     "user_info_list", "drop", "user_info_list"),
    ("groupid", lambda c: c.batch_get_user_info(USERS), "user/info/batchget",
     "user_info_list[*].groupid", "drop", "user_info_list[0].groupid"),
    ("tagid_list", lambda c: c.batch_get_user_info(USERS), "user/info/batchget",
     "user_info_list[*].tagid_list", "retype", "user_info_list[0].tagid_list"),
    ("subscribe", lambda c: c.batch_get_user_info(USERS), "user/info/batchget",
     "user_info_list[*].subscribe", "drop", "user_info_list[0].subscribe"),
    ("a user left out", lambda c: c.batch_get_user_info(USERS), "user/info/batchget",
     "user_info_list[2]", "drop", "user_info_list"),
    ("quota", lambda c: c.get_quota("groups/get"), "openapi/quota/get", "quota.remain", "drop",
     "quota.remain"),
    ("quota type", lambda c: c.get_quota("groups/get"), "openapi/quota/get", "quota",
     "retype", "quota"),
    ("clear quota", lambda c: c.clear_quota("wx"), "clear_quota", "errcode", "drop", "errcode"),
    ("stable token", lambda c: c.get_groups(), "stable_token", "access_token", "drop",
     "access_token"),
    ("stable expiry", lambda c: c.get_groups(), "stable_token", "expires_in", "retype",
     "expires_in"),
]


@pytest.mark.parametrize(("call", "endpoint", "path", "kind", "reported"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
async def test_a_missing_or_mistyped_field_is_a_protocol_error_naming_it(
        call: Call, endpoint: str, path: str, kind: str, reported: str) -> None:
    async with faulty(Fault(endpoint, kind, path)) as (fs, client):  # type: ignore[arg-type]
        with pytest.raises(ProtocolError) as caught:
            await call(client)
        assert fs.state.faults[0].fired == 1
    error = caught.value
    assert (error.endpoint, error.field) == (endpoint, reported)
    assert str(error).startswith(f"unexpected answer from {endpoint}: `{reported}` ")
    assert isinstance(error, OutcomeUnknownError | TransientError)  # retried, may be applied
    assert error.exit_code == 3


async def test_the_classic_token_endpoint_is_checked_too() -> None:
    async with faulty(Fault("token", "drop", "access_token"), kind="classic") as (_, client):
        with pytest.raises(ProtocolError, match="from token: `access_token` is missing"):
            await client.get_groups()


async def test_every_endpoint_answers_well_through_the_fault_server_without_faults() -> None:
    """The same calls, no fault: each answer passes (the checks hold against the sandbox)."""
    async with faulty() as (fs, client):
        await client.get_groups()
        group = await client.create_group("新组")
        await client.move_users(USERS, group.id)
        assert await client.get_user_group(USERS[0]) == group.id
        await client.tag_users(USERS, 2)
        assert await client.get_user_tags(USERS[0]) == [2]
        assert len((await client.get_tag_followers(2)).openids) == 5
        assert (await client.get_followers()).openids == USERS
        assert (await client.get_quota("groups/get")).used == 1
        assert fs.state.calls["groups/members/batchupdate"] == 1


async def test_a_non_follower_is_an_answer_about_the_user_not_a_fault() -> None:
    async with faulty() as (_, client):
        infos = await client.batch_get_user_info([USERS[0], "oNotAFollowerOfThisAccount000"])
    assert isinstance(infos[0], Follower)
    assert infos[1] == NotFollower("oNotAFollowerOfThisAccount000")


@pytest.mark.parametrize(("fault", "kind", "text"), [
    (Fault("groups/get", "html"), ProtocolError, "`(body)`|not a JSON object .*text/html"),
    (Fault("groups/members/batchupdate", "cut"), OutcomeUnknownError, "cut off"),
    (Fault("groups/members/batchupdate", "hang"), OutcomeUnknownError, "no answer within"),
    (Fault("groups/get", "errcode", errcode=45011), MinuteQuotaError, "errcode 45011"),
])
async def test_broken_answers_are_classified_by_what_the_runner_must_do(
        fault: Fault, kind: type[ApiError], text: str) -> None:
    async with faulty(fault, wait=0.5) as (fs, client):
        call = client.get_groups() if fault.endpoint == "groups/get" else client.move_users(
            USERS, 0)
        with pytest.raises(kind, match=text) as caught:
            await call
        applied = fs.sandbox.state.calls.get(fault.endpoint, 0)
    assert type(caught.value) is kind
    assert applied == (1 if fault.forward and fault.kind in ("cut", "hang") else 0)


async def test_a_refused_connection_is_transient_and_certainly_not_applied() -> None:
    async with faulty() as (fs, _):
        url = fs.base_url
    source = SecretTokenSource("wx", "s")
    async with WeChatClient(url, source, timeout=1) as client:
        with pytest.raises(TransientError) as caught:
            await client.get_groups()
    assert not isinstance(caught.value, OutcomeUnknownError)


@pytest.mark.parametrize(("page", "field"), [
    (b'{"total": 3, "count": 2, "next_openid": "o2"}', "data"),
    (b'{"total": 3, "count": 2, "data": {"openid": ["o1"]}, "next_openid": "o1"}',
     "data.openid"),
])
def test_a_page_must_hold_as_many_openids_as_it_counts(page: bytes, field: str) -> None:
    found = answers.decode(page, answers.FollowerList, "user/get")
    with pytest.raises(ProtocolError) as caught:
        answers.openids_of(found, "user/get")
    assert caught.value.field == field


def test_the_last_page_has_no_data_and_that_is_fine() -> None:
    found = answers.decode(b'{"total": 3, "count": 0, "next_openid": ""}',
                           answers.FollowerList, "user/get")
    assert answers.openids_of(found, "user/get") == []


@pytest.mark.parametrize(("raw", "kind", "text"), [
    (b'{"errcode": 45009, "errmsg": "reach max api daily quota limit"}', ApiError, "45009"),
    (b'{"errcode": "0", "groups": []}', ProtocolError, "`errcode` is a str, not int"),
    (b'{"errcode": "x"}', ProtocolError, "`errcode` is not a number"),
    (b'{"errcode": "40001", "errmsg": "invalid credential"}', ApiError, "40001"),
    (b'[1, 2]', ProtocolError, "not a JSON object"),
    (b'{"groups": [{"id": 0, "name": "\xff", "count": 1}]', ProtocolError, "not a JSON"),
    (b'{"groups": null}', ProtocolError, "`groups` is a null, not array"),
])
def test_errcodes_and_unreadable_bodies(raw: bytes, kind: type[ApiError], text: str) -> None:
    with pytest.raises(kind, match=text):
        answers.decode(raw, answers.GroupList, "groups/get")


def test_a_tolerantly_read_body_is_still_checked() -> None:
    """Raw control characters: the strict decoder refuses them, the tolerant one reads them,
    and the answer is checked all the same."""
    raw = b'{"groups": [{"id": 0, "name": "a\x01b", "count": 1}]}'
    assert answers.decode(raw, answers.GroupList, "groups/get").groups[0].name == "a\x01b"
    with pytest.raises(ProtocolError, match=r"groups\[0\]\.count"):
        answers.decode(b'{"groups": [{"id": 0, "name": "a\x01b"}]}', answers.GroupList,
                       "groups/get")


def test_protocol_errors_survive_pickling_with_their_field() -> None:
    import pickle

    error = answers.protocol_error("Object missing required field `groupid` - at "
                                   "`$.user_info_list[3]`", "user/info/batchget")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.field, clone.endpoint, str(clone)) == (
        "user_info_list[3].groupid", "user/info/batchget", str(error))
    assert str(error) == ("unexpected answer from user/info/batchget: "
                          "`user_info_list[3].groupid` is missing")


def test_every_answer_type_decodes_its_documented_example() -> None:
    """The examples of wechat-api.md, each through its declared type."""
    examples: list[tuple[type[Any], bytes]] = [
        (answers.TokenAnswer, b'{"access_token": "T", "expires_in": 7200}'),
        (answers.GroupCreated, b'{"group": {"id": 107, "name": "test"}}'),
        (answers.GroupList, '{"groups": [{"id": 0, "name": "未分组", "count": 72596}]}'.encode()),
        (answers.GroupOfUser, b'{"groupid": 102}'),
        (answers.Ack, b'{"errcode": 0, "errmsg": "ok"}'),
        (answers.TagsOfUser, b'{"tagid_list": [134, 2]}'),
        (answers.FollowerList, b'{"total": 2, "count": 2, "data": {"openid": ["a", "b"]},'
                               b' "next_openid": "b"}'),
        (answers.UserInfoList, b'{"user_info_list": [{"subscribe": 1, "openid": "a",'
                               b' "groupid": 0, "tagid_list": []}, {"subscribe": 0,'
                               b' "openid": "b", "unionid": "u"}]}'),
        (answers.QuotaAnswer, b'{"quota": {"daily_limit": 100, "used": 1, "remain": 99}}'),
    ]
    for kind, raw in examples:
        assert isinstance(answers.decode(raw, kind, "x"), kind)
        assert msgspec.json.decode(raw, type=kind) == answers.decode(raw, kind, "x")


@pytest.mark.parametrize(("kind", "raw", "field"), [
    (component.ComponentToken, b'{"expires_in": 7200}', "component_access_token"),
    (component.ComponentToken, b'{"component_access_token": "T", "expires_in": 0}',
     "expires_in"),
    (component.AuthorizerToken, b'{"authorizer_access_token": "A", "expires_in": 7200}',
     "authorizer_refresh_token"),
    (component.AuthorizerList, b'{"total_count": 1}', "list"),
    (component.AuthorizerList, b'{"total_count": 1, "list": [{"authorizer_appid": "wx1"}]}',
     "list[0].refresh_token"),
    (component.AuthorizerInfo, b'{"authorizer_info": {"nick_name": ""}}',
     "authorizer_info.nick_name"),
], ids=["token", "lifetime", "refresh-token", "list", "list-entry", "nick-name"])
def test_the_component_platforms_answers_are_declared_the_same_way(
        kind: type[answers.Answer], raw: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        answers.decode(raw, kind, "component/x")
    assert caught.value.field == field
