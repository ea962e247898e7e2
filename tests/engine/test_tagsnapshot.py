"""The tags backend's snapshot from tag member lists (`user/tag/get`), against the real sandbox
on 127.0.0.1: chosen from the counts when cheaper, shown in the plan, exact for rollback."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchmove.cli.display import format_plan
from batchmove.engine.snapshotsource import (
    BATCHGET,
    MEMBERS,
    SnapshotChoice,
    choose_source,
    member_pages,
)
from batchmove.flows.plan import plan_job
from batchmove.models import JobSpec, Target
from batchmove.output.review import write_rollback
from batchmove.sandbox import RunningSandbox, SandboxConfig, sandbox_openids
from tests.support.engine import QuietEvents, run, spec_for, spread, user_state, write_moves
from tests.support.sandboxes import SandboxFactory

OLD = ["旧甲", "旧乙", "旧丙"]


@pytest.fixture(autouse=True)
def _sandbox_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


def tags(*counts: int) -> list[Target]:
    return [Target(0, "未分组", 0), Target(1, "黑名单", 0),
            *(Target(100 + i, f"t{i}", n) for i, n in enumerate(counts))]


@pytest.mark.parametrize(("users", "counts", "expected"), [
    # tag 1 (黑名单) is listed: one call; tag 0 (未分组) never is
    (100_000, (12_500,) * 8, SnapshotChoice(MEMBERS, 25, BATCHGET, 1_000)),
    (1_000, (500, 500), SnapshotChoice(MEMBERS, 5, BATCHGET, 10)),
    (500, (500, 500), SnapshotChoice(BATCHGET, 5, MEMBERS, 5)),  # a tie: batchget
    (400, (500, 500), SnapshotChoice(BATCHGET, 4, MEMBERS, 5)),
    (1_000, (3_000_000,), SnapshotChoice(BATCHGET, 10, MEMBERS, 302)),
    (1_000, (0, 0, 10_000), SnapshotChoice(MEMBERS, 5, BATCHGET, 10)),  # empty tags: 1 call
    (101, (), SnapshotChoice(MEMBERS, 1, BATCHGET, 2)),
    # cheaper in calls, but more pages than a day's user/tag/get quota (500): batchget
    (10_000_000, (1_250_000,) * 8, SnapshotChoice(BATCHGET, 100_000, MEMBERS, 1_009)),
    (5_000_000, (620_000,) * 8, SnapshotChoice(BATCHGET, 50_000, MEMBERS, 505)),
    (5_000_000, (600_000,) * 8, SnapshotChoice(MEMBERS, 489, BATCHGET, 50_000)),  # fits
])
def test_the_cheaper_source_is_chosen_from_the_counts(
        users: int, counts: tuple[int, ...], expected: SnapshotChoice) -> None:
    assert choose_source(users, tags(*counts)) == expected
    assert member_pages(tags(*counts)) == (expected.calls if expected.source == MEMBERS
                                           else expected.other_calls)


@pytest.mark.parametrize(("setting", "users", "source"), [
    ("batchget", 100_000, BATCHGET), ("members", 100, MEMBERS), ("auto", 100, BATCHGET)])
def test_the_job_can_name_the_source(setting: str, users: int, source: str) -> None:
    assert choose_source(users, tags(*(12_500,) * 8), setting).source == source
    assert choose_source(users, None, setting).source == BATCHGET  # the groups backend


def test_the_choice_says_what_the_other_source_would_cost() -> None:
    assert choose_source(100_000, tags(*(12_500,) * 8)).describe() == (
        "snapshot from tag member lists: 25 user/tag/get calls instead of 1,000 "
        "user/info/batchget")


async def tagged_account(sandbox_factory: SandboxFactory, users: int,
                         **settings: Any) -> RunningSandbox:
    """`users` followers; the first half carry one or two of three old tags."""
    sb = await sandbox_factory(SandboxConfig(users=users, tags=OLD, **settings))
    for i, openid in enumerate(sandbox_openids(users)[:users // 2]):
        sb.state.tags.apply_directly(openid, 100 + i % 3, False)
        if i % 5 == 0:
            sb.state.tags.apply_directly(openid, 100 + (i + 1) % 3, False)
    return sb


def pages(sb: RunningSandbox, page: int = 10_000) -> int:
    """`user/tag/get` calls to list every tag but 0: its pages and the empty last one."""
    return sum(math.ceil(t["count"] / page) + 1 for t in sb.state.tags.listing() if t["id"])


def prev_tags(run_dir: Path) -> dict[str, list[int] | None]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as conn:
        return {o: None if p is None else json.loads(p)
                for o, p in conn.execute("SELECT openid, prev_tags FROM rows")}


@pytest.mark.parametrize(("users", "setting", "source", "calls"), [
    (2_000, "auto", MEMBERS, {MEMBERS: 8, BATCHGET: 20}),  # 3 tags x 2, tags 1 and 2 x 1
    (400, "auto", BATCHGET, {BATCHGET: 4, MEMBERS: 8}),
    (2_000, "batchget", BATCHGET, {BATCHGET: 20, MEMBERS: 8}),
    (400, "members", MEMBERS, {MEMBERS: 8, BATCHGET: 4})])
async def test_plan_shows_the_source_and_the_run_makes_its_calls(
        tmp_path: Path, sandbox_factory: SandboxFactory, users: int, setting: str, source: str,
        calls: dict[str, int]) -> None:
    sb = await tagged_account(sandbox_factory, users)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(users, ["新"])), tmp_path / "run",
                    backend="tags", snapshot=True, snapshot_source=setting)
    plan = await plan_job(spec, QuietEvents())
    other = BATCHGET if source == MEMBERS else MEMBERS
    assert plan.snapshot_source == source
    assert plan.snapshot_alternative == {other: calls[other]}
    assert {e: plan.calls.get(e) for e in (source, other)} == {source: calls[source], other: None}
    how = "tag member lists" if source == MEMBERS else "user info in bulk"
    assert (f"  snapshot from {how}: {calls[source]:,} {source} calls instead of "
            f"{calls[other]:,} {other}") in format_plan(plan).splitlines()  # the CLI's plan
    written = json.loads((tmp_path / "run" / "plan.json").read_text(encoding="utf-8"))
    assert written["snapshot_source"] == source
    assert written["snapshot_alternative"] == plan.snapshot_alternative

    before = {o: sb.state.tags.tag_ids_of(o) for o in sandbox_openids(users)}
    made = dict(sb.state.calls)
    result = await run(spec)
    assert result.exit_code == 0, result.message
    assert sb.state.calls[source] - made.get(source, 0) == calls[source]
    assert sb.state.calls[other] == made.get(other, 0)  # plan and run agree: no other calls
    assert result.summary["snapshot_source"] == source
    assert prev_tags(tmp_path / "run") == before  # the same sets either source reads


async def test_rollback_after_a_member_list_snapshot_restores_exact_tags(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await tagged_account(sandbox_factory, 2_000)
    before = user_state(sb, "tags")
    strangers = [(o, "新") for o in sandbox_openids(3, seed=7)]  # not followers
    rows = [*spread(2_000, ["新"]), *strangers]
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    backend="tags", snapshot=True, untag="others")
    result = await run(spec)
    assert result.exit_code == 1  # the three strangers: WeChat's errcode, as with batchget
    assert result.summary["snapshot_source"] == MEMBERS
    assert (result.counts["moved"], result.counts["failed"]) == (2_000, 3)
    assert {r[0] for r in report_failures(tmp_path / "run")} == {o for o, _ in strangers}
    new = max(t["id"] for t in sb.state.tags.listing())
    assert all(sb.state.tags.tag_ids_of(o) == [new] for o, _ in rows[:2_000])  # others gone

    undo_file = write_rollback(tmp_path / "run")
    assert undo_file.users == 2_003  # the strangers' "no tags" too: harmless, see below
    undo = JobSpec(input=undo_file.path, name="undo", api_base=sb.base_url,
                   out=tmp_path / "undo", rate=0.0, snapshot=True, backend="tags")
    undone = await run(undo)
    assert undone.exit_code == 0, undone.message
    assert undone.counts["already"] == 3  # nothing to give or take: no call for them
    assert user_state(sb, "tags") == before


def report_failures(run_dir: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as conn:
        return list(conn.execute("SELECT openid, errcode FROM rows WHERE status = 'failed'"))


async def test_an_interrupted_member_listing_resumes_at_its_checkpoint(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await tagged_account(sandbox_factory, 1_200, page_size=100,
                              daily_quota={"user/tag/get": 5})
    before = {o: sb.state.tags.tag_ids_of(o) for o in sandbox_openids(1_200)}
    listing = pages(sb, 100)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(1_200, ["旧甲"])),
                    tmp_path / "run", backend="tags", snapshot=True, concurrency=1)
    stopped = await run(spec)
    assert (stopped.exit_code, stopped.stop_reason) == (3, "daily_quota")
    assert set(prev_tags(tmp_path / "run").values()) == {None}  # no half snapshot
    assert sb.state.calls["tags/members/batchtagging"] == 0
    assert sb.state.calls[MEMBERS] == 6  # five pages, then 45009

    sb.state.quotas.clear()
    sb.set_faults(daily_quota={"user/tag/get": 500})
    resumed = await run(spec)
    assert resumed.exit_code == 0, resumed.message
    assert sb.state.calls[MEMBERS] == 6 + listing - 5  # no page listed twice
    assert sb.state.calls[BATCHGET] == 0
    assert prev_tags(tmp_path / "run") == before
    tagged = sum(1 for t in before.values() if 100 in t)
    assert resumed.counts["already"] == tagged  # users already carrying 旧甲


async def test_a_tag_deleted_during_the_listing_is_finished_not_fatal(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await tagged_account(sandbox_factory, 1_200, page_size=100,
                              daily_quota={"user/tag/get": 5})
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(1_200, ["新"])),
                    tmp_path / "run", backend="tags", snapshot=True, concurrency=1)
    assert (await run(spec)).stop_reason == "daily_quota"  # in tag 100's pages
    sb.state.tags.delete({"tag": {"id": 102}})  # not listed yet: its users lose it
    before = {o: sb.state.tags.tag_ids_of(o) for o in sandbox_openids(1_200)}
    sb.state.quotas.clear()
    sb.set_faults(daily_quota={"user/tag/get": 500})
    resumed = await run(spec)
    assert resumed.exit_code == 0, resumed.message
    assert prev_tags(tmp_path / "run") == before
