"""`plan`, snapshot + `rollback`, and `verify`, against the real sandbox on 127.0.0.1."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from batchmove.errors import UsageError
from batchmove.flows.plan import plan_job
from batchmove.flows.verify import verify_run
from batchmove.models import JobSpec
from batchmove.output.review import write_rollback
from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.engine import (
    QuietEvents,
    account,
    assert_state_matches,
    report_rows,
    run,
    spec_for,
    spread,
    user_state,
    write_moves,
)
from tests.support.sandboxes import SandboxFactory

MOVE_ENDPOINTS = ("groups/members/batchupdate", "groups/members/update", "groups/create")


@pytest.fixture(autouse=True)
def _sandbox_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


def job_rows(n: int) -> list[tuple[str, str]]:
    rows = spread(n, ["高价值客户", "华东媒", "新分组"])
    return [*rows, ("not an openid!", "华东媒"), rows[0]]  # one invalid row, one duplicate


@pytest.mark.parametrize(("batch", "snapshot", "backend"), [
    (50, True, "groups"), (50, False, "groups"), (1, True, "groups"), (7, True, "groups"),
    (50, True, "tags"), (50, False, "tags"), (13, True, "tags")])
async def test_plan_changes_nothing_and_predicts_the_run(
        tmp_path: Path, sandbox_factory: SandboxFactory, batch: int, snapshot: bool,
        backend: str) -> None:
    sb = await sandbox_factory(account(["高价值客户", "华东媒"], users=437))
    rows = job_rows(437)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    batch_size=batch, snapshot=snapshot, backend=backend)
    before = sb.state.snapshot()
    plan = await plan_job(spec, QuietEvents())
    after = sb.state.snapshot()
    assert plan.exit_code == 0
    assert after == before | {"calls": after["calls"], "quota_used": after["quota_used"]}
    assert not any(sb.state.calls[e] for e in MOVE_ENDPOINTS)
    listing = "tags/get" if backend == "tags" else "groups/get"
    assert set(sb.state.calls) <= {"stable_token", listing, "openapi/quota/get"}
    predicted = {e: n for e, n in plan.calls.items() if e != "total"}
    written = json.loads((tmp_path / "run" / "plan.json").read_text(encoding="utf-8"))
    assert written["calls"] == plan.calls
    assert plan.rows == {"pending": 437, "invalid": 1, "duplicate": 1}
    assert [g["name"] for g in plan.groups["create"]] == ["新分组"]

    calls_before = dict(sb.state.calls)
    result = await run(spec)
    assert result.exit_code == 1  # the invalid row
    made = {e: sb.state.calls[e] - calls_before.get(e, 0) for e in predicted}
    assert made == predicted


async def test_plan_reports_days_needed_when_quota_is_too_small(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(
        users=2_000, groups=["A"], daily_quota={"groups/members/batchupdate": 15}))
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(2_000, ["A"])), tmp_path / "run")
    plan = await plan_job(spec, QuietEvents())
    assert plan.exit_code == 0  # it can run; it takes three days
    fit = plan.quota["groups/members/batchupdate"]
    assert fit == {"needed": 40, "remain": 15, "others": 0, "daily_limit": 15,
                   "fits_today": False, "days": 3}


async def test_plan_exits_2_when_the_run_would_refuse(tmp_path: Path,
                                                      sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=20))
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(20, ["黑名单"])), tmp_path / "run")
    plan = await plan_job(spec, QuietEvents())
    assert plan.exit_code == 2
    assert "blacklist" in plan.message
    assert plan.can_run is False


@pytest.mark.parametrize(("backend", "untag"), [
    ("groups", ()), ("tags", ()), ("tags", "others"), ("tags", ("旧甲",))])
async def test_run_then_rollback_restores_the_snapshot(
        tmp_path: Path, sandbox_factory: SandboxFactory, backend: str,
        untag: tuple[str, ...] | str) -> None:
    sb = await sandbox_factory(account(["旧甲", "旧乙", "A"], users=600))
    followers = sandbox_openids(600)
    for i, openid in enumerate(followers[:300]):  # a varied "before" state
        sb.state.move_directly(openid, 100 + i % 3)
        sb.state.tags.apply_directly(openid, 100 + i % 3, False)
        if i % 5 == 0:
            sb.state.tags.apply_directly(openid, 100 + (i + 1) % 3, False)
    before = user_state(sb, backend)
    rows = spread(500, ["A", "B", "C"])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run", snapshot=True,
                    backend=backend, untag=untag)
    assert (await run(spec)).exit_code == 0
    assert_state_matches(sb, rows, backend)

    undo_file = write_rollback(tmp_path / "run")
    path = undo_file.path
    assert (undo_file.users, undo_file.needs_blacklist, undo_file.backend) == (500, False, backend)
    undo = JobSpec(input=path, name="undo", api_base=sb.base_url, out=tmp_path / "undo",
                   rate=0.0, snapshot=True, backend=backend)
    result = await run(undo)
    assert result.exit_code == 0, result.message
    assert user_state(sb, backend) == before


async def test_rollback_of_a_run_stopped_half_way(tmp_path: Path,
                                                  sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(
        users=1_000, groups=["A"], daily_quota={"groups/members/batchupdate": 7}))
    before = dict(sb.state.members)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(1_000, ["A"])), tmp_path / "run",
                    snapshot=True)
    assert (await run(spec)).exit_code == 3
    assert sb.state.members != before
    path = write_rollback(tmp_path / "run").path
    sb.state.quotas.clear()
    sb.set_faults(daily_quota={"groups/members/batchupdate": 100_000})
    undo = JobSpec(input=path, name="undo", api_base=sb.base_url, out=tmp_path / "undo", rate=0.0)
    assert (await run(undo)).exit_code == 0
    assert sb.state.members == before


async def test_rollback_needs_a_snapshot(tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=20))
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(20, ["A"])), tmp_path / "run",
                    snapshot=False)
    assert (await run(spec)).exit_code == 0
    with pytest.raises(UsageError, match="no snapshot"):
        write_rollback(tmp_path / "run")


@pytest.mark.parametrize("backend", ["groups", "tags"])
async def test_verify_finds_a_user_moved_since(tmp_path: Path,
                                               sandbox_factory: SandboxFactory,
                                               backend: str) -> None:
    sb = await sandbox_factory(account(["A", "B"], users=250))
    rows = spread(250, ["A", "B"])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    backend=backend)
    assert (await run(spec)).exit_code == 0
    clean = await verify_run(tmp_path / "run", None, QuietEvents())
    assert clean.exit_code == 0
    assert (clean.checked, clean.mismatches) == (250, 0)
    intruder = rows[17][0]
    if backend == "tags":  # someone else removes the user's new tag
        sb.state.tags.apply_directly(intruder, sb.state.tags.tag_ids_of(intruder)[0], True)
    else:  # someone else moves one user to 星标组
        sb.state.move_directly(intruder, 2)
    result = await verify_run(tmp_path / "run", None, QuietEvents())
    assert result.exit_code == 1
    assert (result.checked, result.mismatches) == (250, 1)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["verify"] == {"checked": 250, "mismatches": 1, "exit_code": 1,
                                 "message": result.message}
    flagged = [r for r in report_rows(tmp_path / "run") if r["verified"] not in ("", "ok")]
    assert [r["openid"] for r in flagged] == [intruder]
    assert flagged[0]["verified"] == ("mismatch: tags now none" if backend == "tags"
                                      else "mismatch: now in group 2")


async def test_run_with_verify_flag(tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=120))
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(120, ["A"])), tmp_path / "run",
                    verify=True)
    result = await run(spec)
    assert result.exit_code == 0
    assert sb.state.calls["user/info/batchget"] == 2
    assert {r["verified"] for r in report_rows(tmp_path / "run")} == {"ok"}


def test_rollback_file_is_an_ordinary_input(tmp_path: Path) -> None:
    from batchmove.intake.loader import open_input

    path = tmp_path / "rollback.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows([("openid", "to_groupid", "source_row", "status_in_run"),
                                 (sandbox_openids(1)[0], "0", "2", "moved")])
    source = open_input(JobSpec(input=path))
    assert source.target_kind == "id"
    assert [r.target for chunk in source.rows() for r in chunk] == ["0"]
