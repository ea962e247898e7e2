"""The gate between a client and the account's budget, on a fake clock: WeChat's long latency
tail is not congestion, a sustained doubling is, and calls that stalled never leave together."""

from __future__ import annotations

import asyncio
import math
import random

from batchmove.registry import Budget, Registry, SharedGate
from bench.harness import max_in_window
from tests.support.sandboxes import FakeClock

ENDPOINT = "groups/members/batchupdate"


def auto_gate(clock: FakeClock) -> SharedGate:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    budget = Budget(Registry(), "acct", clock=clock)
    budget.join()
    gate = SharedGate(budget, auto=True, concurrency=4, start_rate=98.0, clock=clock,
                      sleep=sleep)
    gate.seed(ENDPOINT, 98.0, 98.0, 5.0)  # the reported rate_limit: 500 calls / 5 s
    return gate


async def lowest_rate(latencies: list[float]) -> float:
    """Calls one after another, each answered after its latency: the lowest rate seen."""
    clock = FakeClock()
    gate = auto_gate(clock)
    lowest = math.inf
    for seconds in latencies:
        started = await gate.enter(ENDPOINT)
        clock.advance(seconds)
        gate.leave(ENDPOINT, started, 0)
        lowest = min(lowest, gate.rates()[ENDPOINT])
    return lowest


def lognormal(n: int, median: float, p99_over_median: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    sigma = math.log(p99_over_median) / 2.3263
    return [median * math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


async def test_a_long_latency_tail_is_not_congestion() -> None:
    for seed in range(3):  # median 30 ms, p99 300 ms, as the bench's account
        assert await lowest_rate(lognormal(3_000, 0.030, 10.0, seed)) == 98.0


async def test_a_latency_that_stays_doubled_is_congestion() -> None:
    calm, slow = lognormal(320, 0.030, 2.0, 1), lognormal(320, 0.090, 2.0, 2)
    assert await lowest_rate(calm + slow) < 98.0


async def test_calls_that_stalled_do_not_leave_together() -> None:
    """Eight workers of a fixed rate of 10 (slots 1/8 s apart); the loop stalls for 0.6 s
    twice. Without taking a new slot, the workers holding slots that passed meanwhile would
    all send at once on waking: 13 calls in one second."""
    clock = FakeClock()
    stalls = {1.0, 2.5}

    tick = asyncio.Condition()

    async def sleep(seconds: float) -> None:
        until = clock.now + seconds
        async with tick:
            await tick.wait()  # as asyncio.sleep: it always yields, then wakes on a tick
            await tick.wait_for(lambda: clock.now >= until - 1e-9)

    async def ticks() -> None:
        start = clock.now
        while True:
            async with tick:
                elapsed = round(clock.now - start, 3)
                clock.advance(0.6 if elapsed in stalls else 0.001)  # a stall: no one runs
                tick.notify_all()
            await asyncio.sleep(0)

    budget = Budget(Registry(), "acct", fixed_rate=10.0, clock=clock)
    budget.join()
    gate = SharedGate(budget, auto=False, concurrency=8, start_rate=10.0, clock=clock,
                      sleep=sleep)
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(5):
            starts.append(await gate.enter(ENDPOINT))
            gate.leave(ENDPOINT, starts[-1], 0)

    driver = asyncio.create_task(ticks())
    try:
        await asyncio.gather(*(worker() for _ in range(8)))
    finally:
        driver.cancel()
    starts.sort()
    assert max_in_window(starts) <= 8 + 1  # the fixed rate's 8 slots a second, one late
