"""Chaos: one 100,000-row `batchmove run` against a sandbox that fails in every way it can.

Figures (the run is made once per module; each test checks one promise about it):
- input: 100,000 rows = 98,500 followers to move into 8 groups (2 exist, 6 are created; 500 of
  the users are already in their target), 800 duplicates, 500 invalid rows (short, formula and
  URL openids, missing openids and names, names over 30 characters), 50 followers whose two rows
  conflict, 100 valid-looking openids that are not followers (failed 43004 by the snapshot, never
  sent a move); 1,450 followers are not in the input and must not move. Rows are shuffled
  (seed 11).
- faults on every endpoint, token and group creation included: 5% errcode -1, 3% HTTP 502/503,
  2% connections dropped, 0.5% calls applied but never answered (client timeout 1 s), tokens
  that expire every 3 s, and one per-minute-quota burst: from the moment the moves start to the
  end of that wall-clock minute every call is refused with 45011 (the runner must wait for the
  next minute, `RetryPolicy.seconds_to_next_minute`, then carry on).
- expected: exit 1; 98,000 moved, 500 already, 800 duplicate, 600 invalid, 100 failed; the
  sandbox ends exactly as the input asks; each group exists once; no secret anywhere.

The launch waits (0-60 s) until second 47 of a minute so that the moves start around second
53 and the burst, and the runner's 45011 wait, last only until the minute ends: the only
deliberate idle time of the suites. The run itself takes about 25 s on 2 cores.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import (
    FINAL_STATUSES,
    RSS_LIMIT_MB,
    SECRET,
    Child,
    LeakAudit,
    ThreadedSandbox,
    report_rows,
    spawn,
    write_csv,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SEED = 11
N_ROWS = 100_000
N_FOLLOWERS = 100_000
EXISTING = ["高价值客户", "华东媒"]
NEW = ["沉睡用户", "新注册", "NA", "007", "VIP 客户", "华南-广州"]
GROUPS = EXISTING + NEW
CONCURRENCY = 16
LAUNCH_AT_S = 47.0  # the moves then start around second 53 on 2 cores
INVALID_OPENIDS = ["oShort1", '=HYPERLINK("http://evil.example","x")', "https://evil.example/o1",
                   "", "o" + "x" * 70, "o bad openid with spaces"]
EXPECTED_COUNTS = {"moved": 98_000, "already": 500, "duplicate": 800, "invalid": 600,
                   "failed": 100}


@dataclass
class ChaosRun:
    child: Child
    run_dir: Path
    expected: dict[str, str | None]  # follower -> target group name (None: must not move)
    members: dict[str, int]
    groups: list[tuple[int, str]]
    calls: Counter[str]
    tokens: list[str]
    burst_calls: int
    burst_s: float
    moves_after_burst: int
    launch_wait_s: float
    audit: LeakAudit
    figures: dict[str, Any] = field(default_factory=dict)


def build_input(tmp: Path) -> tuple[Path, dict[str, str | None], list[str]]:
    """The shuffled rows, each follower's expected group, and the users placed beforehand."""
    rng = random.Random(SEED)
    followers = sandbox_openids(N_FOLLOWERS, SEED)
    movers = followers[:98_500]
    rows: list[tuple[str, str]] = [(o, GROUPS[i % len(GROUPS)]) for i, o in enumerate(movers)]
    rows += [rows[j] for j in rng.sample(range(len(movers)), 800)]  # duplicates
    conflicted = followers[98_500:98_550]
    rows += [(o, g) for o in conflicted for g in ("高价值客户", "沉睡用户")]
    invalid = [(INVALID_OPENIDS[i % len(INVALID_OPENIDS)], GROUPS[i % len(GROUPS)])
               for i in range(300)]
    invalid += [(f"oInvalidRowName{i:013d}", "") for i in range(100)]
    invalid += [(f"oInvalidRowName{i:013d}", "名" * 31) for i in range(100, 150)]
    invalid += [(f"oInvalidRowName{i:013d}", "=1+1") for i in range(150, 200)]
    rows += invalid
    rows += [(f"oStrangerNotAFollower{i:07d}", GROUPS[i % len(GROUPS)]) for i in range(100)]
    assert len(rows) == N_ROWS
    rng.shuffle(rows)
    expected: dict[str, str | None] = dict.fromkeys(followers)
    expected.update(zip(movers, (GROUPS[i % len(GROUPS)] for i in range(len(movers))),
                        strict=True))
    placed = [o for i, o in enumerate(movers) if GROUPS[i % len(GROUPS)] in EXISTING][:500]
    path = write_csv(tmp / "followers.csv", ["openid", "group_name", "note"],
                     ((o, g, f"row of {o[:6]}") for o, g in rows))
    return path, expected, placed


