"""Crash-resume: `batchmove run` SIGKILLed 20 times at random moments, resumed each time.

Figures: 30,000 rows (smaller than the chaos job so that 21 processes fit the time budget)
into 42 groups, 40 of them created by the run; faults on group creation, snapshot and moves:
25 ms latency plus 0-25 ms jitter, 2% errcode -1, 1% dropped connections; concurrency 4.
20 SIGKILLs planned with a seeded RNG (seed 20): 1 while loading, 3 during group creation,
2 during the snapshot, 10 while moving, 4 while the report files are being written (a kill
lands within 0-50 ms after this process's first report temp file appears: report.csv's, which
lives while report.csv and report.xlsx are written at the end of the run; temp files a killed
predecessor left behind do not count). Each kill is classified by what
the sandbox and the run directory show at that moment, and every phase must be hit.

After every kill: `PRAGMA integrity_check` of the ledger (a copy, with its WAL) is "ok"; it
holds either no rows or all 30,000, in pending/moved only; no openid the ledger recorded as
moved before the process started reached the sandbox again; no group name exists twice;
every file of the run directory (WAL, lock, report temp files included) is mode 600 and the
directory 700; a report.csv, if there is one, is complete. The 21st process finishes: exit 0,
the sandbox exactly as the input asks, 30,000 rows moved, no report temp file left, no
secret in any output. Rows lost: 0. About 45 s on 2 cores.
"""

from __future__ import annotations

import json
import random
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import (
    SECRET,
    LeakAudit,
    Running,
    ThreadedSandbox,
    group_names,
    ledger_check,
    moved_openids,
    report_rows,
    report_temps,
    spawn,
    write_csv,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SEED = 20
N = 30_000
EXISTING = ["高价值客户", "华东媒"]
NEW = [f"新分组{i:02d}" for i in range(40)]
GROUPS = EXISTING + NEW
PLAN = ["load", *["create"] * 3, *["snapshot"] * 2, *["move"] * 10, *["report"] * 4]
PHASES = ("load", "resolve", "create", "snapshot", "move", "report")
FAULTED = ["groups/create", "user/info/batchget", "groups/members/batchupdate"]
SETTLE_S = 0.15  # calls already in the sandbox (latency <= 50 ms) are applied by then


@dataclass
class CrashRun:
    kills: list[tuple[str, str]] = field(default_factory=list)  # (planned, observed)
    final_code: int | None = None
    final_stderr: str = ""
    resent_after_recorded: int = 0
    sent_twice: int = 0
    figures: dict[str, Any] = field(default_factory=dict)


def _observed_phase(delta: Counter[str], saw_report: bool) -> str:
    if saw_report:
        return "report"
    for phase, endpoint in (("move", "groups/members/batchupdate"),
                            ("snapshot", "user/info/batchget"), ("create", "groups/create")):
        if delta[endpoint]:
            return phase
    return "resolve" if sum(delta.values()) else "load"


class _Trigger:
    """When to kill a process aiming at `phase` (drawn from the seeded RNG)."""

    def __init__(self, phase: str, rng: random.Random) -> None:
        self.phase = phase
        self.at_calls = {"create": rng.randint(1, 8), "snapshot": rng.randint(1, 60),
                         "move": rng.randint(1, 50)}.get(phase, 0)
        self.delay = {"load": rng.uniform(0.05, 0.6), "report": rng.uniform(0.0, 0.05)}.get(
            phase, rng.uniform(0.0, 0.05))
        self.fired_at: float | None = None

    def due(self, started: float, delta: Counter[str], saw_report: bool) -> bool:
        now = time.monotonic()
        if self.fired_at is None:
            endpoint = {"create": "groups/create", "snapshot": "user/info/batchget",
                        "move": "groups/members/batchupdate"}.get(self.phase)
            later = saw_report or {  # the phase went by too fast: kill in the next one
                "create": delta["user/info/batchget"] or delta["groups/members/batchupdate"],
                "snapshot": delta["groups/members/batchupdate"]}.get(self.phase, 0)
            if self.phase == "load":
                self.fired_at = started
            elif self.phase == "report":
                if saw_report:
                    self.fired_at = now
            elif endpoint is not None and (delta[endpoint] >= self.at_calls or later):
                self.fired_at = now
        return self.fired_at is not None and now - self.fired_at >= self.delay


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        return
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    for path in run_dir.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    if (run_dir / "report.csv").exists():
        assert len(report_rows(run_dir)) == N, "a half-written report.csv"
    if (run_dir / "summary.json").exists():
        json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


Crashes = tuple[CrashRun, ThreadedSandbox, Path, LeakAudit]


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashes]:
    tmp = tmp_path_factory.mktemp("crash")
    followers = sandbox_openids(N, SEED)
    rows = [(o, GROUPS[i % len(GROUPS)]) for i, o in enumerate(followers)]
    path = write_csv(tmp / "in.csv", ["openid", "group_name"], rows)
    run_dir = tmp / "run"
    args = ("run", str(path), "--out", str(run_dir), "--create-groups", "--concurrency", "4",
            "--rate", "0", "--yes")
    config = SandboxConfig(users=N, seed=SEED, secret=SECRET, groups=EXISTING, latency_ms=25,
                           jitter_ms=25, error_rate=0.02, drop_rate=0.01,
                           fault_endpoints=FAULTED)
    rng = random.Random(SEED)
    result = CrashRun()
    audit = LeakAudit(roots=[run_dir])
    with ThreadedSandbox(config) as sandbox:
        _crash_and_resume(sandbox, args, run_dir, tmp, rng, result, audit)
        yield result, sandbox, run_dir, audit


