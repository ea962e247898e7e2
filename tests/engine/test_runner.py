"""The worker pool, driven by an in-memory `send` (the runner's own callback interface).

No test sleeps: `RetryPolicy(sleep=..., clock=...)` records the delays asked for and returns at
once. Stops that wait for in-flight calls get a small `grace`.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple

import pytest
import tenacity.wait
from hypothesis import given, settings
from hypothesis import strategies as st

from batchmove.engine.planner import plan_batches
from batchmove.engine.runner import Limits, RetryPolicy, Runner, StopReason, with_retries
from batchmove.errors import (
    ApiError,
    DailyQuotaError,
    FatalApiError,
    MinuteQuotaError,
    OutcomeUnknownError,
    ProtocolError,
    RowError,
    TokenError,
    TransientError,
)
from batchmove.models import Batch, RowFailure

SYSTEM_ERROR = "system error"
QUOTA_MINUTE = "api minute-quota reach limit, must slower, retry next minute"


def transient() -> TransientError:
    return TransientError(-1, SYSTEM_ERROR, "groups/members/batchupdate")


def minute_quota() -> MinuteQuotaError:
    return MinuteQuotaError(45011, QUOTA_MINUTE, "groups/members/batchupdate")


class FakeServer:
    """Moves users like groups/members/batchupdate. A batch with any openid outside `valid`
    is refused whole with `bad_errcode`; `faults` are raised by call number (1-based) and
    `group_faults` for every call to a group; `hooks` run (awaited) before a call answers."""

    def __init__(self, valid: set[str] | None = None, *, bad_errcode: int = 40003,
                 faults: dict[int, ApiError] | None = None,
                 group_faults: dict[int, ApiError] | None = None,
                 hooks: dict[int, Callable[[], Awaitable[None]]] | None = None,
                 ticks: int = 0) -> None:
        self.valid = valid
        self.bad_errcode = bad_errcode
        self.faults = faults or {}
        self.group_faults = group_faults or {}
        self.hooks = hooks or {}
        self.ticks = ticks
        self.calls: list[Batch] = []
        self.moved: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, batch: Batch) -> dict[str, Any]:
        self.calls.append(batch)
        n = len(self.calls)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(self.ticks):
                await asyncio.sleep(0)
            if n in self.hooks:
                await self.hooks[n]()
            if n in self.faults:
                raise self.faults[n]
            if batch.target_id in self.group_faults:
                raise self.group_faults[batch.target_id]
            if self.valid is not None and not set(batch.openids) <= self.valid:
                raise RowError(self.bad_errcode, "invalid openid", "groups/members/batchupdate")
            for openid in batch.openids:
                self.moved[openid] = batch.target_id
            return {"errcode": 0, "errmsg": "ok"}
        finally:
            self.in_flight -= 1


class Results:
    """The runner's callbacks, recorded."""

    def __init__(self) -> None:
        self.done: list[tuple[Batch, int]] = []
        self.failed: list[RowFailure] = []

    def on_done(self, batch: Batch, result: object, attempts: int) -> None:
        assert result == {"errcode": 0, "errmsg": "ok"}
        self.done.append((batch, attempts))

    def on_failed(self, failures: list[RowFailure]) -> None:
        self.failed.extend(failures)

    @property
    def done_rows(self) -> set[int]:
        return {m.row for b, _ in self.done for m in b.moves}


