"""The engine end to end, in-process, against the real sandbox on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from batchmove import api
from batchmove.errors import InputChangedError, RunLockedError, UsageError
from batchmove.flows import run as run_flow
from batchmove.ledger.store import Ledger
from batchmove.sandbox import RunningSandbox, SandboxConfig, sandbox_openids
from tests.support.engine import (
    BACKENDS,
    account,
    assert_state_matches,
    expected_move_calls,
    group_ids_by_name,
    ledger_statuses,
    moves_applied,
    report_rows,
    run,
    spec_for,
    spread,
    write_moves,
)
from tests.support.sandboxes import SandboxFactory

GROUPS = ["高价值客户", "华东媒", "沉睡用户", "新注册", "NA"]


def next_day(sb: RunningSandbox) -> None:
    """The daily quotas reset, back to a normal account's."""
    sb.state.quotas.clear()
    sb.set_faults(daily_quota={"groups/members/batchupdate": 100_000})


@pytest.fixture(autouse=True)
def _sandbox_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


@pytest.mark.parametrize(("users", "groups", "batch"), [
    (1, 1, 50), (50, 1, 50), (51, 1, 50), (1234, 5, 50), (777, 3, 7), (30, 2, 1)])
async def test_move_calls_are_ceil_per_group(tmp_path: Path, sandbox_factory: SandboxFactory,
                                             users: int, groups: int, batch: int) -> None:
    sb = await sandbox_factory(SandboxConfig(users=users, groups=GROUPS[:groups]))
    rows = spread(users, GROUPS[:groups])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    batch_size=batch)
    result = await run(spec)
    assert result.exit_code == 0, result.message
    assert_state_matches(sb, rows)
    endpoint = "groups/members/update" if batch == 1 else "groups/members/batchupdate"
    assert sb.state.calls[endpoint] == expected_move_calls(rows, batch)
    other = ({"groups/members/update", "groups/members/batchupdate"} - {endpoint}).pop()
    assert sb.state.calls[other] == 0
    assert result.summary["calls"][endpoint] == expected_move_calls(rows, batch)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_twenty_thousand_rows_under_faults_end_exact(
        tmp_path: Path, sandbox_factory: SandboxFactory, backend: str) -> None:
    """10% -1, 5% HTTP 502, 2% dropped connections, 1% timeouts, tokens expiring every 3 s."""
    n = 20_000
    sb = await sandbox_factory(account(
        GROUPS[:2], users=n, seed=3, error_rate=0.10, http_error_rate=0.05,
        drop_rate=0.02, hang_rate=0.01, token_ttl=3.0))
    rows = spread(n, GROUPS, seed=3)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    timeout=0.5, concurrency=16, retries=12, snapshot=True, backend=backend)
    result = await run(spec)
    assert result.exit_code == 0, result.message
    assert_state_matches(sb, rows, backend)
    assert ledger_statuses(tmp_path / "run") == {"moved": n}
    report = report_rows(tmp_path / "run")
    assert [int(r["row"]) for r in report] == list(range(2, n + 2))
    assert {r["status"] for r in report} == {"moved"}
    create = "tags/create" if backend == "tags" else "groups/create"
    assert sb.state.calls[create] >= 3  # three new names (faults may add retries)
    assert sb.state.calls["token"] == 0  # stable tokens by default
    assert result.summary["counts"]["moved"] == n


@pytest.mark.parametrize("backend", BACKENDS)
async def test_bad_openid_is_isolated_by_bisection(tmp_path: Path,
                                                   sandbox_factory: SandboxFactory,
                                                   backend: str) -> None:
    followers = sandbox_openids(99)
    sb = await sandbox_factory(account(["A"], openids=followers))
    strangers = ["oStrangerNotAFollower0000001", "oStrangerNotAFollower0000002"]
    rows = [(o, "A") for o in followers[:48]] + [(s, "A") for s in strangers]
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    backend=backend)
    result = await run(spec)
    assert result.exit_code == 1
    assert_state_matches(sb, rows[:48], backend)
    failed = {r["openid"]: r for r in report_rows(tmp_path / "run") if r["status"] == "failed"}
    assert set(failed) == set(strangers)
    assert {r["errcode"] for r in failed.values()} == {"40003"}
    endpoint = "tags/members/batchtagging" if backend == "tags" else "groups/members/batchupdate"
    assert sb.state.calls[endpoint] <= 1 + 2 * 2 * 6  # not 50 single calls