class _Burst:
    """From the moment the moves start until just before the next wall-clock minute, every
    call is refused with 45011 (a minute quota of 1); the runner waits for that minute."""

    def __init__(self, sandbox: ThreadedSandbox) -> None:
        self.sandbox = sandbox
        self.state = "waiting"
        self.mark = 0
        self.calls = -1
        self.started = 0.0
        self.seconds = 0.0
        self.moves_at_end = 0

    def _total(self) -> int:
        return sum(self.sandbox.state.calls.values())

    def step(self) -> None:
        to_boundary = 60 - time.time() % 60
        moving = self.sandbox.state.calls["groups/members/batchupdate"] >= 100
        if self.state == "waiting" and moving and to_boundary >= 1.5:
            self.sandbox.set_faults(minute_quota=1)
            self.state, self.mark, self.started = "on", self._total(), time.monotonic()
        elif self.state == "on" and to_boundary < 0.3:
            self.end()

    def end(self) -> None:
        if self.state == "on":
            self.sandbox.set_faults(minute_quota=None)
            self.state, self.calls = "done", self._total() - self.mark
            self.moves_at_end = self.sandbox.state.calls["groups/members/batchupdate"]
            self.seconds = time.monotonic() - self.started


def wait_for_launch_second() -> float:
    """Sleep until second LAUNCH_AT_S of a wall-clock minute (see the module docstring)."""
    second = time.time() % 60
    wait = (LAUNCH_AT_S - second) % 60
    if wait > 57:  # within 3 s after the launch second: close enough
        wait = 0.0
    time.sleep(wait)
    return wait


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> ChaosRun:
    tmp = tmp_path_factory.mktemp("chaos")
    path, expected, placed = build_input(tmp)
    config = SandboxConfig(
        users=N_FOLLOWERS, seed=SEED, secret=SECRET, groups=EXISTING, error_rate=0.05,
        http_error_rate=0.03, drop_rate=0.02, hang_rate=0.005, token_ttl=3.0)
    run_dir = tmp / "run"
    job = tmp / "chaos.toml"
    with ThreadedSandbox(config) as sandbox:
        ids = {g.name: g.id for g in sandbox.state.groups.values()}
        sandbox.call(lambda: [sandbox.state.move_directly(o, ids[expected[o]]) for o in placed])
        job.write_text(
            f'input = "{path.name}"\nout = "run"\napi_base = "{sandbox.base_url}"\n'
            f"timeout = 1.0\nretries = 12\nconcurrency = {CONCURRENCY}\nrate = 0\n"
            "create_groups = true\nconfirm = false\n", encoding="utf-8")
        launch_wait = wait_for_launch_second()
        running = spawn("run", str(job), logs=tmp / "logs")
        burst = _Burst(sandbox)
        while running.alive():
            burst.step()
            time.sleep(0.01)
        child = running.finish()
        burst.end()
        state = sandbox.state
        audit = LeakAudit(roots=[run_dir, job])
        audit.add_child("the chaos run", child)
        result = ChaosRun(child, run_dir, expected, dict(state.members),
                          [(g.id, g.name) for g in state.groups.values()], Counter(state.calls),
                          list(state.issued_tokens), burst.calls, burst.seconds,
                          state.calls["groups/members/batchupdate"] - burst.moves_at_end,
                          launch_wait,
                          audit)
        result.figures = {"seconds": round(child.seconds, 1), "peak_rss_mb": child.peak_rss_mb,
                          "calls": dict(state.calls), "tokens_issued": len(state.issued_tokens),
                          "burst_calls": burst.calls, "burst_s": round(burst.seconds, 1),
                          "moves_after_burst": result.moves_after_burst,
                          "launch_wait_s": round(launch_wait)}
    print(f"\nchaos figures: {result.figures}")
    return result