class Sleeps:
    """An injected sleep: records each delay, returns at once (or runs `then` first)."""

    def __init__(self, then: Callable[[], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self.then = then

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.then is not None:
            await self.then()


class Pending(NamedTuple):
    group_id: int
    row: int
    openid: str


def moves(n: int, group_id: int = 101, first_row: int = 2) -> list[Pending]:
    return [Pending(group_id, r, f"o{r}") for r in range(first_row, first_row + n)]


def make_runner(server: FakeServer, results: Results, *, sleeps: Sleeps | None = None,
                clock: Callable[[], float] = lambda: 6000.0, **kwargs: Any) -> Runner[Any]:
    policy_args = {k: kwargs.pop(k) for k in ("attempts", "base_delay", "max_delay",
                                              "minute_quota_attempts") if k in kwargs}
    policy = RetryPolicy(sleep=sleeps or Sleeps(), clock=clock, **policy_args)
    return Runner(send=server, on_done=results.on_done, on_failed=results.on_failed,
                  policy=policy, **kwargs)


# --- the happy path ----------------------------------------------------------------------------
@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_every_batch_moves_and_concurrency_stays_under_the_cap(concurrency: int) -> None:
    pending = moves(120, 101) + moves(60, 102, first_row=200) + moves(7, 0, first_row=400)
    batches = plan_batches(pending, 5)
    server, results = FakeServer(ticks=3), Results()
    outcome = await make_runner(server, results, concurrency=concurrency).run(batches)
    assert outcome.reason is StopReason.DONE
    assert outcome.error is None
    assert outcome.calls_made == len(server.calls) == len(batches) == 38
    assert server.moved == {m.openid: m.group_id for m in pending}
    assert sorted(b.moves for b, _ in results.done) == sorted(b.moves for b in batches)
    assert {a for _, a in results.done} == {1}
    assert results.failed == []
    assert server.max_in_flight == concurrency


async def test_batches_drawn_lazily_within_the_lookahead() -> None:
    drawn: list[int] = []
    server, results = FakeServer(ticks=3), Results()
    runner = make_runner(server, results, concurrency=2)

    def batches() -> Iterator[Batch]:
        for i, batch in enumerate(plan_batches(moves(100), 5)):
            drawn.append(i)
            assert i - len(server.calls) <= 4 + 2  # never more than lookahead ahead
            yield batch

    outcome = await runner.run(batches(), lookahead=4)
    assert outcome.reason is StopReason.DONE
    assert len(drawn) == len(server.calls) == 20
    assert results.done_rows == {m.row for m in moves(100)}


async def test_batches_submitted_by_a_callback_are_sent_before_the_run_ends() -> None:
    server, results = FakeServer(ticks=2), Results()
    follow_up = Batch(102, (900,), ("o900",))

    def on_done(batch: Batch, result: object, attempts: int) -> None:
        results.on_done(batch, result, attempts)
        if batch.rows == (2,):
            runner.submit(follow_up)

    runner = Runner(send=server, on_done=on_done, on_failed=results.on_failed, concurrency=3)
    outcome = await runner.run(plan_batches(moves(3), 1), lookahead=1)
    assert outcome.reason is StopReason.DONE
    assert server.moved["o900"] == 102
    assert len(server.calls) == 4


async def test_no_batches_is_done_without_calls() -> None:
    server, results = FakeServer(), Results()
    outcome = await make_runner(server, results).run([])
    assert (outcome.reason, outcome.calls_made, server.calls) == (StopReason.DONE, 0, [])


# --- transient errors --------------------------------------------------------------------------
async def test_transient_errors_are_retried_until_success() -> None:
    sleeps = Sleeps()
    server, results = FakeServer(faults={1: transient(), 2: transient()}), Results()
    batches = plan_batches(moves(3))
    outcome = await make_runner(server, results, sleeps=sleeps, attempts=6,
                                concurrency=1).run(batches)
    assert outcome.reason is StopReason.DONE
    assert results.done == [(batches[0], 3)]
    assert len(server.calls) == outcome.calls_made == 3
    assert len(sleeps.delays) == 2
    assert results.failed == []


@pytest.mark.parametrize("attempts", [1, 2, 6])
async def test_transient_errors_give_up_after_the_attempts(attempts: int) -> None:
    sleeps = Sleeps()
    faults = {n: transient() for n in range(1, attempts + 1)}
    server, results = FakeServer(faults=faults), Results()
    first, second = plan_batches(moves(3) + moves(2, 102, first_row=10))
    outcome = await make_runner(server, results, sleeps=sleeps, attempts=attempts,
                                concurrency=1).run([first, second])
    assert results.failed == [
        RowFailure(r, -1, f"gave up after {attempts} attempts: system error", attempts)
        for r in (2, 3, 4)]
    assert results.done == [(second, 1)]  # the run goes on
    assert outcome.reason is StopReason.DONE
    assert outcome.calls_made == attempts + 1
    assert len(sleeps.delays) == attempts - 1


@pytest.mark.parametrize(("base", "cap", "attempts"), [(0.25, 8.0, 6), (1.0, 3.0, 8),
                                                       (0.5, 100.0, 5)])
async def test_backoff_windows_double_and_stop_at_max_delay(
        monkeypatch: pytest.MonkeyPatch, base: float, cap: float, attempts: int) -> None:
    windows: list[tuple[float, float]] = []

    def top_of_window(low: float, high: float) -> float:
        windows.append((low, high))
        return high

    monkeypatch.setattr(tenacity.wait.random, "uniform", top_of_window)
    sleeps = Sleeps()
    server = FakeServer(faults={n: transient() for n in range(1, attempts + 1)})
    await make_runner(server, Results(), sleeps=sleeps, attempts=attempts, base_delay=base,
                      max_delay=cap).run(plan_batches(moves(1)))
    expected = [min(cap, base * 2 ** k) for k in range(attempts - 1)]
    # full jitter: uniform(0, window); tenacity also computes a wait after the last attempt
    assert windows[:attempts - 1] == [(0, high) for high in expected]
    assert sleeps.delays == expected


async def test_backoff_delays_are_jittered_within_their_windows() -> None:
    sleeps = Sleeps()
    attempts = 10
    server = FakeServer(faults={n: transient() for n in range(1, 10 * attempts + 1)})
    batches = plan_batches(moves(10), 1)
    await make_runner(server, Results(), sleeps=sleeps, attempts=attempts, base_delay=0.5,
                      max_delay=3.0, concurrency=1).run(batches)
    assert len(sleeps.delays) == 10 * (attempts - 1)
    per_batch = [sleeps.delays[i:i + attempts - 1] for i in range(0, len(sleeps.delays),
                                                                 attempts - 1)]
    for delays in per_batch:
        for k, delay in enumerate(delays):
            assert 0 <= delay <= min(3.0, 0.5 * 2 ** k)
    assert len(set(sleeps.delays)) > 1  # random, not a fixed schedule


# --- the minute quota --------------------------------------------------------------------------
@pytest.mark.parametrize(("now", "wait"), [(6000.0, 60.05), (6017.5, 42.55), (6059.9, 0.15),
                                           (1_700_000_010.0, 30.05)])
async def test_minute_quota_waits_for_the_next_minute(now: float, wait: float) -> None:
    sleeps = Sleeps()
    server, results = FakeServer(faults={1: minute_quota()}), Results()
    batches = plan_batches(moves(4))
    outcome = await make_runner(server, results, sleeps=sleeps, clock=lambda: now).run(batches)
    assert sleeps.delays == [pytest.approx(wait)]
    assert results.done == [(batches[0], 2)]
    assert outcome.reason is StopReason.DONE
    assert RetryPolicy(clock=lambda: now).seconds_to_next_minute() == pytest.approx(wait)


async def test_minute_quota_has_its_own_larger_cap() -> None:
    sleeps = Sleeps()
    server = FakeServer(faults={n: minute_quota() for n in (1, 2, 3)})
    results = Results()
    batches = plan_batches(moves(2))
    await make_runner(server, results, sleeps=sleeps, attempts=2,
                      minute_quota_attempts=5).run(batches)
    assert results.done == [(batches[0], 4)]
    assert sleeps.delays == [pytest.approx(60.05)] * 3


async def test_minute_quota_gives_up_after_its_cap() -> None:
    sleeps = Sleeps()
    server = FakeServer(faults={n: minute_quota() for n in range(1, 10)})
    results = Results()
    await make_runner(server, results, sleeps=sleeps, clock=lambda: 6030.0,
                      minute_quota_attempts=3).run(plan_batches(moves(2)))
    assert results.failed == [RowFailure(r, 45011, f"gave up after 3 attempts: {QUOTA_MINUTE}", 3)
                              for r in (2, 3)]
    assert sleeps.delays == [pytest.approx(30.05)] * 2


# --- bisection ---------------------------------------------------------------------------------
@pytest.mark.parametrize("errcode", [40003, 46004, 43004])
@pytest.mark.parametrize("bad_index", [0, 17, 49])
async def test_bisection_isolates_one_bad_openid_in_fifty(errcode: int, bad_index: int) -> None:
    pending = moves(50)
    bad = pending[bad_index]
    server = FakeServer({m.openid for m in pending} - {bad.openid}, bad_errcode=errcode)
    results = Results()
    limits = Limits()
    outcome = await make_runner(server, results, limits=limits).run(plan_batches(pending))
    assert results.failed == [RowFailure(bad.row, errcode, "invalid openid", 1)]
    assert results.done_rows == {m.row for m in pending} - {bad.row}
    assert set(server.moved) == {m.openid for m in pending} - {bad.openid}
    assert outcome.calls_made <= 2 * math.ceil(math.log2(50)) + 1  # 13, not 50
    assert outcome.reason is StopReason.DONE
    assert (limits.settled, limits.failed) == (50, 1)  # each row counted once, at its end


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=n))))
def test_bisection_moves_exactly_the_good_openids(case: tuple[int, set[int]]) -> None:
    n, bad_indexes = case
    pending = moves(n)
    bad = {pending[i] for i in bad_indexes}
    server = FakeServer({m.openid for m in pending} - {m.openid for m in bad})
    results = Results()
    outcome = asyncio.run(make_runner(server, results, concurrency=4).run(plan_batches(pending)))
    assert {f.row for f in results.failed} == {m.row for m in bad}
    assert len(results.failed) == len(bad)
    assert results.done_rows == {m.row for m in pending} - {m.row for m in bad}
    depth = math.ceil(math.log2(n)) if n > 1 else 0
    assert outcome.calls_made <= min(2 * n - 1, 1 + 2 * len(bad) * depth)


