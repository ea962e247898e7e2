"""`SharedGate`: the client's `RateGate` over the account's shared budget.

Per scope (an endpoint under `rate = "auto"`, "*" for a fixed rate) the gate keeps the slots it
took from the registry and hands them to its workers, one each; a worker whose slot is ahead
sleeps until it. The registry is asked only when the local slots run out (~50 ms of them at a
time, one transaction), or at once after a 45011 or a -1, so every sender of the account pauses
and slows down together. A fixed rate's call then also takes its slot of the endpoint's
schedule while an auto run shares the account (one budget per endpoint: see `budget`).

Under `rate = "auto"` the gate also adapts its concurrency: calls in flight are kept under
`2 x this run's share of the rate x the mean latency + 2` (Little's law with room for the
long tail), between 2 and the job's `concurrency`; it follows the rate as AIMD moves it. The
median latency of each 32 answers is compared with a baseline (the calm samples' medians,
averaged slowly): doubled (and 20 ms slower) in two samples in a row is a sign of congestion,
reported like a -1. Not the lowest median seen: with WeChat's long tail (p99 ~10x the median)
the lowest of many samples sits far below the usual one, and an ordinary sample then looked
like congestion, cutting the rate of a run that was only on time.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from batchmove.registry.aimd import Report
from batchmove.registry.budget import ANY, Budget

MINUTE_QUOTA = 45011
SYSTEM_BUSY = -1
LATENCY_SAMPLE = 32


@dataclass
class _Scope:
    name: str
    start: float  # the rate a new bucket starts at
    rate: float
    limit: int
    slots: deque[float] = field(default_factory=deque)
    report: Report = field(default_factory=Report)
    spent: Counter[str] = field(default_factory=Counter)
    not_before: float = 0.0  # the registry said wait: no need to ask again before
    sharing: int = 1
    auto_live: bool = False  # an auto run shares the account (a fixed run's view)
    inflight: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)
    baseline: float | None = None
    slow_before: bool = False  # the last sample's median was slow
    mean_latency: float | None = None


class SharedGate:
    """Paces one client's calls within the account's rate, shared with its other runs."""

    def __init__(self, budget: Budget, *, auto: bool, concurrency: int, start_rate: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.budget, self.auto, self.concurrency = budget, auto, max(1, concurrency)
        self.start_rate = start_rate
        self.clock, self.sleep = clock, sleep
        self.scopes: dict[str, _Scope] = {}

    def __repr__(self) -> str:
        mode = "auto" if self.auto else f"rate={self.budget.fixed_rate:g}"
        return f"SharedGate({self.budget.account!r}, {mode})"

    # --- RateGate ---------------------------------------------------------------------------
    async def enter(self, endpoint: str) -> float:
        scope = self._scope(endpoint)
        if self.auto:
            while scope.inflight >= scope.limit:
                scope.room.clear()
                await scope.room.wait()
            scope.inflight += 1
        try:
            while not await self._on_time(await self._slot(scope), scope.rate):
                pass  # woken more than a slot late: that slot is gone, take the next one
            if not self.auto and scope.auto_live:  # a fixed rate takes its share of the
                await self._endpoint_slot(endpoint)  # endpoint's schedule too
        except BaseException:
            self._release(scope)
            raise
        scope.spent[endpoint] += 1
        return self.clock()

    def leave(self, endpoint: str, started: float, errcode: int | None) -> None:
        scope = self._scope(endpoint)
        self._release(scope)
        report = scope.report
        if errcode == 0:
            report.ok += 1
            self._latency(scope, self.clock() - started)
        elif errcode == MINUTE_QUOTA:
            report.throttled = True
        elif errcode == SYSTEM_BUSY:
            report.busy = True
        if self.auto and (report.throttled or report.busy):
            scope.slots.clear()  # the registry pauses or slows every sender: ask it now
            self._refill(scope, 0)

    def managed_wait(self, endpoint: str) -> bool:
        return self.auto

    # --- what the run reports ---------------------------------------------------------------
    def seed(self, endpoint: str, rate: float, ceiling: float | None = None,
             window: float | None = None, *, alone: bool = True,
             shared: float | None = None) -> None:
        """A scope's start (auto: from quota/get's rate_limit, or the safe start); `shared`:
        its ceiling while other runs share the account."""
        if self.auto:
            self.budget.seed(endpoint, rate, ceiling, window, alone=alone, shared=shared)
            self._scope(endpoint).start = rate

    def rates(self) -> dict[str, float]:
        """The rate each scope ran at last (calls/s), as `summary.json` reports it."""
        return {name: round(s.rate, 1) for name, s in self.scopes.items()}

    def sharing(self) -> int:
        return max((s.sharing for s in self.scopes.values()), default=1)

    def close(self) -> None:
        """Hand in the last reports (calls spent) and the lease."""
        for scope in self.scopes.values():
            if scope.spent or scope.report.ok:
                self._refill(scope, 0)
        self.budget.leave()

    # --- inside -----------------------------------------------------------------------------
    def _scope(self, endpoint: str) -> _Scope:
        name = endpoint if self.auto else ANY
        scope = self.scopes.get(name)
        if scope is None:
            scope = self.scopes[name] = _Scope(name, self.start_rate, self.start_rate,
                                               self.concurrency)
        return scope

    async def _slot(self, scope: _Scope) -> float:
        while True:
            now = self.clock()
            late = now - 1.0 / max(scope.rate, 1e-6)
            while scope.slots and scope.slots[0] < late:
                scope.slots.popleft()
            if scope.slots:
                return scope.slots.popleft()
            if now < scope.not_before:
                await self.sleep(scope.not_before - now)
                continue
            wait = self._refill(scope, self.concurrency)
            if wait > 0:
                scope.not_before = self.clock() + wait
                await self.sleep(wait)

    async def _endpoint_slot(self, endpoint: str) -> None:
        """One slot of the endpoint's schedule, taken when it is needed (see `budget`)."""
        while True:
            grant = self.budget.reserve(endpoint, Report(), self.start_rate, want=1)
            if grant.slots:
                if await self._on_time(grant.slots[0], grant.rate):
                    return
            else:
                await self.sleep(grant.wait)

    async def _on_time(self, slot: float, rate: float) -> bool:
        """Sleep until the slot; whether this worker woke within one slot of it. A loop that
        stalled (a busy machine) would wake every worker whose slot passed meanwhile at
        once: their calls would arrive together, over the rate in that second."""
        delay = slot - self.clock()
        if delay > 0:
            await self.sleep(delay)
        return self.clock() - slot <= 1.0 / max(rate, 1e-6)

    def _refill(self, scope: _Scope, want: int) -> float:
        report, spent = scope.report, scope.spent
        scope.report, scope.spent = Report(), Counter()
        grant = self.budget.reserve(scope.name, report, scope.start, want, spent)
        scope.rate, scope.sharing = grant.rate, grant.sharing
        scope.auto_live = grant.auto_live
        scope.slots.extend(grant.slots)
        if self.auto and scope.mean_latency is not None:
            share = grant.rate / max(grant.sharing, 1)
            wanted = math.ceil(2 * share * scope.mean_latency) + 2
            scope.limit = max(2, min(self.concurrency, wanted))
            scope.room.set()
        return grant.wait

    def _release(self, scope: _Scope) -> None:
        if self.auto:
            scope.inflight -= 1
            scope.room.set()

    def _latency(self, scope: _Scope, seconds: float) -> None:
        mean = scope.mean_latency
        scope.mean_latency = seconds if mean is None else 0.9 * mean + 0.1 * seconds
        scope.latencies.append(seconds)
        if len(scope.latencies) < LATENCY_SAMPLE:
            return
        median = statistics.median(scope.latencies)
        scope.latencies.clear()
        base = scope.baseline
        if base is None:
            scope.baseline = median
            return
        slow = median > 2 * base and median - base > 0.02
        if slow and scope.slow_before:  # twice in a row: one long tail is no congestion
            scope.report.slow = True
        scope.slow_before = slow
        if not slow:  # the baseline follows the latency of calm answers, slowly
            scope.baseline = 0.8 * base + 0.2 * median
