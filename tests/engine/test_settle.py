"""Moves never answered are read back, and the snapshot is all or nothing per user: runs
in-process against a sandbox behind the fault server (tests/support/faultserver.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec, RowFailure
from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.engine import ledger_statuses, report_rows, run, write_moves
from tests.support.faultserver import Fault, RunningFaults, running_fault_server

N = 120
READ, MOVE, TAG = "user/info/batchget", "groups/members/batchupdate", "tags/members/batchtagging"
STRANGER = "oNotAFollowerOfThisAccount0001"


@pytest.fixture(autouse=True)
def _sandbox_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


def job(fs: RunningFaults, tmp_path: Path, rows: list[tuple[str, str]], **changes: Any
        ) -> JobSpec:
    header = ("openid", "tag_name") if changes.get("backend") == "tags" else (
        "openid", "group_name")
    settings: dict[str, Any] = {"rate": 0.0, "concurrency": 4, "timeout": 0.5, "retries": 2,
                                "create_groups": True, "confirm": False}
    settings.update(changes)
    return JobSpec(input=write_moves(tmp_path / "in.csv", rows, header), name="t",
                   api_base=fs.base_url, out=tmp_path / "run", **settings)


def rows_for(names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(o, names[i % len(names)]) for i, o in enumerate(sandbox_openids(N))]


@pytest.mark.parametrize(("backend", "endpoint", "kind"), [
    ("groups", MOVE, "cut"), ("groups", MOVE, "hang"), ("tags", TAG, "cut")])
async def test_moves_never_answered_are_read_back_as_moved(
        tmp_path: Path, backend: str, endpoint: str, kind: str) -> None:
    names = ("甲", "乙") if backend == "tags" else ("老客户", "新客户")
    async with running_fault_server(SandboxConfig(users=N)) as fs:
        fs.set(Fault(endpoint, kind))  # type: ignore[arg-type]
        result = await run(job(fs, tmp_path, rows_for(names), backend=backend))
        applied = fs.sandbox.state.calls[endpoint]
    assert result.exit_code == 0, result.message
    assert (result.counts["moved"], result.counts["unknown"]) == (N, 0)
    assert ledger_statuses(tmp_path / "run") == {"moved": N}
    assert applied == fs.state.faults[0].fired  # every move applied, none answered


async def test_unknown_rows_stay_unknown_until_a_read_back_succeeds(tmp_path: Path) -> None:
    rows = rows_for(("老客户",))
    async with running_fault_server(SandboxConfig(users=N, groups=("老客户",))) as fs:
        spec = job(fs, tmp_path, rows)
        fs.set(Fault(MOVE, "cut"), Fault(READ, "errcode", errcode=-1, after=2))
        stopped = await run(spec)
        assert (stopped.exit_code, stopped.counts["unknown"]) == (3, N), stopped.message
        assert "never answered the moves of 120 rows" in stopped.message
        assert {r["status"] for r in report_rows(tmp_path / "run")} == {"unknown"}
        with Ledger(tmp_path / "run").open(lock=False) as ledger:
            assert len(ledger.review.rollback_rows()) == N  # they may have moved: undoable
        moves = fs.sandbox.state.calls[MOVE]
        fs.set()
        resumed = await run(spec)
        assert fs.sandbox.state.calls[MOVE] == moves  # settled by reading, nothing re-sent
    assert (resumed.exit_code, resumed.counts["moved"]) == (0, N), resumed.message


async def test_a_user_read_back_elsewhere_fails_with_what_the_read_showed(
        tmp_path: Path) -> None:
    """The move was never applied (forward=False): the read back says so, the row fails."""
    async with running_fault_server(SandboxConfig(users=N, groups=("老客户",))) as fs:
        fs.set(Fault(MOVE, "hang", forward=False, times=2))
        result = await run(job(fs, tmp_path, rows_for(("老客户",))[:10]))
    assert result.exit_code == 1, result.message
    failed = [r for r in report_rows(tmp_path / "run") if r["status"] == "failed"]
    assert len(failed) == 10
    assert failed[0]["errmsg"].startswith("sent 2 times, never answered as WeChat documents")
    assert failed[0]["errmsg"].endswith("; read back: now in group 0")


@pytest.mark.parametrize("backend", ["groups", "tags"])
async def test_a_non_follower_is_not_moved_and_says_why(tmp_path: Path, backend: str) -> None:
    names = ("甲",) if backend == "tags" else ("老客户",)
    rows = [*rows_for(names)[:5], (STRANGER, names[0])]
    config = SandboxConfig(users=N, groups=names if backend == "groups" else (),
                           tags=names if backend == "tags" else ())
    async with running_fault_server(config) as fs:
        result = await run(job(fs, tmp_path, rows, backend=backend,
                               snapshot_source="batchget") if backend == "tags"
                           else job(fs, tmp_path, rows))
        moved = fs.sandbox.state.move_log if backend == "groups" else [
            o for _, o, _ in fs.sandbox.state.tag_log]
    assert (result.exit_code, result.counts["moved"], result.counts["failed"]) == (1, 5, 1)
    assert STRANGER not in moved  # no move call was made for them
    stranger = next(r for r in report_rows(tmp_path / "run") if r["openid"] == STRANGER)
    assert (stranger["status"], stranger["errcode"]) == ("failed", "43004")
    assert "not a follower" in stranger["errmsg"]


async def test_a_user_whose_snapshot_read_failed_is_not_moved(tmp_path: Path) -> None:
    async with running_fault_server(SandboxConfig(users=N, groups=("老客户",))) as fs:
        fs.set(Fault(READ, "errcode", errcode=-1, after=1, times=2))  # the 2nd read, twice
        result = await run(job(fs, tmp_path, rows_for(("老客户",))))
        moved = set(fs.sandbox.state.move_log)
    assert (result.exit_code, result.counts["failed"], result.counts["moved"]) == (1, 20, 100)
    failed = {r["openid"] for r in report_rows(tmp_path / "run") if r["status"] == "failed"}
    assert not failed & moved
    with Ledger(tmp_path / "run").open(lock=False) as ledger:
        assert {r.openid for r in ledger.review.rollback_rows()} == moved


def test_outcomes_record_list_and_settle(tmp_path: Path) -> None:
    with Ledger(tmp_path).open() as ledger:
        ledger.conn.executemany("INSERT INTO rows (row, openid, target, status, group_id) "
                                "VALUES (?, ?, 'g', 'pending', 101)",
                                [(r, f"o{r}") for r in range(2, 6)])
        outcomes = ledger.outcomes
        outcomes.record([RowFailure(r, None, "sent 2 times, never answered", 2)
                         for r in (3, 4, 5)])
        assert [r.row for r in outcomes.rows()] == [3, 4, 5]
        assert ledger.counts() == {"pending": 1, "unknown": 3}
        outcomes.settle([3], [(4, "now in group 0")])
        assert ledger.counts() == {"pending": 1, "unknown": 1, "moved": 1, "failed": 1}
        assert ledger.row(4).errmsg == "sent 2 times, never answered; read back: now in group 0"
        assert ledger.row(3).errmsg is None
        assert ledger.conn.execute("EXPLAIN QUERY PLAN SELECT row FROM rows "
                                   "WHERE status = 'unknown'").fetchone()[-1].endswith(
            "USING INDEX rows_unknown")


async def test_a_daily_quota_stop_still_reads_back_what_may_have_moved(tmp_path: Path) -> None:
    """The move quota is used up right after a move that was never answered: the read back
    (another endpoint, its own quota) settles that batch before the run ends, exit 3."""
    rows = rows_for(("老客户",))
    async with running_fault_server(SandboxConfig(users=N, groups=("老客户",))) as fs:
        fs.set(Fault(MOVE, "cut", times=1), Fault(MOVE, "errcode", errcode=45009))
        stopped = await run(job(fs, tmp_path, rows, concurrency=1))
        moved = sum(1 for g in fs.sandbox.state.members.values() if g != 0)
    assert (stopped.exit_code, stopped.stop_reason) == (3, "daily_quota"), stopped.message
    assert stopped.counts["unknown"] == 0, (stopped.counts, moved)
    assert stopped.counts["moved"] == moved == 50, (stopped.counts, moved, fs.state.calls)
    assert stopped.counts["pending"] == N - 50