@pytest.mark.parametrize(("errcode", "errmsg"), [(40050, "invalid group id"),
                                                 (40032, "invalid openid list size"),
                                                 (45016, "系统分组，不允许修改")])
async def test_group_level_row_errors_fail_the_whole_batch_without_splitting(
        errcode: int, errmsg: str) -> None:
    server = FakeServer(group_faults={999: RowError(errcode, errmsg, "x")})
    results = Results()
    batches = plan_batches(moves(30, 999) + moves(5, 101, first_row=100))
    outcome = await make_runner(server, results, concurrency=1).run(batches)
    assert results.failed == [RowFailure(r, errcode, errmsg, 1) for r in range(2, 32)]
    assert [b.target_id for b in server.calls] == [999, 101]
    assert results.done_rows == set(range(100, 105))
    assert outcome.reason is StopReason.DONE


async def test_without_bisection_a_bad_openid_fails_its_batch() -> None:
    pending = moves(10)
    server = FakeServer({m.openid for m in pending} - {"o5"})
    results = Results()
    outcome = await make_runner(server, results, bisect=False).run(plan_batches(pending))
    assert results.failed == [RowFailure(r, 40003, "invalid openid", 1) for r in range(2, 12)]
    assert outcome.calls_made == 1


async def test_unknown_errcode_fails_its_rows_and_the_run_goes_on() -> None:
    server = FakeServer(group_faults={7: ApiError(99999, "something new", "x")})
    results = Results()
    batches = plan_batches(moves(3, 7) + moves(4, 8, first_row=10))
    outcome = await make_runner(server, results, concurrency=1).run(batches)
    assert results.failed == [RowFailure(r, 99999, "something new", 1) for r in (2, 3, 4)]
    assert results.done_rows == {10, 11, 12, 13}
    assert outcome.reason is StopReason.DONE
    assert outcome.calls_made == 2


