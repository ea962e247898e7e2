"""Quota days: a job three times the daily move quota finishes over three "days".

Figures: 12,000 rows (11,990 valid into 3 groups, one of them created; 10 invalid) with a
daily quota of 100 `groups/members/batchupdate` calls (5,000 users a day); snapshot on. Day 1
exits 3 with 4,997 moved (100 calls of up to 50); a second attempt the same day exits 3 again
and moves nobody; day 2 exits 3 with 9,994 moved; day 3 exits 1 (the 10 invalid rows) with
11,990 moved. Between
days `sb.state.quotas.clear()`. Each run is the same command. No row recorded as moved is
ever sent again, the group is created once, a day's refused calls are at most one per worker,
and no secret appears in any output. Also: a 45011 answer to groups/create makes the run
wait for the next minute, like every other call (once a bug). About 15 s.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import (
    SECRET,
    LeakAudit,
    ThreadedSandbox,
    group_names,
    ledger_check,
    moved_openids,
    report_rows,
    spawn,
    write_csv,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

N_VALID = 11_990
DAILY_CALLS = 100
CONCURRENCY = 8
GROUPS = ["高价值客户", "华东媒", "新注册用户"]


def test_three_days_of_quota_finish_the_job(tmp_path: Path) -> None:
    followers = sandbox_openids(N_VALID, seed=5)
    rows = [(o, GROUPS[i % 3]) for i, o in enumerate(followers)]
    rows[100:100] = [(f"bad{i}", "高价值客户") for i in range(10)]  # too short: invalid
    path = write_csv(tmp_path / "in.csv", ["openid", "group_name"], rows)
    run_dir = tmp_path / "run"
    args = ("run", str(path), "--out", str(run_dir), "--create-groups", "--rate", "0",
            "--concurrency", str(CONCURRENCY), "--yes")
    config = SandboxConfig(users=N_VALID, seed=5, secret=SECRET, groups=GROUPS[:2],
                           daily_quota={"groups/members/batchupdate": DAILY_CALLS})
    audit = LeakAudit(roots=[run_dir])
    days = [("day 1", 3), ("day 1, again", 3), ("day 2", 3), ("day 3", 1)]
    progress = []
    with ThreadedSandbox(config) as sandbox:
        state = sandbox.state
        for label, code in days:
            if label in ("day 2", "day 3"):
                sandbox.call(state.quotas.clear)
            before = moved_openids(run_dir)
            mark, calls = len(state.move_log), state.calls["groups/members/batchupdate"]
            admitted = state.quotas.used["groups/members/batchupdate"]
            child = spawn(*args, "--api-base", sandbox.base_url, logs=tmp_path / "logs").finish()
            audit.add_child(label, child)
            assert child.returncode == code, (label, child.stderr[-2000:])
            assert "Traceback" not in child.output
            assert not before & set(state.move_log[mark:]), f"{label}: a moved row was re-sent"
            verdict, counts = ledger_check(run_dir)
            assert verdict == "ok"
            moved = counts.get("moved", 0)
            assert moved == len(set(state.move_log)), "the ledger and the sandbox disagree"
            progress.append(moved)
            sent = state.calls["groups/members/batchupdate"] - calls
            admitted = state.quotas.used["groups/members/batchupdate"] - admitted
            refused = sent - admitted
            if code == 3:
                assert admitted == (0 if label == "day 1, again" else DAILY_CALLS)
            assert refused <= CONCURRENCY, f"{label}: {refused} calls refused"
            summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
            assert summary["exit_code"] == code
            if code == 3:
                assert summary["stop_reason"] == "daily_quota"
                assert "45009" in child.stderr
                assert summary["counts"]["pending"] == N_VALID - moved
        assert progress[0] == progress[1] >= DAILY_CALLS * 46
        assert progress[2] - progress[1] >= DAILY_CALLS * 46
        assert progress[3] == N_VALID
        assert group_names(state).count("新注册用户") == 1
        assert state.calls["groups/create"] == 1
        ids = {g.name: g.id for g in state.groups.values()}
        assert all(state.members[o] == ids[GROUPS[i % 3]] for i, o in enumerate(followers))
        assert len(state.move_log) == N_VALID  # each user was moved exactly once
        audit.check(state)
    report = report_rows(run_dir)
    assert Counter(r["status"] for r in report) == {"moved": N_VALID, "invalid": 10}
    assert [int(r["row"]) for r in report] == list(range(2, len(rows) + 2))


def test_minute_quota_during_group_creation_waits_for_the_next_minute(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["openid", "group_name"],
                     ((o, "新组") for o in sandbox_openids(100, seed=5)))
    config = SandboxConfig(users=100, seed=5, secret=SECRET, minute_quota=2)
    with ThreadedSandbox(config) as sandbox:  # token and groups/get pass, groups/create: 45011
        running = spawn("run", str(path), "--api-base", sandbox.base_url, "--out",
                        str(tmp_path / "run"), "--yes", "--create-groups")
        deadline = time.monotonic() + 5
        while running.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = running.alive()
        running.kill()
        child = running.finish()
        assert sandbox.state.calls["groups/create"] >= 1
    assert waiting, f"the run gave up on 45011: exit {child.returncode}: {child.stderr[-500:]}"