async def test_unknown_group_ids_fail_without_move_calls(tmp_path: Path,
                                                         sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10))
    rows = [(o, "999") for o in sandbox_openids(10)]
    path = write_moves(tmp_path / "in.csv", rows, header=("openid", "to_groupid"))
    result = await run(spec_for(sb, path, tmp_path / "run"))
    assert result.exit_code == 1
    assert sb.state.calls["groups/members/batchupdate"] == 0
    assert {r["errcode"] for r in report_rows(tmp_path / "run")} == {"40050"}


async def test_missing_groups_not_created_without_permission(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10))
    rows = spread(10, ["新分组"])
    result = await run(spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                                create_groups=False))
    assert result.exit_code == 1
    assert sb.state.calls["groups/create"] == 0
    assert all("--create-groups" in r["errmsg"] for r in report_rows(tmp_path / "run"))


async def test_ambiguous_group_name_fails_its_rows(tmp_path: Path,
                                                   sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10, groups=["双胞胎", "双胞胎", "B"]))
    rows = spread(10, ["双胞胎", "B"])
    result = await run(spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run"))
    assert result.exit_code == 1
    report = report_rows(tmp_path / "run")
    assert {r["status"] for r in report if r["group_name"] == "B"} == {"moved"}
    assert all("ambiguous" in r["errmsg"] for r in report if r["group_name"] == "双胞胎")


async def test_blacklist_by_name_is_refused_before_sending(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10))
    rows = spread(10, ["黑名单"])
    with pytest.raises(UsageError, match="--allow-blacklist"):
        await run(spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run"))
    assert sb.state.calls["groups/members/batchupdate"] == 0
    result = await run(spec_for(sb, tmp_path / "in.csv", tmp_path / "run",
                                allow_blacklist=True))
    assert result.exit_code == 0
    assert {sb.state.members[o] for o, _ in rows} == {1}


async def test_daily_quota_stops_with_3_and_resume_completes(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    n = 5_000
    sb = await sandbox_factory(SandboxConfig(
        users=n, groups=GROUPS[:1], daily_quota={"groups/members/batchupdate": 40}))
    rows = spread(n, GROUPS[:1])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run")
    first = await run(spec)
    assert first.exit_code == 3
    assert "resets" in first.message
    assert ledger_statuses(tmp_path / "run")["moved"] == 40 * 50
    next_day(sb)
    second = await run(spec)
    assert second.exit_code == 0, second.message
    assert_state_matches(sb, rows)
    # 100 successful calls, plus at most one refused call per worker that was in flight
    assert 100 < sb.state.calls["groups/members/batchupdate"] <= 100 + spec.concurrency


@pytest.mark.parametrize("backend", BACKENDS)
async def test_resume_never_resends_moved_rows(tmp_path: Path,
                                               sandbox_factory: SandboxFactory,
                                               backend: str) -> None:
    n = 3_000
    endpoint = "tags/members/batchtagging" if backend == "tags" else "groups/members/batchupdate"
    sb = await sandbox_factory(SandboxConfig(users=n, daily_quota={endpoint: 25}))
    rows = spread(n, ["A", "B", "C"])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    backend=backend)
    assert (await run(spec)).exit_code == 3
    moved_before = set(moves_applied(sb, backend))
    mark = len(moves_applied(sb, backend))
    sb.state.quotas.clear()
    sb.set_faults(daily_quota={endpoint: 100_000})
    assert (await run(spec)).exit_code == 0
    assert not moved_before & set(moves_applied(sb, backend)[mark:])
    assert len(moves_applied(sb, backend)) == n
    assert_state_matches(sb, rows, backend)


async def test_resume_moves_users_read_after_the_recorded_ones(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    """A resumed run whose first pending users have no snapshot yet (read again) and whose
    later ones have one (moved at once): the reads finish while the moves are still being
    handed out, and the users they read go too (they were left pending: exit 3)."""
    n = 2_500
    sb = await sandbox_factory(SandboxConfig(users=n, groups=["A"],
                                             daily_quota={"groups/members/batchupdate": 1}))
    rows = spread(n, ["A"])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    concurrency=2)
    assert (await run(spec)).exit_code == 3  # one batch moved, the rest pending
    with Ledger(tmp_path / "run").open() as ledger:
        pending = [row for _, row, _, _ in ledger.pending_stream()]
        ledger.snapshots.record_previous({0: pending[500:]}, [])  # a killed run's snapshot
    next_day(sb)
    result = await run(replace(spec, snapshot=True))
    assert result.exit_code == 0, result.message
    assert sb.state.calls["user/info/batchget"] == 5
    assert_state_matches(sb, rows)


async def test_input_changed_while_unfinished_needs_restart(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=200,
                                             daily_quota={"groups/members/batchupdate": 1}))
    path = write_moves(tmp_path / "in.csv", spread(200, ["A"]))
    spec = spec_for(sb, path, tmp_path / "run")
    assert (await run(spec)).exit_code == 3
    write_moves(path, spread(150, ["A"]))
    with pytest.raises(InputChangedError, match="--restart"):
        await run(spec)
    next_day(sb)
    result = await run(spec, restart=True)
    assert result.exit_code == 0
    assert ledger_statuses(tmp_path / "run") == {"moved": 150}
    assert list((tmp_path / "run" / "history").iterdir())


