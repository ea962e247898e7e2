"""The sandbox's WeCom robot, ping and webhook receivers over real HTTP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from batchmove.sandbox import RobotState, RunningSandbox, key_hash, robot_app
from tests.support.sandboxes import FakeClock, SandboxFactory

KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"


async def _post(sb: RunningSandbox, body: Any, key: str = KEY) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            sb.robot_url(key), json=body) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
        return answer


def _markdown(content: str) -> dict[str, Any]:
    return {"msgtype": "markdown", "markdown": {"content": content}}


@pytest.mark.parametrize(("body", "errcode"), [
    (_markdown("## done"), 0),
    ({"msgtype": "text", "text": {"content": "hello", "mentioned_list": ["@all"]}}, 0),
    (_markdown("a" * 4096), 0),
    (_markdown("好" * 1365 + "a"), 0),  # 4,096 bytes exactly
    (_markdown("a" * 4097), 40058),
    (_markdown("好" * 1366), 40058),  # 4,098 bytes
    ({"msgtype": "text", "text": {"content": "b" * 2048}}, 0),
    ({"msgtype": "text", "text": {"content": "b" * 2049}}, 40058),
    (_markdown(""), 44004),
    ({"msgtype": "markdown"}, 44004),
    ({"msgtype": "image", "image": {}}, 40008),
])
async def test_limits_and_errcodes(sandbox: RunningSandbox, body: Any, errcode: int) -> None:
    answer = await _post(sandbox, body)
    assert answer["errcode"] == errcode
    assert len(sandbox.robot.messages) == (1 if errcode == 0 else 0)
    if errcode == 40058:
        assert "exceed max length" in answer["errmsg"]


async def test_twenty_a_minute_per_key_on_the_injected_clock(
        sandbox_factory: SandboxFactory, fake_clock: FakeClock) -> None:
    sb = await sandbox_factory(clock=fake_clock)
    answers = []
    for i in range(25):
        answers.append((await _post(sb, _markdown(f"m{i}")))["errcode"])
        fake_clock.advance(1.0)
    assert answers == [0] * 20 + [45009] * 5
    assert (await _post(sb, _markdown("other robot"), key="another-key"))["errcode"] == 0
    fake_clock.advance(35.0)  # the first message is now 60 s old: one slot frees
    assert (await _post(sb, _markdown("later")))["errcode"] == 0
    assert (await _post(sb, _markdown("too soon")))["errcode"] == 45009
    assert len(sb.robot.messages_of(KEY)) == 21


async def test_admin_lists_messages_without_the_key(sandbox: RunningSandbox) -> None:
    await _post(sandbox, _markdown("## 完成"))
    async with aiohttp.ClientSession() as session, session.get(
            f"{sandbox.base_url}/sandbox/robot/messages") as resp:
        listed = await resp.json()
        text = await resp.text()
    assert listed["messages"] == [{"robot": key_hash(KEY), "msgtype": "markdown",
                                   "content": "## 完成"}]
    assert KEY not in text


async def test_faults_pings_and_hooks(sandbox: RunningSandbox) -> None:
    base = sandbox.base_url
    async with aiohttp.ClientSession() as session:
        await session.post(f"{base}/sandbox/robot/faults", json={"errcode": -1})
        async with session.post(sandbox.robot_url(KEY), json=_markdown("x")) as resp:
            assert (await resp.json())["errcode"] == -1
        await session.post(f"{base}/sandbox/robot/faults", json={"status": 503})
        async with session.post(sandbox.robot_url(KEY), json=_markdown("x")) as resp:
            assert resp.status == 503
        await session.post(f"{base}/sandbox/robot/faults", json={})
        for what in ("start", "0"):
            async with session.get(f"{base}/ping/abc-123/{what}") as resp:
                assert resp.status == 200
        async with session.post(f"{base}/hook/ops", json={"exit_code": 0}) as resp:
            assert resp.status == 200
    assert [(p["uuid"], p["what"]) for p in sandbox.robot.pings] == [
        ("abc-123", "start"), ("abc-123", "0")]
    assert sandbox.robot.hooks == [{"name": "ops", "body": {"exit_code": 0}}]
    assert sandbox.robot.messages == []


async def test_standalone_app_refuses_unknown_keys() -> None:
    robot = RobotState(keys=frozenset({KEY}))
    runner = web.AppRunner(robot_app(robot))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            for key, code in (("wrong", 93000), (KEY, 0)):
                url = f"http://127.0.0.1:{port}/cgi-bin/webhook/send?key={key}"
                async with session.post(url, json=_markdown("hi")) as resp:
                    assert (await resp.json())["errcode"] == code
    finally:
        await runner.cleanup()
    assert robot.answers == [93000, 0]