# --- one call outside the pool ----------------------------------------------------------------
async def test_with_retries_retries_transient_and_minute_quota_errors() -> None:
    answers: list[object] = [transient(), minute_quota(), transient(), ["groups"]]
    sleeps = Sleeps()

    async def call() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    policy = RetryPolicy(attempts=6, sleep=sleeps, clock=lambda: 6050.0)
    assert await with_retries(call, policy) == ["groups"]
    assert answers == []
    assert len(sleeps.delays) == 3
    assert sleeps.delays[1] == pytest.approx(10.05)


@pytest.mark.parametrize(("error", "calls"), [
    (transient(), 3),
    (FatalApiError(40013, "invalid appid", "groups/get"), 1),
    (RowError(40003, "invalid openid", "groups/get"), 1),
])
async def test_with_retries_gives_up_with_the_last_error(error: ApiError, calls: int) -> None:
    made: list[int] = []

    async def call() -> object:
        made.append(1)
        raise error

    with pytest.raises(type(error)) as caught:
        await with_retries(call, RetryPolicy(attempts=3, sleep=Sleeps()))
    assert caught.value is error
    assert len(made) == calls


# --- stopping ----------------------------------------------------------------------------------
async def test_daily_quota_stops_dispatch_and_leaves_unsent_rows_unreported() -> None:
    quota = DailyQuotaError(45009, "reach max api daily quota limit", "x")
    server, results = FakeServer(faults={2: quota}), Results()
    batches = plan_batches(moves(20), 5)
    outcome = await make_runner(server, results, concurrency=1, grace=0.05).run(batches)
    assert outcome.reason is StopReason.DAILY_QUOTA
    assert outcome.error is quota
    assert server.calls == batches[:2]
    assert results.done == [(batches[0], 1)]
    assert results.failed == []  # the refused batch and the unsent ones stay pending