def test_run_ends_with_row_failures_only(chaos: ChaosRun) -> None:
    assert chaos.child.returncode == 1, chaos.child.stderr[-3000:]
    assert "Traceback" not in chaos.child.output
    assert chaos.child.stderr.splitlines()[-2].startswith("finished with row failures")


def test_sandbox_state_is_exactly_what_the_input_asks(chaos: ChaosRun) -> None:
    names = Counter(name for _, name in chaos.groups)
    assert {n: names[n] for n in GROUPS} == dict.fromkeys(GROUPS, 1), "a group exists twice"
    assert len(chaos.groups) == 3 + len(GROUPS), chaos.groups
    ids = {name: gid for gid, name in chaos.groups}
    wrong = [(o, g, chaos.members[o]) for o, g in chaos.expected.items()
             if chaos.members[o] != (ids[g] if g is not None else 0)]
    assert not wrong, f"{len(wrong)} followers are not where the input asks, e.g. {wrong[:3]}"


def test_every_row_is_reported_once_with_one_final_status(chaos: ChaosRun) -> None:
    report = report_rows(chaos.run_dir)
    assert [int(r["row"]) for r in report] == list(range(2, N_ROWS + 2))
    assert {r["status"] for r in report} <= FINAL_STATUSES
    assert Counter(r["status"] for r in report) == EXPECTED_COUNTS
    failed = [r for r in report if r["status"] == "failed"]
    assert {r["errcode"] for r in failed} == {"43004"}  # not following: read, never moved
    assert all(r["openid"].startswith("oStrangerNotAFollower") for r in failed)
    assert all(r["errmsg"] for r in report if r["status"] in ("invalid", "duplicate"))
    formulas = [r for r in report if r["openid"].startswith("'=")]
    assert formulas
    assert all(r["status"] == "invalid" for r in formulas)
    failed_csv = (chaos.run_dir / "failed.csv").read_text(encoding="utf-8-sig")
    assert len(failed_csv.splitlines()) == 1 + EXPECTED_COUNTS["failed"] \
        + EXPECTED_COUNTS["invalid"]


def test_the_faults_really_happened(chaos: ChaosRun) -> None:
    """The sandbox saw the retries the faults cause, several tokens, and one 45011 burst in
    which the workers waited instead of hammering (about one refused call per worker)."""
    calls = chaos.calls
    planned_moves = 98_000 // 50  # at least
    assert calls["groups/members/batchupdate"] > planned_moves * 1.04
    assert calls["user/info/batchget"] > 98_500 // 100 * 1.04
    assert calls["groups/create"] >= len(NEW)
    assert len(chaos.tokens) >= 3, "tokens did not expire during the run"
    assert chaos.burst_calls >= 1, "the per-minute quota burst never overlapped the moves"
    assert chaos.burst_calls <= 3 * CONCURRENCY, chaos.burst_calls
    assert chaos.moves_after_burst > 1_000, "the burst did not pause the moves"


def test_token_fetches_stay_within_a_small_bound(chaos: ChaosRun) -> None:
    issued = len(chaos.tokens)
    assert chaos.calls["token"] == 0  # stable tokens only
    assert chaos.calls["stable_token"] <= 3 * issued + CONCURRENCY, (
        f"{chaos.calls['stable_token']} token fetches for {issued} tokens")


def test_peak_memory_is_bounded(chaos: ChaosRun) -> None:
    assert chaos.child.peak_rss_mb < RSS_LIMIT_MB


def test_no_secret_in_any_output(chaos: ChaosRun) -> None:
    figures = chaos.audit.check(_TokenState(chaos.tokens))
    assert figures["secrets"] >= 4
    assert figures["files"] >= 5


class _TokenState:
    def __init__(self, tokens: list[str]) -> None:
        self.issued_tokens = tokens
