"""Runs that share an account: who moves whom is registered, an overlap refuses a run (exit 2,
nothing sent) unless allowed, a plan reports it, a run's registration goes when it ends; a tag
WeChat does not see yet (45159) is waited for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import batchmove
from batchmove.engine.backend import client_for
from batchmove.engine.sharing import seed_rates
from batchmove.errors import UsageError
from batchmove.registry import Budget, Claims, Registry, account_of
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.engine import write_moves
from tests.support.sandboxes import SandboxFactory


async def started(sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
                  **config: object) -> RunningSandbox:
    sb = await sandbox_factory(SandboxConfig(users=40, groups=["A", "B"], tags=["T"],
                                             **config))  # type: ignore[arg-type]
    monkeypatch.setenv("WECHAT_APPID", sb.state.appid)
    monkeypatch.setenv("WECHAT_APPSECRET", sb.state.secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)
    return sb


def other_run(sb: RunningSandbox, tmp_path: Path, openids: list[str]) -> Claims:
    """A run of another process on the same account, moving `openids` right now."""
    spec = batchmove.job_spec(write_moves(tmp_path / "x.csv", [(o, "A") for o in openids]),
                              api_base=sb.base_url)
    claims = Claims(Registry(), account_of(spec))
    claims.register(tmp_path / "runs" / "other", "other", [openids])
    return claims


async def test_an_overlapping_run_is_refused_and_nothing_is_sent(
        sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    sb = await started(sandbox_factory, monkeypatch)
    followers = sb.state.followers
    other_run(sb, tmp_path, followers[:5])
    data = write_moves(tmp_path / "mine.csv", [(o, "B") for o in followers[:20]])
    plan = await batchmove.plan_async(data, api_base=sb.base_url, out=tmp_path / "mine")
    assert [(o.job, o.users, o.state) for o in plan.overlaps] == [("other", 5, "running")]
    assert plan.exit_code == 2
    assert plan.blocked is not None
    assert plan.blocked.startswith("5 of these users are also moved by the running run 'other'")
    with pytest.raises(UsageError, match="5 of these users are also moved by the running run"):
        await batchmove.run_async(data, api_base=sb.base_url, out=tmp_path / "mine")
    assert sb.state.move_log == []
    result = await batchmove.run_async(data, api_base=sb.base_url, out=tmp_path / "mine",
                                       allow_overlap=True)
    assert result.counts["moved"] == 20


async def test_a_run_registers_while_it_runs_and_leaves_when_it_ends(
        sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    sb = await started(sandbox_factory, monkeypatch)
    data = write_moves(tmp_path / "mine.csv", [(o, "A") for o in sb.state.followers[:10]])
    seen: list[int] = []

    def watch(_: object) -> None:
        status = batchmove.account_status(data, api_base=sb.base_url)
        seen.append(len(status.runs))

    result = await batchmove.run_async(data, api_base=sb.base_url, out=tmp_path / "r",
                                       on_progress=watch)
    assert result.exit_code == 0
    assert max(seen) == 1  # registered while it ran
    status = batchmove.account_status(data, api_base=sb.base_url)
    assert status.runs == []
    assert result.summary["rate"] == "auto"
    assert "groups/members/batchupdate" in result.summary["rate_found"]


async def test_disjoint_runs_do_not_overlap(sandbox_factory: SandboxFactory,
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    sb = await started(sandbox_factory, monkeypatch)
    other_run(sb, tmp_path, sb.state.followers[20:])
    data = write_moves(tmp_path / "mine.csv", [(o, "A") for o in sb.state.followers[:20]])
    result = await batchmove.run_async(data, api_base=sb.base_url, out=tmp_path / "r")
    assert result.counts["moved"] == 20


async def test_a_new_tag_answering_45159_is_waited_for(
        sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    sb = await started(sandbox_factory, monkeypatch, tag_visible_after=0.8)
    data = write_moves(tmp_path / "t.csv", [(o, "新标签") for o in sb.state.followers[:10]],
                       header=("openid", "tag_name"))
    result = await batchmove.run_async(data, api_base=sb.base_url, out=tmp_path / "t",
                                       backend="tags", create_groups=True)
    assert (result.exit_code, result.counts["moved"]) == (0, 10)
    answers = sb.state.calls["tags/members/batchtagging"]
    assert answers >= 2  # the first answered 45159, a later one went through


async def test_an_embedded_sandbox_run_never_overlaps(tmp_path: Path) -> None:
    data = write_moves(tmp_path / "s.csv", [(o, "A") for o in
                                            SandboxConfig(users=10).follower_openids()])
    for name in ("a", "b"):
        result = await batchmove.run_async(data, api_base="sandbox", out=tmp_path / name,
                                           sandbox={"users": 10, "groups": ["A"]})
        assert result.exit_code == 0
    assert batchmove.account_status(data, api_base="sandbox").runs == []


async def test_todays_quota_spoken_for_by_other_runs_stops_a_run_before_it_starts(
        sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    endpoint = "groups/members/batchupdate"
    sb = await started(sandbox_factory, monkeypatch, daily_quota={endpoint: 10})
    followers = sb.state.followers
    spec = batchmove.job_spec(write_moves(tmp_path / "x.csv", [(followers[0], "A")]),
                              api_base=sb.base_url)
    claims = Claims(Registry(), account_of(spec))  # another run that will send 8 moves
    claims.register(tmp_path / "runs" / "other", "other", [followers[30:]],
                    planned={endpoint: 8})
    data = write_moves(tmp_path / "mine.csv", [(o, "B") for o in followers[:20]])
    plan = await batchmove.plan_async(data, api_base=sb.base_url, out=tmp_path / "mine")
    assert plan.quota[endpoint] == {"needed": 1, "remain": 10, "others": 8,
                                    "daily_limit": 10, "fits_today": True, "days": 1}
    claims.register(tmp_path / "runs" / "other", "other", [followers[30:]],
                    planned={endpoint: 10})  # now it takes every call left today
    plan = await batchmove.plan_async(data, api_base=sb.base_url, out=tmp_path / "mine")
    assert (plan.quota[endpoint]["fits_today"], plan.quota[endpoint]["days"]) == (False, 2)
    result = await batchmove.run_async(data, api_base=sb.base_url, out=tmp_path / "mine")
    assert result.exit_code == 3
    assert "the 10 calls left today are all planned by other runs" in result.message
    assert sb.state.move_log == []
    claims.release(tmp_path / "runs" / "other")  # it ended: the same command resumes
    result = await batchmove.run_async(data, api_base=sb.base_url, out=tmp_path / "mine")
    assert (result.exit_code, result.counts["moved"]) == (0, 20)


async def test_the_snapshots_reads_start_at_the_moves_pace(
        sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """The moves start at the reported limit (a run alone: 99% of 500 calls / 5 s, and at
    least 2 calls a window under it); the reads that feed them (100 users each, 50 a move) at
    twice what the moves take, so a backlog of moves builds at once, where an unreported
    endpoint would start at 20/s. A run that joins another keeps every second within the
    account's rate: the bucket's ceiling comes down to 98% and 2/s under it."""
    sb = await started(sandbox_factory, monkeypatch,
                       rate_limit={"groups/members/batchupdate": [500, 5]})
    spec = batchmove.job_spec(write_moves(tmp_path / "x.csv", [(sb.state.followers[0], "A")]),
                              api_base=sb.base_url)
    async with client_for(spec) as client:
        await seed_rates(client, spec)
        rates = dict(Registry().conn.execute("SELECT scope, rate FROM buckets"))
        assert rates["groups/members/batchupdate"] == 99.0
        assert rates["user/info/batchget"] == 99.0
        assert rates["stable_token"] < 25  # the token's own endpoint: the safe start
        other = Budget(Registry(), account_of(spec), pid=os.getppid())  # a live process
        other.join()
        await seed_rates(client, spec)  # as a second run on the account seeds it
        other.leave()
    found = dict(Registry().conn.execute("SELECT scope, ceiling FROM buckets"))
    assert found["groups/members/batchupdate"] == 98.0