@pytest.mark.parametrize("error", [FatalApiError(40164, "invalid ip, not in whitelist", "x"),
                                   TokenError(40001, "invalid credential", "x")])
async def test_fatal_error_stops_at_once_abandoning_calls_in_flight(error: ApiError) -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    server = FakeServer(faults={2: error}, hooks={1: hang})
    results = Results()
    batches = plan_batches(moves(20), 5)
    runner = make_runner(server, results, concurrency=2, grace=60.0)
    started = time.monotonic()
    outcome = await asyncio.wait_for(runner.run(batches), timeout=5)
    assert time.monotonic() - started < 2  # did not wait out the grace for the hung call
    assert outcome.reason is StopReason.FATAL
    assert outcome.error is error
    assert server.calls == batches[:2]
    assert results.done == []
    assert results.failed == []


async def test_failure_threshold_stops_once_the_sample_is_reached() -> None:
    server = FakeServer(group_faults={999: RowError(40050, "invalid group id", "x")})
    results = Results()
    batches = plan_batches(moves(40, 999), 5)
    limits = Limits(max_failure_rate=0.5, failure_sample=10)
    outcome = await make_runner(server, results, concurrency=1, limits=limits,
                                grace=0.05).run(batches)
    assert outcome.reason is StopReason.THRESHOLD
    assert server.calls == batches[:2]
    assert len(results.failed) == 10
    assert (limits.settled, limits.failed) == (10, 10)


@pytest.mark.parametrize(("bad_groups", "sample", "reason", "calls"), [
    ({999}, 100, StopReason.DONE, 8),  # every row fails, but the sample is never reached
    ({999}, 20, StopReason.THRESHOLD, 4),
    (set(), 10, StopReason.DONE, 8),  # nothing fails
])
async def test_failure_threshold_cases(bad_groups: set[int], sample: int, reason: StopReason,
                                       calls: int) -> None:
    faults = {g: RowError(40050, "invalid group id", "x") for g in bad_groups}
    server, results = FakeServer(group_faults=faults), Results()
    outcome = await make_runner(server, results, concurrency=1, grace=0.05,
                                limits=Limits(0.5, sample)).run(plan_batches(moves(40, 999), 5))
    assert outcome.reason is reason
    assert len(server.calls) == calls


async def test_threshold_needs_more_than_the_rate_to_fail() -> None:
    # good and bad batches alternate: failures never pass 50% of the settled rows
    faults = {999: RowError(40050, "invalid group id", "x")}
    server, results = FakeServer(group_faults=faults), Results()
    batches = [b for pair in zip(plan_batches(moves(20, 101, first_row=100), 5),
                                 plan_batches(moves(20, 999), 5), strict=True)
               for b in pair]
    outcome = await make_runner(server, results, concurrency=1, grace=0.05,
                                limits=Limits(0.5, 10)).run(batches)
    assert outcome.reason is StopReason.DONE
    assert (len(results.failed), len(results.done_rows)) == (20, 20)


async def test_sigint_mid_run_lets_the_call_in_flight_finish_and_sends_nothing_more() -> None:
    runner: Runner[Any]

    async def interrupt() -> None:
        runner.stop(StopReason.SIGINT)

    server, results = FakeServer(hooks={3: interrupt}), Results()
    batches = plan_batches(moves(50), 5)
    runner = make_runner(server, results, concurrency=1, grace=0.05)
    outcome = await runner.run(batches)
    assert outcome.reason is StopReason.SIGINT
    assert outcome.error is None
    assert server.calls == batches[:3]
    assert [b for b, _ in results.done] == batches[:3]  # the call in flight was reported
    assert results.failed == []


