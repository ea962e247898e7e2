"""The sandbox's tag endpoints over real HTTP on 127.0.0.1: rules, counts, paging, admin."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from batchmove.sandbox import (
    ENDPOINTS,
    Faults,
    RunningSandbox,
    SandboxConfig,
    SandboxConfigError,
    SandboxState,
    sandbox_openids,
)
from batchmove.sandbox.tags import SortedPositions
from tests.support.sandboxes import Api, SandboxFactory, api_for

Json = dict[str, Any]
OK = {"errcode": 0, "errmsg": "ok"}
USERS = sandbox_openids(60, 0)
RESERVED = [{"id": 0, "name": "未分组", "count": 0}, {"id": 1, "name": "黑名单", "count": 0},
            {"id": 2, "name": "星标组", "count": 0}]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def sb(sandbox_factory: SandboxFactory) -> RunningSandbox:
    return await sandbox_factory(SandboxConfig(users=60, tags=["甲", "乙"]))


@pytest.fixture
async def api(session: aiohttp.ClientSession, sb: RunningSandbox) -> Api:
    return await api_for(session, sb)


async def started(session: aiohttp.ClientSession, factory: SandboxFactory,
                  **config: Any) -> Api:
    return await api_for(session, await factory(SandboxConfig(**config)))


async def tag(api: Api, openids: list[str], tagid: int) -> Json:
    return await api.call("tags/members/batchtagging", {"openid_list": openids, "tagid": tagid})


async def untag(api: Api, openids: list[str], tagid: int) -> Json:
    return await api.call("tags/members/batchuntagging", {"openid_list": openids, "tagid": tagid})


async def counts(api: Api) -> dict[int, int]:
    return {t["id"]: t["count"] for t in (await api.call("tags/get"))["tags"]}


async def tag_ids(api: Api, openid: str) -> list[int]:
    answer: list[int] = (await api.call("tags/getidlist", {"openid": openid}))["tagid_list"]
    return answer


# --- create, get, update, delete ------------------------------------------------------------

async def test_reserved_and_pre_created_tags_are_listed(api: Api) -> None:
    assert await api.call("tags/get") == {"tags": [
        *RESERVED, {"id": 100, "name": "甲", "count": 0}, {"id": 101, "name": "乙", "count": 0}]}


async def test_create_assigns_increasing_ids_apart_from_groups(api: Api) -> None:
    assert await api.call("groups/create", {"group": {"name": "组"}}) == {
        "group": {"id": 100, "name": "组"}}
    assert await api.call("tags/create", {"tag": {"name": "丙"}}) == {
        "tag": {"id": 102, "name": "丙"}}
    assert (await api.call("tags/create", {"tag": {"name": "丁"}}))["tag"]["id"] == 103
    await api.call("tags/delete", {"tag": {"id": 103}})
    assert (await api.call("tags/create", {"tag": {"name": "戊"}}))["tag"]["id"] == 104


@pytest.mark.parametrize(("name", "errcode"), [
    ("", 45157), ("   ", 45157), (None, 45157), (7, 45157),
    ("甲", 45157), ("星标组", 45157),  # taken, by a created tag or a reserved one
    ("长" * 11, 45158), ("x" * 31, 45158), ("长" * 10 + "x", 45158),  # 33, 31, 31 bytes
])
async def test_bad_tag_names(api: Api, sb: RunningSandbox, name: Any, errcode: int) -> None:
    answer = await api.call("tags/create", {"tag": {"name": name}})
    assert answer["errcode"] == errcode
    assert answer["errmsg"] == {45157: "invalid tag name", 45158: "tag name too long"}[errcode]
    assert (await api.call("tags/update", {"tag": {"id": 101, "name": name}}))["errcode"] == errcode
    assert [t.name for t in sb.state.tags.tags.values()][3:] == ["甲", "乙"]


@pytest.mark.parametrize("name", ["长" * 10, "x" * 30, "标签 2"])
async def test_names_up_to_30_bytes(api: Api, name: str) -> None:
    assert (await api.call("tags/create", {"tag": {"name": name}}))["tag"] == {
        "id": 102, "name": name}


async def test_101st_tag_is_refused(session: aiohttp.ClientSession,
                                    sandbox_factory: SandboxFactory) -> None:
    api = await started(session, sandbox_factory, users=1, tags=[f"t{i}" for i in range(60)])
    for i in range(60, 100):
        assert "tag" in await api.call("tags/create", {"tag": {"name": f"t{i}"}})
    answer = await api.call("tags/create", {"tag": {"name": "one too many"}})
    assert answer == {"errcode": 45056, "errmsg": "too many tags"}
    assert len((await api.call("tags/get"))["tags"]) == 103  # the reserved three not counted
    assert await api.call("tags/delete", {"tag": {"id": 100}}) == OK
    assert (await api.call("tags/create", {"tag": {"name": "one too many"}}))["tag"]["id"] == 200


async def test_max_tags_setting(session: aiohttp.ClientSession,
                                sandbox_factory: SandboxFactory) -> None:
    api = await started(session, sandbox_factory, users=1, max_tags=0)
    assert (await api.call("tags/create", {"tag": {"name": "a"}}))["errcode"] == 45056


async def test_update_renames_and_frees_the_old_name(api: Api, sb: RunningSandbox) -> None:
    assert await api.call("tags/update", {"tag": {"id": 100, "name": "甲"}}) == OK  # own name
    assert await api.call("tags/update", {"tag": {"id": "100", "name": "新名"}}) == OK
    assert sb.state.tags.tags[100].name == "新名"
    assert (await api.call("tags/create", {"tag": {"name": "甲"}}))["tag"]["id"] == 102
    assert (await api.call("tags/create", {"tag": {"name": "新名"}}))["errcode"] == 45157


@pytest.mark.parametrize(("endpoint", "body", "errcode"), [
    ("tags/update", {"tag": {"id": 0, "name": "x"}}, 45058),
    ("tags/update", {"tag": {"id": 1, "name": "x"}}, 45058),
    ("tags/update", {"tag": {"id": 2, "name": "x"}}, 45058),
    ("tags/update", {"tag": {"id": 999, "name": "x"}}, 45159),
    ("tags/update", {"tag": {"id": "abc", "name": "x"}}, 45159),
    ("tags/update", {"tag": {"name": "x"}}, 47001),
    ("tags/update", {"id": 100, "name": "x"}, 47001),
    ("tags/delete", {"tag": {"id": 0}}, 45058),
    ("tags/delete", {"tag": {"id": 1}}, 45058),
    ("tags/delete", {"tag": {"id": 2}}, 45058),
    ("tags/delete", {"tag": {"id": 999}}, 45159),
    ("tags/create", {"name": "x"}, 47001),
    ("tags/create", [], 47001),
])
async def test_update_and_delete_errcodes(api: Api, sb: RunningSandbox, endpoint: str,
                                          body: Any, errcode: int) -> None:
    await tag(api, USERS[:3], 100)
    before = {key: sb.state.snapshot()[key] for key in ("tags", "user_tags", "groups")}
    answer = await api.call(endpoint, body)
    assert answer["errcode"] == errcode
    assert answer["errmsg"]
    assert {key: sb.state.snapshot()[key] for key in before} == before


async def test_delete_removes_the_tag_from_every_user(api: Api, sb: RunningSandbox) -> None:
    await tag(api, USERS[:5], 100)
    await tag(api, USERS[3:8], 101)
    assert await api.call("tags/delete", {"tag": {"id": 100}}) == OK
    assert await counts(api) == {0: 0, 1: 0, 2: 0, 101: 5}
    assert await tag_ids(api, USERS[0]) == []
    assert await tag_ids(api, USERS[4]) == [101]
    assert set(sb.state.snapshot()["user_tags"]) == set(USERS[3:8])
    assert (await tag(api, USERS[:1], 100))["errcode"] == 45159
    assert (await api.call("tags/create", {"tag": {"name": "甲"}}))["tag"]["id"] == 102


@pytest.mark.parametrize(("members", "errcode"), [(3, 0), (4, 45057)])
async def test_delete_limit(session: aiohttp.ClientSession, sandbox_factory: SandboxFactory,
                            members: int, errcode: int) -> None:
    api = await started(session, sandbox_factory, users=10, tags=["大"], tag_delete_limit=3)
    await tag(api, USERS[:members], 100)
    answer = await api.call("tags/delete", {"tag": {"id": 100}})
    assert answer["errcode"] == errcode
    assert (await counts(api)).get(100) == (None if errcode == 0 else members)


# --- tagging ---------------------------------------------------------------------------------

async def test_tagging_counts_and_idempotency(api: Api, sb: RunningSandbox) -> None:
    assert await tag(api, USERS[:50], 100) == OK
    assert await tag(api, USERS[:50], 100) == OK  # idempotent
    assert await tag(api, [USERS[0], USERS[0], USERS[59]], 2) == OK  # a repeat counts once
    assert await counts(api) == {0: 0, 1: 0, 2: 2, 100: 50, 101: 0}
    assert await tag_ids(api, USERS[0]) == [2, 100]
    assert await untag(api, USERS[:10], 100) == OK
    assert await untag(api, USERS[:10], 100) == OK  # no-op for users without the tag
    assert await untag(api, USERS[20:21], 101) == OK
    assert await counts(api) == {0: 0, 1: 0, 2: 2, 100: 40, 101: 0}
    assert await tag_ids(api, USERS[0]) == [2]
    assert sb.state.tag_log[:2] == [("tag", USERS[0], 100), ("tag", USERS[1], 100)]
    assert len(sb.state.tag_log) == 50 + 50 + 3 + 10 + 10 + 1
    assert sb.state.tag_log[-1] == ("untag", USERS[20], 101)
    assert set(sb.state.members.values()) == {0}  # groups are a separate world


@pytest.mark.parametrize("endpoint", ["tags/members/batchtagging",
                                      "tags/members/batchuntagging"])
@pytest.mark.parametrize(("body", "errcode"), [
    ({"openid_list": USERS[:51], "tagid": 100}, 40032),
    ({"openid_list": [], "tagid": 100}, 40032),
    ({"openid_list": USERS[0], "tagid": 100}, 47001),
    ({"openid_list": USERS[:2], "tagid": 999}, 45159),
    ({"openid_list": USERS[:2], "tagid": "x"}, 45159),
    ({"openid_list": USERS[:2]}, 47001),
    ({"openid_list": USERS[:2], "tagid": 0}, 45058),
    ({"openid_list": USERS[:2], "tagid": 1}, 45058),
    ({"openid_list": [*USERS[:49], "o-not-a-follower"], "tagid": 100}, 40003),
    ({"openid_list": [USERS[0], None], "tagid": 100}, 40003),
])
async def test_batch_errcodes_change_nothing(api: Api, sb: RunningSandbox, endpoint: str,
                                             body: Json, errcode: int) -> None:
    await tag(api, USERS[40:45], 100)
    before = (sb.state.snapshot()["tags"], sb.state.snapshot()["user_tags"],
              list(sb.state.tag_log))
    answer = await api.call(endpoint, body)
    assert answer["errcode"] == errcode
    assert answer["errmsg"]
    after = sb.state.snapshot()
    assert (after["tags"], after["user_tags"], sb.state.tag_log) == before


async def test_21st_tag_fails_the_whole_batch(session: aiohttp.ClientSession,
                                              sandbox_factory: SandboxFactory) -> None:
    names = [f"t{i}" for i in range(21)]
    api = await started(session, sandbox_factory, users=10, tags=names)
    full, other = USERS[0], USERS[1]
    for tagid in [2, *range(100, 119)]:  # 20 tags, the starred one included
        assert await tag(api, [full], tagid) == OK
    assert await tag(api, [other, full], 119) == {"errcode": 45059,
                                                  "errmsg": "user has too many tags"}
    assert await tag_ids(api, other) == []
    assert (await counts(api))[119] == 0
    assert await tag(api, [other, full], 118) == OK  # one of its 20: no new tag
    assert await untag(api, [full], 2) == OK
    assert await tag(api, [other, full], 119) == OK
    assert len(await tag_ids(api, full)) == 20


# --- reading tags back -----------------------------------------------------------------------

async def test_getidlist_is_sorted(api: Api) -> None:
    for tagid in (101, 2, 100):
        await tag(api, USERS[:1], tagid)
    assert await api.call("tags/getidlist", {"openid": USERS[0]}) == {"tagid_list": [2, 100, 101]}
    assert await tag_ids(api, USERS[1]) == []
    assert (await api.call("tags/getidlist", {"openid": "o-nobody"}))["errcode"] == 40003
    assert (await api.call("tags/getidlist", {}))["errcode"] == 40003


async def test_user_info_batchget_carries_tagid_list(api: Api) -> None:
    await tag(api, USERS[:2], 101)
    await tag(api, USERS[:1], 2)
    body = {"user_list": [{"openid": o} for o in USERS[:3]]}
    infos = (await api.call("user/info/batchget", body))["user_info_list"]
    assert [i["tagid_list"] for i in infos] == [[2, 101], [101], []]
    assert [i["groupid"] for i in infos] == [0, 0, 0]


@pytest.mark.parametrize(("tagged", "page_size", "pages"), [
    (7, 3, [3, 3, 1]), (6, 3, [3, 3]), (0, 3, []), (5, 10, [5]),
])
async def test_tag_follower_paging(session: aiohttp.ClientSession,
                                   sandbox_factory: SandboxFactory, tagged: int,
                                   page_size: int, pages: list[int]) -> None:
    api = await started(session, sandbox_factory, users=20, tags=["页"], page_size=page_size)
    chosen = sandbox_openids(20)[5:5 + tagged]
    if chosen:
        await tag(api, chosen[::-1], 100)  # tagged in reverse, paged in follower order
    seen: list[int] = []
    collected: list[str] = []
    cursor = ""
    while True:
        page = await api.call("user/tag/get", {"tagid": 100, "next_openid": cursor})
        if page["count"] == 0:
            assert page == {"count": 0, "next_openid": ""}
            break
        seen.append(page["count"])
        collected += page["data"]["openid"]
        assert page["next_openid"] == collected[-1]
        cursor = page["next_openid"]
    assert (seen, collected) == (pages, chosen)


async def test_tag_paging_survives_changes_and_rejects_bad_input(api: Api) -> None:
    await tag(api, USERS[:10], 100)
    first = await api.call("user/tag/get", {"tagid": 100})  # no next_openid: from the start
    assert first["data"]["openid"] == USERS[:10]
    await untag(api, USERS[4:5], 100)  # the cursor's own user leaves the tag
    after = await api.call("user/tag/get", {"tagid": 100, "next_openid": USERS[4]})
    assert after["data"]["openid"] == USERS[5:10]
    assert (await api.call("user/tag/get", {"tagid": 2}))["count"] == 0
    assert (await api.call("user/tag/get", {"tagid": 999}))["errcode"] == 45159
    assert (await api.call("user/tag/get", {"next_openid": ""}))["errcode"] == 47001
    bad_cursor = {"tagid": 100, "next_openid": "o-nobody"}
    assert (await api.call("user/tag/get", bad_cursor))["errcode"] == 40003
    assert (await api.call("user/tag/get", {"tagid": 100, "next_openid": 3}))["errcode"] == 47001


def test_positions_stay_sorted_under_random_changes() -> None:
    state = SandboxState(SandboxConfig(users=300, tags=["a", "b", "c"]))
    book, rng = state.tags, random.Random(5)
    for _ in range(400):
        openids = rng.sample(state.followers, rng.randint(1, 50))
        action = rng.choice((book.batch_tag, book.batch_untag))
        assert action({"openid_list": openids, "tagid": rng.choice((2, 100, 101, 102))}) == OK
    for tag_record in book.tags.values():
        members = [o for o, tids in book.user_tags.items() if tag_record.id in tids]
        assert list(tag_record.positions) == sorted(map(state.followers.index, members))
        assert tag_record.count == len(members)
    carried = {(state.followers[p], t.id) for t in book.tags.values() for p in t.positions}
    assert carried == {(o, tid) for o, tids in book.user_tags.items() for tid in tids}
    assert all(book.user_tags.values())


@pytest.mark.parametrize("load", [1, 3, 1000])
def test_sorted_positions_against_a_sorted_list(load: int) -> None:
    positions, rng = SortedPositions(load), random.Random(load)
    reference: list[int] = []
    for _ in range(3000):
        value = rng.randrange(500)
        if value in reference:
            positions.remove(value)
            reference.remove(value)
        else:
            positions.add(value)
            reference.append(value)
            reference.sort()
        if rng.random() < 0.1:
            start, limit = rng.randrange(-1, 501), rng.randrange(1, 40)
            assert positions.after(start, limit) == [v for v in reference if v > start][:limit]
    assert list(positions) == reference


# --- admin ---------------------------------------------------------------------------------

async def test_admin_state_tag_and_tag_log(api: Api, sb: RunningSandbox) -> None:
    await tag(api, USERS[:2], 100)
    assert await api.admin("tag", {"openid": USERS[5], "tagid": 101}) == OK
    assert await api.admin("tag", {"openid": USERS[0], "tagid": 100, "untag": True}) == OK
    state = await api.admin("state")
    assert state["tags"] == [*RESERVED, {"id": 100, "name": "甲", "count": 1},
                             {"id": 101, "name": "乙", "count": 1}]
    assert state["user_tags"] == {USERS[1]: [100], USERS[5]: [101]}
    assert len(state["members"]) == 60
    log = await api.admin("tag_log")
    assert log == {"entries": [["tag", USERS[0], 100], ["tag", USERS[1], 100]], "next": 2}
    assert await api.admin("tag_log?since=2") == {"entries": [], "next": 2}
    assert sb.state.calls["tags/members/batchtagging"] == 1


@pytest.mark.parametrize(("body", "errcode"), [
    ({"openid": "o-nobody", "tagid": 100}, 40003),
    ({"openid": USERS[0], "tagid": 999}, 45159),
    ({"openid": USERS[0], "tagid": 1}, 45058),
    ({"openid": USERS[0]}, 47001),
    ({"openid": USERS[0], "tagid": 100, "untag": "yes"}, 47001),
    ([1], 47001),
])
async def test_admin_tag_errors(api: Api, sb: RunningSandbox, body: Any, errcode: int) -> None:
    assert (await api.admin("tag", body))["errcode"] == errcode
    assert sb.state.snapshot()["user_tags"] == {}


async def test_admin_tag_respects_the_20_tag_limit(session: aiohttp.ClientSession,
                                                    sandbox_factory: SandboxFactory) -> None:
    api = await started(session, sandbox_factory, users=2, tags=[f"t{i}" for i in range(21)])
    for tagid in range(100, 120):
        assert await api.admin("tag", {"openid": USERS[0], "tagid": tagid}) == OK
    assert (await api.admin("tag", {"openid": USERS[0], "tagid": 120}))["errcode"] == 45059


# --- quotas, config, CLI -------------------------------------------------------------------

TAG_ENDPOINTS = {
    "tags/create": 1_000, "tags/get": 1_000, "tags/update": 1_000, "tags/delete": 1_000,
    "tags/members/batchtagging": 100_000, "tags/members/batchuntagging": 100_000,
    "tags/getidlist": 1_000, "user/tag/get": 500,
}


@pytest.mark.parametrize(("endpoint", "limit"), sorted(TAG_ENDPOINTS.items()))
async def test_tag_endpoint_quotas(api: Api, sb: RunningSandbox, endpoint: str,
                                   limit: int) -> None:
    cgi = {"cgi_path": f"/cgi-bin/{endpoint}"}
    assert (await api.call("openapi/quota/get", cgi))["quota"] == {
        "daily_limit": limit, "used": 0, "remain": limit}
    sb.set_faults(daily_quota={endpoint: 0}, fault_endpoints=[endpoint])
    method = "POST" if ENDPOINTS[endpoint][1] else "GET"
    answer = await api.call(endpoint, {} if method == "POST" else None, method=method)
    assert answer["errcode"] == 45009


async def test_tag_calls_count_against_quota(api: Api, sb: RunningSandbox) -> None:
    sb.set_faults(daily_quota={"tags/members/batchtagging": 2})
    assert await tag(api, USERS[:50], 100) == OK
    assert await tag(api, USERS[50:], 100) == OK
    assert (await tag(api, USERS[:1], 101))["errcode"] == 45009
    quota = await api.call("openapi/quota/get",
                           {"cgi_path": "/cgi-bin/tags/members/batchtagging"})
    assert quota["quota"] == {"daily_limit": 2, "used": 2, "remain": 0}


async def test_faults_hit_tag_endpoints(api: Api, sb: RunningSandbox) -> None:
    sb.set_faults(error_rate=1.0, fault_endpoints=["tags/members/batchtagging"])
    assert (await tag(api, USERS[:1], 100))["errcode"] == -1
    assert "tags" in await api.call("tags/get")
    assert sb.state.snapshot()["user_tags"] == {}


async def test_tags_get_needs_no_post_and_create_needs_post(api: Api) -> None:
    assert (await api.call("tags/create", method="GET"))["errcode"] == 43002
    assert (await api.call("tags/getidlist", method="GET"))["errcode"] == 43002


@pytest.mark.parametrize("settings", [
    {"tags": ["a", "a"]}, {"tags": ["星标组"]}, {"tags": ["长" * 11]}, {"tags": [" "]},
    {"tags": "abc"}, {"tags": ["a", "b"], "max_tags": 1}, {"max_tags": -1},
    {"tag_delete_limit": -1}, {"max_tags": True},
])
def test_invalid_tag_config(settings: dict[str, Any]) -> None:
    with pytest.raises(SandboxConfigError):
        SandboxConfig(**settings)


def test_tag_endpoints_accepted_by_faults() -> None:
    faults = Faults(daily_quota=dict.fromkeys(TAG_ENDPOINTS, 1),
                    fault_endpoints=tuple(TAG_ENDPOINTS))
    assert set(faults.fault_endpoints) == set(TAG_ENDPOINTS)


async def test_cli_tag_flags(sandbox_process: Any, session: aiohttp.ClientSession) -> None:
    base_url = sandbox_process("--users", "5", "--tag", "高价值", "--tag", "新客",
                               "--max-tags", "3", "--daily-quota", "tags/update=0")
    query = {"grant_type": "client_credential", "appid": "wxsandbox0000000001",
             "secret": "sandbox-secret-not-real"}
    async with session.get(f"{base_url}/cgi-bin/token", params=query) as resp:
        params = {"access_token": (await resp.json())["access_token"]}

    async def post(endpoint: str, body: Json) -> Json:
        async with session.post(f"{base_url}/cgi-bin/{endpoint}", params=params,
                                json=body) as resp:
            result: Json = await resp.json()
            return result

    assert (await post("tags/create", {"tag": {"name": "三"}}))["tag"]["id"] == 102
    assert (await post("tags/create", {"tag": {"name": "四"}}))["errcode"] == 45056
    assert (await post("tags/update", {"tag": {"id": 100, "name": "x"}}))["errcode"] == 45009
    async with session.get(f"{base_url}/sandbox/state") as resp:
        state = await resp.json()
    assert [t["name"] for t in state["tags"]][3:] == ["高价值", "新客", "三"]