def _crash_and_resume(sandbox: ThreadedSandbox, args: tuple[str, ...], run_dir: Path, tmp: Path,
                      rng: random.Random, result: CrashRun, audit: LeakAudit) -> None:
    started = time.monotonic()
    for n, planned in enumerate(PLAN):
        moved_before = moved_openids(run_dir)
        mark = len(sandbox.state.move_log)
        calls_before = Counter(sandbox.state.calls)
        trigger = _Trigger(planned, rng)
        running = spawn(*args, "--api-base", sandbox.base_url, logs=tmp / "logs")
        saw_report = _run_until(running, trigger, sandbox, calls_before, run_dir)
        delta = Counter(sandbox.state.calls) - calls_before
        child = running.finish()
        audit.add_child(f"process {n + 1}", child)
        if child.returncode != -9:
            pytest.fail(f"process {n + 1} ({planned}) ended by itself: {child.returncode} "
                        f"{child.stderr[-2000:]}")
        result.kills.append((planned, _observed_phase(delta, saw_report)))
        time.sleep(SETTLE_S)
        resent = moved_before & set(sandbox.state.move_log[mark:])
        result.resent_after_recorded += len(resent)
        assert not resent, f"kill {n + 1}: {len(resent)} rows recorded as moved were re-sent"
        verdict, counts = ledger_check(run_dir)
        assert verdict == "ok", f"kill {n + 1}: ledger integrity: {verdict}"
        assert sum(counts.values()) in (0, N), counts
        assert set(counts) <= {"pending", "moved"}, counts
        names = group_names(sandbox.state)
        assert len(names) == len(set(names)), f"kill {n + 1}: a group was created twice"
        _check_run_dir(run_dir)
    moved_before = moved_openids(run_dir)
    mark = len(sandbox.state.move_log)
    final = spawn(*args, "--api-base", sandbox.base_url, logs=tmp / "logs").finish(300)
    audit.add_child("the final process", final)
    assert not moved_before & set(sandbox.state.move_log[mark:])
    result.final_code, result.final_stderr = final.returncode, final.stderr
    log = Counter(sandbox.state.move_log)
    result.sent_twice = sum(1 for c in log.values() if c > 1)
    result.figures = {
        "seconds": round(time.monotonic() - started, 1), "kills": Counter(o for _, o in
                                                                          result.kills),
        "calls": dict(sandbox.state.calls), "rows_sent_more_than_once": result.sent_twice}
    print(f"\ncrash-resume figures: {result.figures}")


