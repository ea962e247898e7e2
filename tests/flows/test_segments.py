"""Segment jobs (`[select]` instead of `input`) end to end against the sandbox on 127.0.0.1:
exactly the selected followers move, the selection is frozen once, plan lists read-only."""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import Any

import pytest

import batchmove
from batchmove.errors import UsageError
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.sandboxes import SandboxFactory

pytestmark = pytest.mark.usefixtures("sandbox_credentials")

USERS = 1_000
PAGE = 64
MOVE = "groups/members/batchupdate"


async def account(sandbox_factory: SandboxFactory, **settings: Any) -> RunningSandbox:
    """Followers in groups 0/100/101 by position; every third carries tag 100 (旧分层A),
    every fifth tag 102."""
    sb = await sandbox_factory(SandboxConfig(
        users=USERS, page_size=PAGE, groups=["老客户", "高价值客户"],
        tags=["旧分层A", "高价值客户", "华东"], **settings))
    for i, openid in enumerate(sb.state.followers):
        if i % 3:
            sb.state.move_directly(openid, 99 + i % 3)
        if i % 3 == 0:
            sb.state.tag_directly(openid, 100)
        if i % 5 == 0:
            sb.state.tag_directly(openid, 102)
    return sb


def job(tmp_path: Path, sb: RunningSandbox, body: str) -> Path:
    path = tmp_path / "seg.toml"
    path.write_text(f'api_base = "{sb.base_url}"\nrate = 0\nconfirm = false\n'
                    f'out = "run"\n{body}', encoding="utf-8")
    return path


async def test_tag_merge_moves_exactly_the_selection(tmp_path: Path,
                                                     sandbox_factory: SandboxFactory) -> None:
    sb = await account(sandbox_factory)
    before = sb.state.tags.user_tags_snapshot()
    path = job(tmp_path, sb, 'backend = "tags"\nuntag = ["旧分层A"]\n'
                             '[select]\ntag = "旧分层A"\nto = "高价值客户"\n')
    result = await batchmove.run_async(path)
    assert result.exit_code == 0, result.message
    selected = {o for o, tags in before.items() if 100 in tags}
    assert result.counts["moved"] == len(selected)
    after = sb.state.tags.user_tags_snapshot()
    for openid in sb.state.followers:
        old = set(before.get(openid, ()))
        wanted = (old - {100}) | {101} if openid in selected else old
        assert set(after.get(openid, ())) == wanted, openid
    frozen = tmp_path / "run" / "input.csv"
    assert stat.S_IMODE(frozen.stat().st_mode) == 0o600
    assert frozen.read_text(encoding="utf-8-sig").splitlines()[0] == "openid,to_group_name"
    listed = sb.state.calls["user/tag/get"]
    again = await batchmove.run_async(path)  # finished: nothing to do, and never re-listed
    assert again.exit_code == 0
    assert sb.state.calls["user/tag/get"] == listed


@pytest.mark.parametrize(("select", "moved_from"), [
    ("group = 100\nto_id = 101", {100}),
    ('group = "老客户"\nto = "高价值客户"', {100}),
    ("all = true\nto_id = 101", {0, 100, 101}),
])
async def test_group_selection_moves_exactly_the_selection(
        tmp_path: Path, sandbox_factory: SandboxFactory, select: str,
        moved_from: set[int]) -> None:
    sb = await account(sandbox_factory)
    before = dict(sb.state.members)
    result = await batchmove.run_async(job(tmp_path, sb, f"[select]\n{select}\n"))
    assert result.exit_code == 0, result.message
    selected = {o for o, g in before.items() if g in moved_from}
    assert {o for o, g in sb.state.members.items() if g != before[o]} == {
        o for o in selected if before[o] != 101}
    assert all(sb.state.members[o] == 101 for o in selected)
    moved = sum(1 for o in selected if before[o] != 101)
    assert result.counts["moved"] == moved
    assert result.counts["already"] == len(selected) - moved
    assert sb.state.calls[MOVE] == math.ceil(moved / 50)


async def test_plan_lists_read_only_and_freezes_nothing(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await account(sandbox_factory)
    before = dict(sb.state.members)
    plan = await batchmove.plan_async(job(tmp_path, sb, "[select]\ngroup = 0\nto = \"老客户\"\n"))
    assert plan.can_run, plan.blocked
    selected = sum(1 for g in before.values() if g == 0)
    assert plan.selection is not None
    assert plan.selection["followers"] == selected
    assert plan.users_to_move == selected
    pages = math.ceil(USERS / PAGE)
    assert plan.calls["user/get"] >= pages  # the listing's pages are counted in
    assert plan.calls[MOVE] == math.ceil(selected / 50)
    assert not (tmp_path / "run" / "input.csv").exists()
    assert sb.state.members == before


async def test_listing_stopped_by_the_quota_resumes_and_ends_exact(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await account(sandbox_factory, daily_quota={"user/get": 6})
    before = dict(sb.state.members)
    path = job(tmp_path, sb, "[select]\ngroup = 101\nto = \"老客户\"\n")
    first = await batchmove.run_async(path)
    assert first.exit_code == 3
    assert first.stop_reason == "daily_quota"
    assert first.message.startswith("listing the selection stopped: the daily API quota")
    assert not (tmp_path / "run" / "input.csv").exists()
    assert sb.state.members == before  # nothing moved while listing
    sb.state.quotas.clear()
    sb.set_faults(daily_quota={"user/get": 500})
    second = await batchmove.run_async(path)
    assert second.exit_code == 0, second.message
    selected = {o for o, g in before.items() if g == 101}
    assert {o for o, g in sb.state.members.items() if g != before[o]} == selected
    assert second.counts["moved"] == len(selected)


@pytest.mark.parametrize(("select", "first"), [
    ('tag = "旧分层B"\nto = "x"', "unknown tag '旧分层B'"),
    ('group = 555\nto = "x"', "unknown group '555'"),
])
async def test_unknown_selection_is_one_clear_error(tmp_path: Path,
                                                    sandbox_factory: SandboxFactory,
                                                    select: str, first: str) -> None:
    sb = await account(sandbox_factory)
    with pytest.raises(UsageError) as caught:
        await batchmove.run_async(job(tmp_path, sb, f"[select]\n{select}\n"))
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(first)
    assert sb.state.calls[MOVE] == 0


async def test_restart_lists_the_selection_again(tmp_path: Path,
                                                 sandbox_factory: SandboxFactory) -> None:
    sb = await account(sandbox_factory)
    path = job(tmp_path, sb, "[select]\ngroup = 0\nto_id = 100\n")
    first = await batchmove.run_async(path)
    assert first.exit_code == 0, first.message
    moved = first.counts["moved"]
    newcomers = [o for o, g in sb.state.members.items() if g == 101][:7]
    for openid in newcomers:  # someone else puts 7 users into group 0 since
        sb.state.move_directly(openid, 0)
    resumed = await batchmove.run_async(path)  # finished and frozen: nobody new moves
    assert resumed.counts["moved"] == moved
    assert all(sb.state.members[o] == 0 for o in newcomers)
    again = await batchmove.run_async(path, restart=True)
    assert again.exit_code == 0, again.message
    assert again.counts["moved"] == len(newcomers)
    assert all(sb.state.members[o] == 100 for o in newcomers)