async def test_first_stop_reason_wins() -> None:
    runner: Runner[Any]

    async def interrupt() -> None:
        runner.stop(StopReason.SIGTERM)
        runner.stop(StopReason.SIGINT)

    quota = DailyQuotaError(45009, "reach max api daily quota limit", "x")
    server = FakeServer(hooks={1: interrupt}, faults={1: quota})
    runner = make_runner(server, Results(), concurrency=1, grace=0.05)
    outcome = await runner.run(plan_batches(moves(10), 5))
    assert outcome.reason is StopReason.SIGTERM
    assert outcome.error is None


async def test_stop_during_backoff_cuts_the_wait_and_leaves_the_batch_pending() -> None:
    runner: Runner[Any]

    async def interrupt_then_wait_forever() -> None:
        runner.stop(StopReason.SIGTERM)
        await asyncio.Event().wait()

    sleeps = Sleeps(then=interrupt_then_wait_forever)
    server, results = FakeServer(faults={1: transient()}), Results()
    runner = make_runner(server, results, sleeps=sleeps, concurrency=1, grace=0.05)
    outcome = await asyncio.wait_for(runner.run(plan_batches(moves(10), 5)), timeout=5)
    assert outcome.reason is StopReason.SIGTERM
    assert len(server.calls) == 1
    assert len(sleeps.delays) == 1
    assert results.done == []
    assert results.failed == []  # not "gave up": the batch stays pending


async def test_stop_before_run_sends_nothing() -> None:
    server, results = FakeServer(), Results()
    runner = make_runner(server, results, grace=0.05)
    runner.stop(StopReason.SIGINT)
    outcome = await runner.run(plan_batches(moves(10), 5))
    assert (outcome.reason, outcome.calls_made, server.calls) == (StopReason.SIGINT, 0, [])
    assert results.done == results.failed == []


async def test_graceful_stop_returns_once_nothing_is_in_flight() -> None:
    quota = DailyQuotaError(45009, "reach max api daily quota limit", "x")
    server = FakeServer(faults={1: quota})
    runner = make_runner(server, Results(), concurrency=2, grace=1.0)
    started = time.monotonic()
    outcome = await runner.run(plan_batches(moves(20), 5))
    assert outcome.reason is StopReason.DAILY_QUOTA
    assert time.monotonic() - started < 0.5


async def test_callback_error_propagates_instead_of_hanging() -> None:
    def on_done(batch: Batch, result: object, attempts: int) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    runner: Runner[Any] = Runner(send=FakeServer(), on_done=on_done,
                                 on_failed=lambda failures: None, concurrency=1,
                                 policy=RetryPolicy(sleep=Sleeps()))
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        await asyncio.wait_for(runner.run(plan_batches(moves(10), 5)), timeout=1.0)


async def test_a_batch_submitted_first_goes_before_every_batch_queued() -> None:
    """The snapshot-and-move flow submits moves `first`: what was read is moved at once,
    before more reads (and a bisected half goes first too)."""
    sent: list[str] = []

    def batch(name: str) -> Batch:
        return Batch(1, (len(sent),), (name,), "read" if name.startswith("r") else "move")

    async def send(b: Batch) -> str:
        sent.append(b.openids[0])
        return "ok"

    runner: Runner[str] = Runner(send=send, on_done=lambda b, _, __: None,
                                 on_failed=lambda _: None, concurrency=1)

    def done(b: Batch, result: str, attempts: int) -> None:
        if b.openids[0] == "r1":
            runner.submit(batch("m1"), first=True)
            runner.submit(batch("m2"), first=True)
            assert runner.queued_first == 2

    runner.on_done = done
    outcome = await runner.run([batch(f"r{i}") for i in range(1, 5)])
    assert outcome.reason is StopReason.DONE
    assert sent == ["r1", "m1", "m2", "r2", "r3", "r4"]
    assert runner.queued_first == 0