async def test_finished_run_and_new_input_starts_a_new_run(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=100))
    path = write_moves(tmp_path / "in.csv", spread(60, ["A"]))
    spec = spec_for(sb, path, tmp_path / "run")
    assert (await run(spec)).exit_code == 0
    again = await run(spec)  # same input, already finished: nothing to send
    assert again.exit_code == 0
    assert sb.state.calls["groups/members/batchupdate"] == 2
    write_moves(path, spread(100, ["B"]))
    nightly = await run(spec)
    assert nightly.exit_code == 0
    assert ledger_statuses(tmp_path / "run") == {"moved": 100}
    history = list((tmp_path / "run" / "history").iterdir())
    assert len(history) == 1
    assert json.loads((history[0] / "summary.json").read_text())["counts"]["moved"] == 60


async def test_second_run_of_the_same_job_refuses(tmp_path: Path,
                                                  sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10))
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(10, ["A"])), tmp_path / "run")
    with Ledger(tmp_path / "run").open(), pytest.raises(RunLockedError, match="another"):
        await run(spec)
    assert sb.state.calls["groups/get"] == 0


async def test_retry_failed_resends_only_retryable_rows(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=100, groups=["A"]))
    rows = [*spread(100, ["A"]), ("oStrangerNotAFollower0000001", "A")]
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    retries=2, timeout=0.3)
    sb.set_faults(error_rate=1.0, fault_endpoints=["groups/members/batchupdate"])
    first = await run(spec)
    assert first.exit_code == 1
    assert ledger_statuses(tmp_path / "run") == {"failed": 101}
    sb.set_faults(error_rate=0.0)
    second = await run(spec, retry_failed=True)
    assert second.exit_code == 1  # the stranger fails for good with 40003
    assert ledger_statuses(tmp_path / "run") == {"moved": 100, "failed": 1}
    third = await run(spec, retry_failed=True)  # 40003 is not retryable: nothing is sent
    assert third.exit_code == 1
    assert ledger_statuses(tmp_path / "run") == {"moved": 100, "failed": 1}


async def test_failure_threshold_stops_early(tmp_path: Path,
                                             sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10, groups=["A"]))
    strangers = [(f"oStrangerNotAFollower{i:07d}", "A") for i in range(2000)]
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", strangers), tmp_path / "run",
                    batch_size=1, failure_sample=100, max_failure_rate=0.5, concurrency=2)
    result = await run(spec)
    assert result.exit_code == 3
    assert "too many rows failed" in result.message
    assert sb.state.calls["groups/members/update"] < 200


async def test_fatal_configuration_stops_at_once(tmp_path: Path, sandbox_factory: SandboxFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10))
    monkeypatch.setenv("WECHAT_APPSECRET", "wrong-secret")
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(10, ["A"])), tmp_path / "run")
    result = await run(spec)
    assert result.exit_code == 3
    assert "40001" in result.message
    assert "wrong-secret" not in result.message
    assert sb.state.calls["stable_token"] == 1


async def test_snapshot_marks_users_already_in_target(tmp_path: Path,
                                                      sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=120, groups=["A"]))
    rows = spread(120, ["A"])
    for openid, _ in rows[:20]:
        sb.state.move_directly(openid, 100)
    result = await run(spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                                snapshot=True))
    assert result.exit_code == 0
    assert ledger_statuses(tmp_path / "run") == {"already": 20, "moved": 100}
    assert sb.state.calls["user/info/batchget"] == 2
    assert sb.state.calls["groups/members/batchupdate"] == 2


async def test_sigint_stops_and_resumes(tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    n = 2_000
    sb = await sandbox_factory(SandboxConfig(users=n, latency_ms=20))
    rows = spread(n, ["A"])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    concurrency=1)
    task = asyncio.create_task(run(spec, handle_signals=True))  # as the CLI asks
    for _ in range(1000):
        if sb.state.calls["groups/members/batchupdate"] >= 3 or task.done():
            break
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)
    result = await asyncio.wait_for(task, 10)
    assert result.exit_code == 130
    assert 0 < ledger_statuses(tmp_path / "run")["moved"] < n
    assert (tmp_path / "run" / "report.csv").exists()
    resumed = await run(spec)
    assert resumed.exit_code == 0
    assert_state_matches(sb, rows)


