"""The sandbox over real HTTP on 127.0.0.1: endpoints, errcodes, tokens, quotas, faults, CLI."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from batchmove.cli import cli
from batchmove.sandbox import (
    DEFAULT_APPID,
    DEFAULT_SECRET,
    RunningSandbox,
    SandboxConfig,
    SandboxConfigError,
    SandboxState,
    sandbox_openids,
)
from tests.support.notify import free_port
from tests.support.sandboxes import REPO_ROOT, Api, FakeClock, Json, SandboxFactory, api_for

OK = {"errcode": 0, "errmsg": "ok"}




@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def api(session: aiohttp.ClientSession, sandbox: RunningSandbox) -> Api:
    return await api_for(session, sandbox)


def users(n: int = 200) -> list[str]:
    return sandbox_openids(n, 0)


# --- tokens ---------------------------------------------------------------------------------

async def test_token_is_long_random_and_recorded(api: Api, sandbox: RunningSandbox) -> None:
    body = await api.fetch_token()
    assert body["expires_in"] == 7200
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", body["access_token"])
    assert sandbox.state.issued_tokens[-1] == body["access_token"]
    assert (await api.call("groups/get"))["groups"][0] == {"id": 0, "name": "未分组", "count": 200}


@pytest.mark.parametrize(("params", "errcode"), [
    ({"appid": "wx-wrong"}, 40013),
    ({"secret": "wrong"}, 40001),
    ({"appid": ""}, 41002),
    ({"secret": ""}, 41004),
    ({"grant_type": "password"}, 40002),
])
async def test_token_credentials(api: Api, params: dict[str, str], errcode: int) -> None:
    assert (await api.fetch_token(**params))["errcode"] == errcode
    assert (await api.stable(fields=params))["errcode"] == errcode


@pytest.mark.parametrize(("token", "errcode"), [("", 41001), ("not-a-token", 40001)])
async def test_bad_tokens(api: Api, token: str, errcode: int) -> None:
    assert (await api.call("groups/get", token=token))["errcode"] == errcode


async def test_token_expiry_and_grace(session: aiohttp.ClientSession,
                                      sandbox_factory: SandboxFactory,
                                      fake_clock: FakeClock) -> None:
    sb = await sandbox_factory(SandboxConfig(users=3, token_ttl=1000, token_grace=300),
                               clock=fake_clock)
    api = await api_for(session, sb)
    first = api.token
    fake_clock.advance(100)
    await api.fetch_token()
    assert api.token != first
    assert "groups" in await api.call("groups/get", token=first)  # old one: grace period
    fake_clock.advance(300)
    assert (await api.call("groups/get", token=first))["errcode"] == 40001
    assert "groups" in await api.call("groups/get")
    fake_clock.advance(1000)
    assert (await api.call("groups/get"))["errcode"] == 42001


async def test_stable_token_does_not_rotate(session: aiohttp.ClientSession,
                                            sandbox_factory: SandboxFactory,
                                            fake_clock: FakeClock) -> None:
    sb = await sandbox_factory(SandboxConfig(users=3, token_ttl=1000), clock=fake_clock)
    api = Api(session, sb)
    first = await api.stable()
    fake_clock.advance(400)
    again = await api.stable()
    assert again == {"access_token": first["access_token"], "expires_in": 600}
    await api.fetch_token()  # classic tokens are a separate track
    assert "groups" in await api.call("groups/get", token=first["access_token"])
    forced = await api.stable(force=True)
    assert forced["access_token"] != first["access_token"]
    fake_clock.advance(301)
    assert (await api.call("groups/get", token=first["access_token"]))["errcode"] == 40001
    fake_clock.advance(1000)
    renewed = await api.stable()
    assert renewed["access_token"] != forced["access_token"]


async def test_expire_tokens_admin(api: Api) -> None:
    assert await api.admin("expire_tokens", {}) == OK
    assert (await api.call("groups/get"))["errcode"] == 42001


# --- groups ---------------------------------------------------------------------------------

async def test_create_is_not_idempotent_and_ids_increase(api: Api) -> None:
    first = await api.call("groups/create", {"group": {"name": "高价值客户"}})
    second = await api.call("groups/create", {"group": {"name": "高价值客户"}})
    assert first == {"group": {"id": 100, "name": "高价值客户"}}
    assert second == {"group": {"id": 101, "name": "高价值客户"}}


async def test_responses_keep_chinese_unescaped(api: Api, session: aiohttp.ClientSession,
                                                sandbox: RunningSandbox) -> None:
    url = f"{sandbox.base_url}/cgi-bin/groups/get"
    async with session.get(url, params={"access_token": api.token}) as resp:
        raw = await resp.read()
        assert resp.headers["Content-Type"].startswith("application/json")
    assert "未分组".encode() in raw
    assert b"\\u" not in raw


@pytest.mark.parametrize(("name", "errcode"), [
    ("x" * 31, 45017), ("", 40051), ("   ", 40051), (None, 40051),
])
async def test_bad_group_names(api: Api, name: str | None, errcode: int) -> None:
    assert (await api.call("groups/create", {"group": {"name": name}}))["errcode"] == errcode
    body = {"group": {"id": 0, "name": "x"}}
    assert (await api.call("groups/update", body))["errcode"] == 45016


async def test_thirty_chars_allowed(api: Api) -> None:
    assert (await api.call("groups/create", {"group": {"name": "组" * 30}}))["group"]["id"] == 100


async def test_group_limit(session: aiohttp.ClientSession,
                           sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=1, max_groups=5, groups=["a"]))
    api = await api_for(session, sb)
    assert (await api.call("groups/create", {"group": {"name": "b"}}))["group"]["id"] == 101
    assert (await api.call("groups/create", {"group": {"name": "c"}}))["errcode"] == 45018


@pytest.mark.parametrize(("endpoint", "body", "errcode"), [
    ("groups/update", {"group": {"id": 1, "name": "x"}}, 45016),
    ("groups/update", {"group": {"id": 999, "name": "x"}}, 40050),
    ("groups/update", {"group": {"id": 100, "name": "y" * 31}}, 45017),
    ("groups/delete", {"group": {"id": 2}}, 45016),
    ("groups/delete", {"group": {"id": 999}}, 40050),
    ("groups/members/update", {"openid": "o-nobody", "to_groupid": 100}, 40003),
    ("groups/members/update", {"openid": users()[0], "to_groupid": 999}, 40050),
    ("groups/members/batchupdate", {"openid_list": users()[:51], "to_groupid": 100}, 40032),
    ("groups/members/batchupdate", {"openid_list": [], "to_groupid": 100}, 40032),
    ("groups/members/batchupdate", {"openid_list": users()[:2], "to_groupid": 999}, 40050),
    ("groups/getid", {"openid": "o-nobody"}, 40003),
    ("user/info/batchget", {"user_list": [{"openid": o} for o in users()[:101]]}, 40032),
    ("openapi/quota/get", {"cgi_path": "/cgi-bin/nothing"}, 76021),
    ("groups/create", [], 47001),
])
async def test_errcodes(api: Api, sandbox: RunningSandbox, endpoint: str, body: Any,
                        errcode: int) -> None:
    await api.call("groups/create", {"group": {"name": "目标"}})
    before = sandbox.state.snapshot()["members"]
    answer = await api.call(endpoint, body)
    assert answer["errcode"] == errcode
    assert answer["errmsg"]
    assert sandbox.state.snapshot()["members"] == before


async def test_batch_with_one_unknown_openid_moves_nobody(api: Api,
                                                          sandbox: RunningSandbox) -> None:
    body = {"openid_list": [*users()[:49], "o-not-a-follower"], "to_groupid": 2}
    assert (await api.call("groups/members/batchupdate", body))["errcode"] == 40003
    assert sandbox.state.groups[2].count == 0
    assert set(sandbox.state.members.values()) == {0}


async def test_moves_and_live_counts(api: Api, sandbox: RunningSandbox) -> None:
    gid = (await api.call("groups/create", {"group": {"name": "老客户"}}))["group"]["id"]
    batch = {"openid_list": users()[:50], "to_groupid": gid}
    assert await api.call("groups/members/batchupdate", batch) == OK
    assert await api.call("groups/members/batchupdate", batch) == OK  # idempotent
    assert await api.call("groups/members/update", {"openid": users()[0], "to_groupid": 2}) == OK
    counts = {g["id"]: g["count"] for g in (await api.call("groups/get"))["groups"]}
    assert counts == {0: 150, 1: 0, 2: 1, gid: 49}
    assert await api.call("groups/getid", {"openid": users()[0]}) == {"groupid": 2}
    assert await api.call("groups/getid", {"openid": users()[1]}) == {"groupid": gid}
    assert sandbox.state.members[users()[1]] == gid
    assert sandbox.state.groups[gid].count == 49


async def test_rename_and_delete_returns_members_to_zero(api: Api,
                                                         sandbox: RunningSandbox) -> None:
    gid = (await api.call("groups/create", {"group": {"name": "临时"}}))["group"]["id"]
    await api.call("groups/members/batchupdate", {"openid_list": users()[:10], "to_groupid": gid})
    assert await api.call("groups/update", {"group": {"id": gid, "name": "改名"}}) == OK
    assert sandbox.state.groups[gid].name == "改名"
    assert await api.call("groups/delete", {"group": {"id": gid}}) == OK
    groups = (await api.call("groups/get"))["groups"]
    assert [g["id"] for g in groups] == [0, 1, 2]
    assert groups[0]["count"] == 200
    assert (await api.call("groups/getid", {"openid": users()[3]}))["groupid"] == 0


@pytest.mark.parametrize(("endpoint", "method", "raw", "errcode"), [
    ("groups/create", "GET", None, 43002),
    ("groups/create", "POST", b"", 44002),
    ("groups/create", "POST", b"{not json", 47001),
    ("stable_token", "GET", None, 43002),
])
async def test_request_format_errors(api: Api, session: aiohttp.ClientSession,
                                     sandbox: RunningSandbox, endpoint: str, method: str,
                                     raw: bytes | None, errcode: int) -> None:
    url = f"{sandbox.base_url}/cgi-bin/{endpoint}"
    async with session.request(method, url, params={"access_token": api.token},
                               data=raw) as resp:
        assert (await resp.json())["errcode"] == errcode


# --- users ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "page_size", "pages"), [(7, 3, [3, 3, 1]), (6, 3, [3, 3]),
                                                           (0, 3, [])])
async def test_follower_paging(session: aiohttp.ClientSession, sandbox_factory: SandboxFactory,
                               count: int, page_size: int, pages: list[int]) -> None:
    sb = await sandbox_factory(SandboxConfig(users=count, page_size=page_size))
    api = await api_for(session, sb)
    seen: list[int] = []
    collected: list[str] = []
    next_openid = ""
    while True:
        page = await api.call("user/get", next_openid=next_openid)
        assert page["total"] == count
        if page["count"] == 0:
            assert page == {"total": count, "count": 0, "next_openid": ""}
            break
        seen.append(page["count"])
        collected += page["data"]["openid"]
        assert page["next_openid"] == collected[-1]
        next_openid = page["next_openid"]
    assert seen == pages
    assert collected == sandbox_openids(count, 0)
    assert (await api.call("user/get", next_openid="o-unknown"))["errcode"] == 40003


async def test_user_info_batchget(api: Api, sandbox: RunningSandbox) -> None:
    await api.call("groups/members/update", {"openid": users()[1], "to_groupid": 2})
    body = {"user_list": [{"openid": users()[0], "lang": "en"}, {"openid": users()[1]},
                          {"openid": "o-gone"}]}
    infos = (await api.call("user/info/batchget", body))["user_info_list"]
    assert [(i["subscribe"], i["openid"], i.get("groupid")) for i in infos] == [
        (1, users()[0], 0), (1, users()[1], 2), (0, "o-gone", None)]
    assert infos[0]["tagid_list"] == []
    assert infos[0]["language"] == "en"
    assert infos[2] == {"subscribe": 0, "openid": "o-gone"}


def test_openids_are_deterministic_and_real_looking() -> None:
    ids = sandbox_openids(500, 7)
    assert ids == sandbox_openids(500, 7)
    assert ids[:10] == sandbox_openids(10, 7)
    assert ids != sandbox_openids(500, 8)
    assert len(set(ids)) == 500
    assert all(re.fullmatch(r"o[A-Za-z0-9_-]{27}", o) for o in ids)


def test_followers_from_file_or_list(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("\ufeffoAAA\n\noBBB\noAAA\n", encoding="utf-8")
    assert SandboxState(SandboxConfig(users_file=str(path))).followers == ["oAAA", "oBBB"]
    assert SandboxState(SandboxConfig(openids=["oX", "oY"])).members == {"oX": 0, "oY": 0}
    state = SandboxState(SandboxConfig(users=2, groups=["甲", "乙"]))
    assert [(g.id, g.name) for g in state.groups.values()][3:] == [(100, "甲"), (101, "乙")]


@pytest.mark.parametrize("settings", [
    {"users": -1}, {"error_rate": 1.5}, {"drop_rate": -0.1}, {"latency_ms": -1},
    {"page_size": 0}, {"daily_quota": {"nope": 1}}, {"daily_quota": {"token": -1}},
    {"max_groups": 4, "groups": ["a", "b"]}, {"token_ttl": 0},
])
def test_invalid_config(settings: dict[str, Any]) -> None:
    with pytest.raises(SandboxConfigError):
        SandboxConfig(**settings)


# --- quotas ---------------------------------------------------------------------------------

async def test_daily_quota_and_quota_get(session: aiohttp.ClientSession,
                                         sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=3, daily_quota={"groups/get": 2}))
    api = await api_for(session, sb)
    for _ in range(2):
        assert "groups" in await api.call("groups/get")
    assert (await api.call("groups/get"))["errcode"] == 45009
    cgi = {"cgi_path": "/cgi-bin/groups/get"}
    quota = await api.call("openapi/quota/get", cgi)
    assert quota == {**OK, "quota": {"daily_limit": 2, "used": 2, "remain": 0}}
    batch = await api.call("openapi/quota/get",
                           {"cgi_path": "/cgi-bin/groups/members/batchupdate"})
    assert batch["quota"] == {"daily_limit": 100_000, "used": 0, "remain": 100_000}
    assert (await api.call("clear_quota", {"appid": "wx-other"}))["errcode"] == 40013
    assert await api.call("clear_quota", {"appid": sb.state.appid}) == OK
    assert (await api.call("openapi/quota/get", cgi))["quota"]["used"] == 0
    assert "groups" in await api.call("groups/get")
    assert sb.state.calls["groups/get"] == 4  # every arrival, refused ones included


async def test_daily_quota_set_live(api: Api, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(daily_quota={"groups/members/update": 1})
    body = {"openid": users()[0], "to_groupid": 2}
    assert await api.call("groups/members/update", body) == OK
    assert (await api.call("groups/members/update", body))["errcode"] == 45009


async def test_minute_quota_on_sandbox_clock(session: aiohttp.ClientSession,
                                             sandbox_factory: SandboxFactory,
                                             fake_clock: FakeClock) -> None:
    sb = await sandbox_factory(SandboxConfig(users=3, minute_quota=3), clock=fake_clock)
    api = await api_for(session, sb)  # the token fetch counts too
    assert "groups" in await api.call("groups/get")
    assert "groups" in await api.call("groups/get")
    assert (await api.call("groups/get"))["errcode"] == 45011
    fake_clock.advance(60)
    assert "groups" in await api.call("groups/get")
    cgi = {"cgi_path": "/cgi-bin/groups/get"}
    assert (await api.call("openapi/quota/get", cgi))["quota"]["used"] == 3


# --- faults ---------------------------------------------------------------------------------

MOVED_USER = sandbox_openids(1, 0)[0]
MOVE: Json = {"openid": MOVED_USER, "to_groupid": 2}


async def post_move(api: Api, seconds: float = 5.0) -> aiohttp.ClientResponse:
    url = f"{api.sb.base_url}/cgi-bin/groups/members/update"
    async with api.session.post(url, params={"access_token": api.token}, json=MOVE,
                                timeout=aiohttp.ClientTimeout(total=seconds)) as resp:
        await resp.read()
        return resp


async def test_error_rate(api: Api, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(error_rate=1.0)
    assert await api.call("groups/members/update", MOVE) == {"errcode": -1,
                                                             "errmsg": "system error"}
    assert sandbox.state.members[MOVED_USER] == 0


async def test_http_error_rate(api: Api, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(http_error_rate=1.0)
    statuses = set()
    for _ in range(12):
        resp = await post_move(api)
        statuses.add(resp.status)
        assert resp.content_type == "text/html"
    assert statuses == {502, 503}
    assert sandbox.state.members[MOVED_USER] == 0


async def test_drop_rate(api: Api, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post_move(api)
    assert sandbox.state.members[MOVED_USER] == 0


async def test_hang_applies_the_call(api: Api, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(hang_rate=1.0)
    with pytest.raises(asyncio.TimeoutError):
        await post_move(api, seconds=0.3)
    assert sandbox.state.members[MOVED_USER] == 2


async def test_latency(api: Api, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(latency_ms=150, jitter_ms=50)
    started = time.monotonic()
    await api.call("groups/get")
    assert 0.15 <= time.monotonic() - started < 2


async def test_admin_never_faults(api: Api, sandbox: RunningSandbox) -> None:
    faults = await api.admin("faults", {"drop_rate": 1.0, "http_error_rate": 1.0,
                                        "latency_ms": 5000, "daily_quota": {"token": 5}})
    assert faults["drop_rate"] == 1.0
    assert faults["daily_quota"] == {"token": 5}
    assert sandbox.state.faults.latency_ms == 5000
    assert (await api.admin("state"))["groups"][0]["count"] == 200
    assert await api.admin("move", MOVE) == OK
    assert (await api.admin("timeline"))["calls"][0][1] == "token"


@pytest.mark.parametrize("body", [{"nope": 1}, {"error_rate": 2}, {"daily_quota": {"x": 1}},
                                  {"minute_quota": "many"}, [1]])
async def test_admin_faults_rejects_bad_settings(session: aiohttp.ClientSession,
                                                 sandbox: RunningSandbox, body: Any) -> None:
    async with session.post(f"{sandbox.base_url}/sandbox/faults", json=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]
    assert sandbox.state.faults.error_rate == 0.0


# --- admin ----------------------------------------------------------------------------------

async def test_admin_state_timeline_and_move(api: Api, sandbox: RunningSandbox) -> None:
    await api.call("groups/create", {"group": {"name": "外部"}})
    assert await api.admin("move", {"openid": users()[5], "to_groupid": 100}) == OK
    missing = await api.admin("move", {"openid": "o-nobody", "to_groupid": 100})
    assert missing["errcode"] == 40003
    state = await api.admin("state")
    assert state["groups"][-1] == {"id": 100, "name": "外部", "count": 1}
    assert state["members"][users()[5]] == 100
    assert len(state["members"]) == 200
    assert state["calls"] == {"token": 1, "groups/create": 1}
    timeline = (await api.admin("timeline"))["calls"]
    assert [endpoint for _, endpoint in timeline] == ["token", "groups/create"]
    assert 0 <= timeline[0][0] <= timeline[1][0]
    assert sandbox.state.snapshot()["groups"] == state["groups"]


async def test_unknown_cgi_endpoint_is_404(api: Api, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{api.sb.base_url}/cgi-bin/no/such") as resp:
        assert resp.status == 404


# --- CLI ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--error-rate", "1.5"], "batchmove: error_rate must be between 0 and 1, got 1.5"),
    (["--hang-rate", "-0.5"], "batchmove: hang_rate must be between 0 and 1, got -0.5"),
    (["--users", "-3"], "batchmove: users must be an integer >= 0, got -3"),
    (["--latency-ms", "-1"], "batchmove: latency_ms must be >= 0, got -1.0"),
    (["--minute-quota", "-1"], "batchmove: minute_quota must be >= 0, got -1"),
    (["--daily-quota", "groups/get"],
     "batchmove: --daily-quota expects ENDPOINT=N with N >= 0, got 'groups/get'"),
    (["--daily-quota", "groups/get=-1"],
     "batchmove: --daily-quota expects ENDPOINT=N with N >= 0, got 'groups/get=-1'"),
    (["--port", "70000"], "batchmove: --port must be between 0 and 65535, got 70000"),
    (["--host", "0.0.0.0"], "batchmove: refusing to bind non-loopback address 0.0.0.0 "
                            "(use --allow-non-loopback to expose the sandbox)"),
    (["--host", "example.com"], "batchmove: refusing to bind non-loopback address example.com "
                                "(use --allow-non-loopback to expose the sandbox)"),
])
def test_cli_refuses_bad_flags(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["sandbox", *args])
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == message
    assert "Traceback" not in result.output


def test_cli_unknown_daily_quota_endpoint() -> None:
    result = CliRunner().invoke(cli, ["sandbox", "--daily-quota", "groups/nope=3"])
    assert result.exit_code == 2
    assert result.output.startswith("batchmove: --daily-quota: unknown endpoint 'groups/nope'")


async def test_sandbox_process_serves(sandbox_process: Any,
                                      session: aiohttp.ClientSession) -> None:
    base_url = sandbox_process("--users", "30", "--group", "高价值客户", "--page-size", "20",
                               "--daily-quota", "groups/getid=0", "--appid", "wxtest")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
    query = {"grant_type": "client_credential", "appid": "wxtest", "secret": DEFAULT_SECRET}
    async with session.get(f"{base_url}/cgi-bin/token", params=query) as resp:
        token = (await resp.json())["access_token"]
    params = {"access_token": token}
    async with session.get(f"{base_url}/cgi-bin/user/get", params=params) as resp:
        assert (await resp.json())["count"] == 20
    async with session.post(f"{base_url}/cgi-bin/groups/getid", params=params,
                            json={"openid": users(1)[0]}) as resp:
        assert (await resp.json())["errcode"] == 45009
    async with session.get(f"{base_url}/sandbox/state") as resp:
        state = await resp.json()
    assert state["groups"][-1] == {"id": 100, "name": "高价值客户", "count": 0}


def test_process_exits_cleanly_and_prints_no_secret() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "batchmove", "sandbox", "--port", "0"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on http://127.0.0.1:")
    base_url = line.split()[-1]
    query = f"grant_type=client_credential&appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}"
    with urllib.request.urlopen(f"{base_url}/cgi-bin/token?{query}") as resp:
        token = resp.read().decode()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert DEFAULT_SECRET not in line + out + err
    assert token.split('"')[3] not in out + err


@pytest.mark.parametrize("stdout", ["closed pipe", "no stdout"])
def test_a_sandbox_without_a_reader_keeps_serving_and_exits_quietly(stdout: str) -> None:
    """`batchmove sandbox | head -c 0` (the reader gone before `listening on`) and a sandbox
    started with fd 1 closed: it serves, and SIGTERM ends it with exit 0 and nothing on stderr
    (it used to say "cannot listen on ...: Broken pipe", exit 2, or print a traceback)."""
    port = free_port()
    command = [sys.executable, "-m", "batchmove", "sandbox", "--port", str(port)]
    if stdout == "closed pipe":
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.close()
    else:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE,
                                preexec_fn=lambda: os.close(1))
    query = f"grant_type=client_credential&appid={DEFAULT_APPID}&secret={DEFAULT_SECRET}"
    answer = _first_answer(f"http://127.0.0.1:{port}/cgi-bin/token?{query}", proc)
    assert b"access_token" in answer
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert (proc.returncode, err) == (0, b"")


def _first_answer(url: str, proc: subprocess.Popen[bytes]) -> bytes:
    for _ in range(200):  # the process needs ~1 s to import and bind
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return bytes(resp.read())
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the sandbox never answered")