async def test_the_first_lane_leaves_workers_to_the_reads() -> None:
    """Moves waiting for their slots (here: for `gate`) never hold every worker: a third
    stays free, so the reads that feed the next moves go on meanwhile."""
    gate = asyncio.Event()
    sent: list[str] = []
    moving = 0
    most_moving = 0

    def batch(name: str) -> Batch:
        return Batch(1, (len(sent),), (name,), "read" if name.startswith("r") else "move")

    async def send(b: Batch) -> str:
        nonlocal moving, most_moving
        sent.append(b.openids[0])
        if b.op == "move":
            moving += 1
            most_moving = max(most_moving, moving)
            await gate.wait()
            moving -= 1
        elif b.openids[0] == "r4":  # the reads went on while the moves were held
            gate.set()
        return "ok"

    runner: Runner[str] = Runner(send=send, on_done=lambda b, _, __: None,
                                 on_failed=lambda _: None, concurrency=3)

    def done(b: Batch, result: str, attempts: int) -> None:
        if b.openids[0] == "r1":
            for i in range(6):
                runner.submit(batch(f"m{i}"), first=True)

    runner.on_done = done
    outcome = await asyncio.wait_for(
        runner.run([batch(f"r{i}") for i in range(1, 6)]), timeout=5.0)
    assert outcome.reason is StopReason.DONE
    assert most_moving == 2  # 3 workers: the moves on two at most
    assert sent.index("r4") < sent.index("m5")
    assert sorted(sent) == sorted([f"r{i}" for i in range(1, 6)] + [f"m{i}" for i in range(6)])

# --- calls never answered, answers out of contract ------------------------------------------
def unanswered() -> OutcomeUnknownError:
    return OutcomeUnknownError(None, "no answer within 1s", "groups/members/batchupdate")


def out_of_contract() -> ProtocolError:
    return ProtocolError(None, "`errcode` is missing", "groups/members/batchupdate", "errcode")


async def test_a_move_never_answered_goes_to_on_unknown_not_on_failed() -> None:
    server, results = FakeServer(faults={1: unanswered(), 2: transient()}), Results()
    unknown: list[RowFailure] = []
    first, second = plan_batches(moves(3) + moves(2, 102, first_row=10))
    outcome = await make_runner(server, results, attempts=2, concurrency=1,
                                on_unknown=unknown.extend).run([first, second])
    assert outcome.reason is StopReason.DONE
    assert results.failed == []  # one attempt was never answered: it may have been applied
    assert unknown == [RowFailure(r, -1, "sent 2 times, never answered as WeChat documents "
                                         "(system error)", 2) for r in (2, 3, 4)]
    assert results.done == [(second, 1)]


async def test_a_read_never_answered_fails_its_rows_as_before() -> None:
    server, results = FakeServer(faults={1: unanswered(), 2: unanswered()}), Results()
    unknown: list[RowFailure] = []
    read = Batch(0, (2, 3), ("o2", "o3"), "read")
    await make_runner(server, results, attempts=2, concurrency=1,
                      on_unknown=unknown.extend).run([read])
    assert unknown == []
    assert [f.row for f in results.failed] == [2, 3]


async def test_refusals_only_fail_rows_even_with_on_unknown() -> None:
    server, results = FakeServer(faults={1: transient(), 2: transient()}), Results()
    unknown: list[RowFailure] = []
    await make_runner(server, results, attempts=2, concurrency=1,
                      on_unknown=unknown.extend).run(plan_batches(moves(2)))
    assert unknown == []
    assert [f.errmsg for f in results.failed] == ["gave up after 2 attempts: system error"] * 2


async def test_an_answer_out_of_contract_is_retried_then_stops_the_run() -> None:
    faults = {1: out_of_contract(), 2: out_of_contract()}
    server, results = FakeServer(faults=faults), Results()
    unknown: list[RowFailure] = []
    first, second = plan_batches(moves(3) + moves(2, 102, first_row=10))
    outcome = await make_runner(server, results, attempts=2, concurrency=1,
                                on_unknown=unknown.extend).run([first, second])
    assert outcome.reason is StopReason.FATAL
    assert isinstance(outcome.error, ProtocolError)
    assert outcome.error.field == "errcode"
    assert [f.row for f in unknown] == [2, 3, 4]  # the move may have been applied
    assert results.failed == []
    assert results.done == []
    assert len(server.calls) == 2  # the second batch is never sent