@pytest.mark.parametrize(("codes", "expected"), [
    ({None, -1, 40003}, {None, -1}),
    ({45009, 45011, 40050}, {45009, 45011}),
    ({99999, 46004}, {99999}),  # an errcode missing from the table is worth another try
])
def test_retry_failed_picks_retryable_and_unknown_errcodes(
        codes: set[int | None], expected: set[int | None]) -> None:
    from batchmove.flows.run import retryable

    assert set(retryable(codes)) == expected


async def test_tags_untag_others_leaves_only_the_target(tmp_path: Path,
                                                         sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(account(["旧A", "旧B", "保留"], users=60))
    rows = spread(60, ["新"])
    for i, (openid, _) in enumerate(rows):
        sb.state.tags.apply_directly(openid, 100 + i % 3, False)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    backend="tags", snapshot=True, untag="others")
    assert (await run(spec)).exit_code == 0
    new = group_ids_by_name(sb, "tags")["新"][0]
    assert {tuple(sb.state.tags.tag_ids_of(o)) for o, _ in rows} == {(new,)}


async def test_tags_untag_listed_keeps_the_rest(tmp_path: Path,
                                                sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(account(["旧A", "旧B", "保留"], users=60))
    rows = spread(60, ["新"])
    for openid, _ in rows:
        for tag in (100, 101, 102):
            sb.state.tags.apply_directly(openid, tag, False)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    backend="tags", snapshot=True, untag=("旧A", "101"))
    assert (await run(spec)).exit_code == 0
    new = group_ids_by_name(sb, "tags")["新"][0]
    assert {tuple(sb.state.tags.tag_ids_of(o)) for o, _ in rows} == {(102, new)}
    again = await run(spec)  # finished: nothing is sent twice
    assert again.exit_code == 0


async def test_tags_already_tagged_users_are_not_sent(tmp_path: Path,
                                                      sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(account(["A"], users=80))
    rows = spread(80, ["A"])
    for openid, _ in rows[:30]:
        sb.state.tags.apply_directly(openid, 100, False)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    backend="tags", snapshot=True)
    assert (await run(spec)).exit_code == 0
    assert ledger_statuses(tmp_path / "run") == {"already": 30, "moved": 50}
    assert sb.state.calls["tags/members/batchtagging"] == 1


class _SteppedBackClock:
    """`time` for flows/run.py whose wall clock steps back an hour after its first reading
    (an NTP correction mid-run); the monotonic clock goes on."""

    def __init__(self) -> None:
        self.readings = 0

    def time(self) -> float:
        self.readings += 1
        return time.time() - (3600 if self.readings > 1 else 0)

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


async def test_durations_come_from_the_monotonic_clock(
        tmp_path: Path, sandbox_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sb = await sandbox_factory(SandboxConfig(users=300, groups=["A"]))
    rows = spread(300, ["A"])
    clock = _SteppedBackClock()
    monkeypatch.setattr(run_flow, "time", clock)
    result = await run(spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run"))
    assert result.exit_code == 0, result.message
    assert clock.readings >= 2  # the wall clock was read after the step, for finished_at
    assert 0 <= result.summary["duration_s"] < 60
    assert 0 < result.summary["users_moved_per_s"] < 1e7


async def test_report_rebuilds_the_summary_a_killed_run_never_wrote(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=200, groups=["A"],
                                             daily_quota={"groups/members/batchupdate": 1}))
    run_dir = tmp_path / "run"
    stopped = await run(spec_for(sb, write_moves(tmp_path / "in.csv", spread(200, ["A"])),
                                 run_dir))
    assert (stopped.exit_code, stopped.summary["stop_reason"]) == (3, "daily_quota")
    api.write_reports(run_dir)  # the run's own summary describes the ledger: kept
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] == "daily_quota"
    (run_dir / "summary.json").unlink()  # as after a kill -9
    api.write_reports(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    with Ledger(run_dir).open(lock=False) as ledger:
        run_id = ledger.meta()["run_id"]
    assert summary["run_id"] == run_id
    assert summary["job"] == "t"
    assert (summary["exit_code"], summary["stop_reason"]) == (3, "unrecorded")
    assert summary["message"] == ("stopped with rows still pending; run again to resume "
                                  "(50 moved, 150 pending)")
    assert summary["counts"]["pending"] == 150
    assert summary["files"] == ["report.csv", "report.xlsx", "failed.csv", "summary.json"]
