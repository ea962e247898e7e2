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

from batchmove.registry import Budget, Registry
from batchmove.registry.aimd import SAFE_START, BucketState, Report, apply, start_rate
from batchmove.registry.budget import sharing
from batchmove.sandbox.pushback import Pushback
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


def max_in_window(times: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


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


HOLDER = textwrap.dedent("""
    import time
    from batchmove.registry import Budget, Registry
    Budget(Registry(), "shared-account", fixed_rate=10).join()
    print("joined", flush=True)
    time.sleep(60)
""")


def test_a_killed_run_gives_its_share_back() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "joined"
        registry = Registry()
        mine = Budget(registry, "shared-account", fixed_rate=10)
        mine.join()
        assert sharing(registry, "shared-account") == 2
        assert mine.reserve("*", Report(), 10, want=1).sharing == 2
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert sharing(registry, "shared-account") == 1
        assert mine.reserve("*", Report(), 10, want=1).sharing == 1
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


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
    assert rate == 98.0
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
