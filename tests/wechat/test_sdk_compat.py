"""An unchanged third-party SDK (wechatpy 1.8.18) works against the sandbox process.

wechatpy is synchronous (requests), so it talks to a `batchmove sandbox` subprocess. Two wechatpy
facts shape these tests:
- `WeChatClient.API_BASE_URL` is a class attribute read per call, so an instance attribute
  points the endpoints at the sandbox; but `WeChatClient.fetch_access_token` hard-codes
  `https://api.weixin.qq.com/cgi-bin/token`. So the token is fetched with wechatpy's own
  `_fetch_access_token(url, params)`, and with `auto_retry=False`: otherwise a 40001/42001 would
  make wechatpy refresh against the real WeChat (and it retries without any cap).
- The one test of auto-retry uses a subclass that overrides only the token URL.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from wechatpy import WeChatClient
from wechatpy.exceptions import APILimitedException, WeChatClientException

from batchmove.sandbox import DEFAULT_APPID, DEFAULT_SECRET, sandbox_openids

StartProcess = Callable[..., str]


def client_for(base_url: str, client_class: type[WeChatClient] = WeChatClient,
               **kwargs: Any) -> Any:
    client = client_class(DEFAULT_APPID, DEFAULT_SECRET, auto_retry=False, timeout=10, **kwargs)
    client.API_BASE_URL = f"{base_url}/cgi-bin/"
    client._fetch_access_token(
        url=f"{base_url}/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": DEFAULT_APPID,
                "secret": DEFAULT_SECRET},
    )
    return client


def admin(base_url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base_url}/sandbox/{path}",
                                                       data=data)) as resp:
        return json.loads(resp.read())


def test_groups_round_trip(sandbox_process: StartProcess) -> None:
    base_url = sandbox_process("--users", "120")
    client = client_for(base_url)
    openids = sandbox_openids(120, 0)
    assert len(client.access_token) >= 40

    created = client.group.create("高价值客户")
    assert created == {"group": {"id": 100, "name": "高价值客户"}}
    gid = created["group"]["id"]
    assert client.group.update(gid, "重要客户") == {"errcode": 0, "errmsg": "ok"}
    client.group.move_user(openids[0], gid)
    client.group.move_user(openids[1:51], gid)
    client.group.move_user(tuple(openids[51:60]), 2)
    assert client.group.get(openids[0]) == gid
    assert client.user.get_group_id(openids[55]) == 2
    counts = {g["id"]: (g["name"], g["count"]) for g in client.group.get()}
    assert counts == {0: ("未分组", 60), 1: ("黑名单", 0), 2: ("星标组", 9), gid: ("重要客户", 51)}

    client.group.delete(gid)
    assert [g["id"] for g in client.group.get()] == [0, 1, 2]
    assert client.group.get(openids[0]) == 0


def test_followers_and_user_info(sandbox_process: StartProcess) -> None:
    base_url = sandbox_process("--users", "25", "--page-size", "10", "--seed", "3")
    client = client_for(base_url)
    expected = sandbox_openids(25, 3)
    first = client.user.get_followers()
    assert (first["total"], first["count"], first["next_openid"]) == (25, 10, expected[9])
    assert list(client.user.iter_followers()) == expected  # terminates on the empty page
    infos = client.user.get_batch(expected[:3])
    assert [(i["openid"], i["subscribe"], i["groupid"]) for i in infos] == [
        (openid, 1, 0) for openid in expected[:3]]


@pytest.mark.parametrize(("action", "errcode"), [
    (lambda c, o: c.group.move_user([*o[:3], "o-not-a-follower"], 0), 40003),
    (lambda c, o: c.group.move_user(o[:51], 0), 40032),
    (lambda c, o: c.group.move_user(o[0], 999), 40050),
    (lambda c, o: c.group.update(1, "x"), 45016),
    (lambda c, o: c.group.delete(0), 45016),
    (lambda c, o: c.group.create("长" * 31), 45017),
    (lambda c, o: c.group.get("o-not-a-follower"), 40003),
])
def test_errcodes_reach_wechatpy_exceptions(sandbox_process: StartProcess,
                                            action: Callable[[Any, list[str]], Any],
                                            errcode: int) -> None:
    base_url = sandbox_process("--users", "60")
    client = client_for(base_url)
    with pytest.raises(WeChatClientException) as caught:
        action(client, sandbox_openids(60, 0))
    assert caught.value.errcode == errcode
    assert caught.value.errmsg


def test_daily_quota_is_api_limited(sandbox_process: StartProcess) -> None:
    base_url = sandbox_process("--users", "3", "--daily-quota", "groups/get=1")
    client = client_for(base_url)
    client.group.get()
    with pytest.raises(APILimitedException) as caught:
        client.group.get()
    assert caught.value.errcode == 45009


def test_wrong_secret_refused_at_token_fetch(sandbox_process: StartProcess) -> None:
    base_url = sandbox_process("--users", "1")
    client = WeChatClient(DEFAULT_APPID, "wrong-secret", auto_retry=False)
    with pytest.raises(WeChatClientException) as caught:
        client._fetch_access_token(
            url=f"{base_url}/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": DEFAULT_APPID,
                    "secret": "wrong-secret"},
        )
    assert caught.value.errcode == 40001


def test_auto_retry_refreshes_an_expired_token(sandbox_process: StartProcess) -> None:
    base_url = sandbox_process("--users", "3")

    class SandboxClient(WeChatClient):  # type: ignore[misc]
        """Only the hard-coded token URL changes."""

        def fetch_access_token(self) -> Any:
            return self._fetch_access_token(
                url=f"{base_url}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": self.appid,
                        "secret": self.secret},
            )

    client = SandboxClient(DEFAULT_APPID, DEFAULT_SECRET, timeout=10)
    client.API_BASE_URL = f"{base_url}/cgi-bin/"
    old = client.access_token
    admin(base_url, "expire_tokens", {})
    assert client.group.get()[0]["count"] == 3
    assert client.access_token != old
    assert admin(base_url, "state")["calls"] == {"token": 2, "groups/get": 2}


# -- tags (wechatpy's `client.tag`, unchanged) ---------------------------------------------------

def test_tags_round_trip(sandbox_process: StartProcess) -> None:
    base_url = sandbox_process("--users", "30", "--page-size", "4", "--tag", "老客户")
    client = client_for(base_url)
    openids = sandbox_openids(30, 0)

    created = client.tag.create("高价值客户")
    assert created == {"id": 101, "name": "高价值客户"}
    tid = created["id"]
    assert client.tag.update(tid, "重要客户") == {"errcode": 0, "errmsg": "ok"}
    client.tag.tag_user(tid, openids[0])  # one openid
    client.tag.tag_user(tid, openids[10:20])  # a list
    client.tag.tag_user(2, tuple(openids[:2]))
    client.tag.untag_user(tid, openids[19])
    assert client.tag.get_user_tag(openids[0]) == [2, tid]
    assert client.tag.get() == [
        {"id": 0, "name": "未分组", "count": 0}, {"id": 1, "name": "黑名单", "count": 0},
        {"id": 2, "name": "星标组", "count": 2}, {"id": 100, "name": "老客户", "count": 0},
        {"id": tid, "name": "重要客户", "count": 10}]
    first = client.tag.get_tag_users(tid)
    assert (first["count"], first["next_openid"]) == (4, openids[12])
    after = client.tag.get_tag_users(tid, first["next_openid"])
    assert after["data"]["openid"] == openids[13:17]
    expected = [openids[0], *openids[10:19]]
    assert list(client.tag.iter_tag_users(tid)) == expected  # stops on the page without data
    assert list(client.tag.iter_tag_users(100)) == []
    infos = client.user.get_batch(openids[:2])
    assert [i["tagid_list"] for i in infos] == [[2, tid], [2]]

    assert client.tag.delete(tid) == {"errcode": 0, "errmsg": "ok"}
    assert client.tag.get_user_tag(openids[0]) == [2]
    assert [t["id"] for t in client.tag.get()] == [0, 1, 2, 100]


@pytest.mark.parametrize(("action", "errcode"), [
    (lambda c, o: c.tag.create("老客户"), 45157),
    (lambda c, o: c.tag.create("长" * 11), 45158),
    (lambda c, o: c.tag.create("新"), 45056),  # --max-tags 2, both taken
    (lambda c, o: c.tag.update(999, "x"), 45159),
    (lambda c, o: c.tag.update(2, "x"), 45058),
    (lambda c, o: c.tag.delete(1), 45058),
    (lambda c, o: c.tag.delete(100), 45057),  # --tag-delete-limit 1, two members
    (lambda c, o: c.tag.tag_user(999, o[0]), 45159),
    (lambda c, o: c.tag.tag_user(100, [*o[:3], "o-not-a-follower"]), 40003),
    (lambda c, o: c.tag.tag_user(100, o[:51]), 40032),
    (lambda c, o: c.tag.untag_user(100, []), 40032),
    (lambda c, o: c.tag.get_user_tag("o-not-a-follower"), 40003),
    (lambda c, o: c.tag.get_tag_users(999), 45159),
])
def test_tag_errcodes_reach_wechatpy_exceptions(sandbox_process: StartProcess,
                                                action: Callable[[Any, list[str]], Any],
                                                errcode: int) -> None:
    base_url = sandbox_process("--users", "60", "--tag", "老客户", "--tag", "新客户",
                               "--max-tags", "2", "--tag-delete-limit", "1")
    for openid in sandbox_openids(2, 0):
        admin(base_url, "tag", {"openid": openid, "tagid": 100})
    client = client_for(base_url)
    with pytest.raises(WeChatClientException) as caught:
        action(client, sandbox_openids(60, 0))
    assert caught.value.errcode == errcode
    assert caught.value.errmsg
    assert admin(base_url, "state")["user_tags"] == {o: [100] for o in sandbox_openids(2, 0)}


def test_twenty_first_tag_fails_the_whole_wechatpy_batch(sandbox_process: StartProcess) -> None:
    names = [arg for i in range(21) for arg in ("--tag", f"标签{i}")]
    base_url = sandbox_process("--users", "5", *names)
    client = client_for(base_url)
    full, other = sandbox_openids(2, 0)
    for tagid in range(100, 120):
        client.tag.tag_user(tagid, full)
    with pytest.raises(WeChatClientException) as caught:
        client.tag.tag_user(120, [other, full])
    assert caught.value.errcode == 45059
    assert client.tag.get_user_tag(other) == []
    assert admin(base_url, "tag_log")["next"] == 20
