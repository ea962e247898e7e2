"""The shared rate budget: processes of one account together stay within its rate, a killed
process's lease lapses, and AIMD finds a limit the sandbox enforces."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from batchmove.registry import Budget, Registry
from batchmove.registry.aimd import SAFE_START, BucketState, Report, apply, start_rate
from batchmove.registry.budget import sharing
from batchmove.sandbox.pushback import Pushback
from bench.harness import max_in_window  # the bench's own count of a sliding window
from tests.support.processes import holder
from tests.support.sandboxes import REPO_ROOT, FakeClock

SENDER = textwrap.dedent("""
    import asyncio, sys
    from batchmove.registry import Budget, Registry, SharedGate
    from batchmove.wechat.client import WeChatClient
    from batchmove.wechat.token import SecretTokenSource

    async def main(base, rate, calls):
        budget = Budget(Registry(), "shared-account", fixed_rate=rate)
        budget.join()
        gate = SharedGate(budget, auto=False, concurrency=4, start_rate=rate)
        source = SecretTokenSource("wxsandbox0000000001", "sandbox-secret-not-real")
        async with WeChatClient(base, source, gate=gate) as client:
            async def worker(n):
                for _ in range(n):
                    await client.get_groups()
            await asyncio.gather(*(worker(calls // 4) for _ in range(4)))
        gate.close()

    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
""")


def test_three_processes_never_exceed_the_account_rate(sandbox_process) -> None:  # type: ignore[no-untyped-def]
    base = sandbox_process("--users", "5")
    rate, calls = 30, 24
    procs = [subprocess.Popen([sys.executable, "-c", SENDER, base, str(rate), str(calls)],
                              cwd=REPO_ROOT) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with urllib.request.urlopen(f"{base}/sandbox/timeline") as resp:
        times = sorted(float(t) for t, _ in json.loads(resp.read())["calls"])
    assert len(times) == 3 * (calls + 1)  # each process's token fetch passes the gate too
    assert max_in_window(times) <= rate
    # together at the account's rate (28/s sustained), not three times it
    assert times[-1] - times[0] >= (len(times) - rate) / rate


MIXED = textwrap.dedent("""
    import asyncio, sys
    from batchmove.registry import Budget, Registry, SharedGate
    from batchmove.registry.aimd import start_rate
    from batchmove.wechat.client import WeChatClient
    from batchmove.wechat.token import SecretTokenSource

    async def main(base, setting, calls):
        fixed = None if setting == "auto" else float(setting)
        budget = Budget(Registry(), "shared-account", fixed_rate=fixed)
        budget.join()
        gate = SharedGate(budget, auto=fixed is None, concurrency=4, start_rate=fixed or 20.0)
        source = SecretTokenSource("wxsandbox0000000001", "sandbox-secret-not-real")
        async with WeChatClient(base, source, gate=gate) as client:
            if fixed is None:  # what seed_rates does: start from the reported rate_limit
                quota = await client.get_quota("groups/get")
                rate, ceiling = start_rate(quota.call_count, quota.refresh_second,
                                           alone=False)
                gate.seed("groups/get", rate, ceiling, quota.refresh_second, alone=False)
            print("ready", flush=True)
            sys.stdin.readline()  # all three start sending together
            async def worker(n):
                for _ in range(n):
                    await client.get_groups()
            await asyncio.gather(*(worker(calls // 4) for _ in range(4)))
        gate.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


def test_auto_and_fixed_runs_share_one_budget_per_endpoint(sandbox_process) -> None:  # type: ignore[no-untyped-def]
    """An auto run at the account's reported 40/s and two fixed runs (30 and 20): apart they
    would send ~57/s; together they stay within 40 in every 1 s window."""
    base = sandbox_process("--users", "5")
    admin = urllib.request.Request(
        f"{base}/sandbox/faults", data=json.dumps({"rate_limit": {"groups/get": [200, 5]}})
        .encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(admin).read()
    settings, calls = ("auto", "30", "20"), 48
    procs = [subprocess.Popen([sys.executable, "-c", MIXED, base, setting, str(calls)],
                              cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for setting in settings]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    with urllib.request.urlopen(f"{base}/sandbox/timeline") as resp:
        times = sorted(float(t) for t, e in json.loads(resp.read())["calls"]
                       if e == "groups/get")
    assert len(times) == 3 * calls
    assert max_in_window(times) <= 40
    assert times[-1] - times[0] >= (len(times) - 40) / 40  # together at 40/s, no faster


HOLDER = textwrap.dedent("""
    import time
    from batchmove.registry import Budget, Registry
    Budget(Registry(), "shared-account", fixed_rate=10).join()
    print("joined", flush=True)
    time.sleep(60)
""")


def test_a_killed_run_gives_its_share_back() -> None:
    with holder(HOLDER, "joined") as other:
        registry = Registry()
        mine = Budget(registry, "shared-account", fixed_rate=10)
        mine.join()
        assert sharing(registry, "shared-account") == 2
        assert mine.reserve("*", Report(), 10, want=1).sharing == 2
        os.kill(other.pid, signal.SIGKILL)
        other.wait(timeout=10)
        assert sharing(registry, "shared-account") == 1
        assert mine.reserve("*", Report(), 10, want=1).sharing == 1


def test_slots_are_spaced_across_budgets_of_one_account() -> None:
    clock = FakeClock()
    registry = Registry()
    a = Budget(registry, "acct", fixed_rate=50, clock=clock)
    b = Budget(registry, "acct", fixed_rate=50, clock=clock)
    a.join()
    b.join()
    slots = [*a.reserve("*", Report(), 50, 5).slots, *b.reserve("*", Report(), 50, 5).slots,
             *a.reserve("*", Report(), 50, 5).slots]
    gaps = {round(y - x, 6) for x, y in itertools.pairwise(slots)}
    assert gaps == {round(1 / 48, 6)}  # one schedule, 50 - 2 a second, whoever takes them


def simulate(seconds: float, hidden: bool) -> tuple[float, int, float]:
    """A sender pacing itself at the AIMD rate against the sandbox's own frequency limit
    (500 calls per 5 s): its goodput over the run, the 45011s it met, the final rate."""
    clock = FakeClock(0.0)
    limit = {"groups/members/batchupdate": (500, 5.0)}
    pushback = Pushback(clock)
    rate, ceiling = start_rate(*((None, None) if hidden else (500, 5.0)))
    state = BucketState(rate=rate, ceiling=ceiling, window=None if hidden else 5.0)
    ok = throttled = 0
    tick, credit = 0.05, 0.0
    while clock.now < seconds:
        report = Report()
        if clock.now >= state.paused_until:
            credit += state.rate * tick
            sends, credit = int(credit), credit - int(credit)
            for _ in range(sends):
                if pushback.admit("groups/members/batchupdate", limit):
                    report.throttled = True
                    throttled += 1
                    break
                report.ok += 1
        ok += report.ok
        state = apply(state, report, clock.now, 200.0, 60.0 - clock.now % 60)
        clock.advance(tick)
    return ok / seconds, throttled, state.rate


def test_aimd_starts_at_a_reported_limit_and_meets_no_45011() -> None:
    goodput, throttled, rate = simulate(30.0, hidden=False)
    assert throttled == 0
    assert rate == 99.0  # alone on the account: 1% under the reported window
    assert goodput >= 95


def test_aimd_finds_a_hidden_limit() -> None:
    goodput, throttled, rate = simulate(60.0, hidden=True)
    assert throttled > 0  # the only way to learn a hidden limit
    assert goodput >= 0.85 * 100
    assert 50 <= rate <= 200


def test_aimd_halves_once_per_episode_and_never_under_goodput() -> None:
    state = BucketState(rate=100.0, slow_start=False, ok_since=0.0, ok_now=400)
    cut = apply(state, Report(busy=True), 4.0, 200.0, 56.0)
    assert cut.rate == 100 * 0.5 if 0.9 * 400 / 5 < 50 else cut.rate == 0.9 * 400 / 5
    again = apply(cut, Report(busy=True), 4.5, 200.0, 55.5)
    assert again.rate == cut.rate  # within the cooldown: one congestion episode
    grown = apply(BucketState(rate=SAFE_START), Report(ok=20), 0.0, 200.0, 60.0)
    assert grown.rate == 2 * SAFE_START  # slow start doubles per second of clean answers


def test_a_45011_with_no_known_window_is_probed_at_least_every_second() -> None:
    state, now, pauses = BucketState(rate=100.0, slow_start=False), 0.0, []
    for _ in range(8):  # answers that stay 45011: the pause doubles, up to a second
        state = apply(state, Report(throttled=True), now, 200.0, 59.0)
        pauses.append(round(state.paused_until - now, 3))
        now = state.paused_until
    assert pauses == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    known = BucketState(rate=98.0, slow_start=False, window=5.0)
    for _ in range(6):  # a reported window: up to the window
        known = apply(known, Report(throttled=True), now, 200.0, 59.0)
        now = known.paused_until
    assert known.probe_delay == 5.0


def test_a_run_of_45011s_cuts_the_rate_once() -> None:
    """A hidden window that stays closed for 3 s: one cut, not one a second under a goodput
    that sinks while nothing gets through."""
    state = BucketState(rate=190.0, slow_start=False, ok_since=0.0, ok_now=500)
    state = apply(state, Report(ok=40), 4.9, 200.0, 60.0)
    now, rates = 5.0, []
    while now < 8.0:  # 45011 after 45011, probes a second apart at most
        state = apply(state, Report(throttled=True), now, 200.0, 60.0)
        rates.append(state.rate)
        now = state.paused_until
    assert len(rates) >= 4
    assert set(rates) == {rates[0]}
    assert rates[0] < 190.0
    state = apply(state, Report(ok=20), now, 200.0, 60.0)  # the window turned: it grows again
    grown = state.rate
    assert grown > rates[0]
    state = apply(state, Report(throttled=True), now + 5.0, 200.0, 60.0)  # a new episode
    assert state.rate < grown


def test_a_run_alone_paces_by_the_reported_window_runs_sharing_by_the_second() -> None:
    """Alone: 1% under call_count / refresh_second, and 2 calls a window under it at least
    (a late slot and some jitter fit in the window); sharing: 2% and 2 calls/s under it (each
    second within the account's rate: the slots of several processes interleave)."""
    assert start_rate(500, 5.0) == (99.0, 99.0)
    assert start_rate(500, 5.0, alone=False) == (98.0, 98.0)
    assert start_rate(100, 1.0) == (98.0, 98.0)  # a 1 s window: 2 calls of it are the margin
    assert start_rate(1800, 60.0)[0] == pytest.approx(29.7)  # was 28: 2/s of a minute's 30/s
    assert start_rate(5, 1.0) == (4.9, 4.9)
    assert start_rate(None, None) == (SAFE_START, None)


def test_a_second_run_on_the_account_slows_the_slots_to_the_shared_ceiling(
        tmp_path: Path) -> None:
    """Alone, the reported window's 99/s; from the moment another run holds a lease (before
    it seeds anything, while it loads its input), every second within the rate: 98/s."""
    clock = FakeClock(100.0)
    mine = Budget(Registry(tmp_path), "acct", clock=clock)
    mine.join()
    mine.seed("moves", 99.0, 99.0, 5.0, alone=True, shared=98.0)
    alone = mine.reserve("moves", Report(), 99.0, want=4)
    other = Budget(Registry(tmp_path), "acct", clock=clock, pid=os.getppid())  # alive
    other.join()
    clock.advance(1.0)
    shared = mine.reserve("moves", Report(), 99.0, want=4)
    gaps = [round(b - a, 6) for slots in (alone.slots, shared.slots)
            for a, b in itertools.pairwise(slots)]
    assert gaps == [round(1 / 99, 6)] * 3 + [round(1 / 98, 6)] * 3
    assert (alone.sharing, shared.sharing) == (1, 2)
    other.leave()
    clock.advance(1.0)
    assert mine.reserve("moves", Report(), 99.0, want=4).rate == 99.0  # alone again