def _run_until(running: Running, trigger: _Trigger, sandbox: ThreadedSandbox,
               calls_before: Counter[str], run_dir: Path) -> bool:
    """Poll until the trigger fires, then SIGKILL; True if the run was writing its reports
    at the end: a report temp file of this process seen (they are written only at the end;
    the exit right after them is quick, so the first, report.csv's, is the one to watch)."""
    stale = set(report_temps(run_dir))  # left by the process killed before this one
    saw_report = False
    deadline = time.monotonic() + 120
    while running.alive() and time.monotonic() < deadline:
        delta = Counter(sandbox.state.calls) - calls_before
        saw_report = saw_report or bool(set(report_temps(run_dir)) - stale)
        if trigger.due(running.started, delta, saw_report):
            running.kill()
            return saw_report
        time.sleep(0.002)
    return saw_report


def test_every_kill_lands_and_every_phase_is_hit(crashes: Crashes) -> None:
    result = crashes[0]
    assert len(result.kills) == 20
    observed = Counter(o for _, o in result.kills)
    for phase in ("create", "snapshot", "move", "report"):
        assert observed[phase] >= 1, f"no kill landed while {phase}: {result.kills}"


def test_resumed_run_ends_exact(crashes: Crashes) -> None:
    result, sandbox, run_dir, _ = crashes
    assert result.final_code == 0, result.final_stderr[-3000:]
    ids = {g.name: g.id for g in sandbox.state.groups.values()}
    names = group_names(sandbox.state)
    assert sorted(names) == sorted(["未分组", "黑名单", "星标组", *GROUPS])
    followers = sandbox_openids(N, SEED)
    wrong = [o for i, o in enumerate(followers)
             if sandbox.state.members[o] != ids[GROUPS[i % len(GROUPS)]]]
    assert not wrong, f"{len(wrong)} users not in their group"
    verdict, counts = ledger_check(run_dir)
    assert (verdict, counts) == ("ok", {"moved": N})
    report = report_rows(run_dir)
    assert [int(r["row"]) for r in report] == list(range(2, N + 2))
    assert {r["status"] for r in report} == {"moved"}
    assert not report_temps(run_dir)


def test_no_row_recorded_as_moved_was_sent_again(crashes: Crashes) -> None:
    """Checked after every kill; rows re-sent at all are only those a kill caught in flight
    (4 calls of 50) or answered but not yet committed (the result buffer commits every 2,000
    rows at the most; every 0.2 s normally, ~1,000 rows at this speed, more on a loaded
    machine)."""
    result = crashes[0]
    assert result.resent_after_recorded == 0
    moving = sum(1 for _, observed in result.kills if observed in ("move", "report"))
    assert result.sent_twice <= moving * (4 * 50 + 2_000)


def test_no_secret_in_any_output(crashes: Crashes) -> None:
    _, sandbox, _, audit = crashes
    figures = audit.check(sandbox.state)
    assert figures["texts"] == 2 * 21


def test_summary_lists_a_group_created_just_before_a_kill(tmp_path: Path) -> None:
    followers = sandbox_openids(100, SEED)
    path = write_csv(tmp_path / "in.csv", ["openid", "group_name"],
                     ((o, "新组A" if i % 2 else "新组B") for i, o in enumerate(followers)))
    config = SandboxConfig(users=100, seed=SEED, secret=SECRET, latency_ms=600,
                           fault_endpoints=["groups/create"])
    args = ("run", str(path), "--out", str(tmp_path / "run"), "--create-groups", "--yes")
    with ThreadedSandbox(config) as sandbox:
        running = spawn(*args, "--api-base", sandbox.base_url)
        deadline = time.monotonic() + 60
        while sandbox.state.calls["groups/create"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)  # the create call is in the sandbox's 600 ms latency
        running.kill()
        assert running.finish().returncode == -9
        time.sleep(0.6)  # ... and applied after the kill
        assert "新组B" in group_names(sandbox.state) or "新组A" in group_names(sandbox.state)
        final = spawn(*args, "--api-base", sandbox.base_url).finish(120)
        assert final.returncode == 0, final.stderr
        assert sorted(group_names(sandbox.state)).count("新组A") == 1
    created = json.loads((tmp_path / "run" / "summary.json").read_text())["groups_created"]
    assert sorted(g["name"] for g in created) == ["新组A", "新组B"]
