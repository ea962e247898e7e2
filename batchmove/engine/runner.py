"""The worker pool: sends batches through the client, retries what is worth retrying, and
reports every batch's fate through callbacks. It knows nothing of files or ledgers.

What each failure does (the classes come from the errcode table and the client's boundary):
- TransientError: tenacity retries with exponential backoff and full jitter, capped attempts.
- OutcomeUnknownError (sent, never answered): retried likewise. A move with an attempt never
  answered may have been applied, however its later attempts ended (a quota, a stop, a
  refusal): its rows go to `on_unknown` (read back later), never to `on_failed` or pending.
- ProtocolError (an answer out of contract): retried likewise, then the run stops (FATAL):
  not a row's fault, and failing row after row on it would only burn the quota.
- MinuteQuotaError (45011): wait for the next minute (under `rate = "auto"`, in the client's
  gate), then retry (a separate, larger cap: `MANAGED_MINUTE_ATTEMPTS`).
- RowError 45159 on (un)tagging: a new tag; tried again after 0.5, 1 and 2 s (a verdict after).
- RowError 40003/46004/43004 on a batch of several users: split it in halves (bisection) so the
  good openids still move and the bad ones are isolated; on a single user: that row fails.
- Other RowError and unknown errcodes: every row of the batch fails with that errcode.
- DailyQuotaError: stop dispatching; in-flight calls finish; unsent rows stay pending.
- FatalApiError: stop at once; in-flight calls are abandoned (they stay pending).
Rate limiting is the client's: every HTTP attempt passes its limiter, retries included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from batchmove.engine.lanes import Lanes
from batchmove.engine.planner import split
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
from batchmove.results import StopReason

T = TypeVar("T")

#: errcodes that blame one openid of a batch: bisect to find it
BISECT_ERRCODES = frozenset({40003, 46004, 43004, 45059})
#: 45159 "invalid tag id" right after tags/create: the new id is not visible everywhere yet;
#: a (un)tagging call is tried again after each of these pauses before it becomes a verdict
TAG_VISIBLE_DELAYS = (0.5, 1.0, 2.0)
INVALID_TAG_ID = 45159
#: 45011 attempts of one call when the rate gate holds the calls until the window turns (each
#: attempt is a probe of the window, never a lost row); 45011 without a gate: the policy's cap
MANAGED_MINUTE_ATTEMPTS = 200


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one call. Sleep and clock are injected so tests count, not wait."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    minute_quota_attempts: int = 10
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.time

    def seconds_to_next_minute(self) -> float:
        return 60.0 - (self.clock() % 60.0) + 0.05


@dataclass
class Limits:
    """When to give up on the whole run because too many rows fail."""

    max_failure_rate: float = 0.5
    failure_sample: int = 200
    settled: int = 0
    failed: int = 0

    def add(self, settled: int, failed: int) -> bool:
        """Count results; True when the run should stop."""
        self.settled += settled
        self.failed += failed
        return (self.settled >= self.failure_sample
                and self.failed > self.max_failure_rate * self.settled)


@dataclass
class RunOutcome:
    reason: StopReason
    error: ApiError | None = None
    calls_made: int = 0


class _Abandoned(Exception):
    """The run is stopping: leave this batch pending (unless an attempt went unanswered)."""


@dataclass
class Runner(Generic[T]):
    """Run `send` over batches with `concurrency` workers; report through the callbacks."""

    send: Callable[[Batch], Awaitable[T]]
    on_done: Callable[[Batch, T, int], None]
    on_failed: Callable[[list[RowFailure]], None]
    #: rows of a batch (not a read) whose call may have been applied but was never answered;
    #: None: they go to `on_failed`
    on_unknown: Callable[[list[RowFailure]], None] | None = None
    concurrency: int = 8
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    limits: Limits | None = None
    bisect: bool = True
    grace: float = 5.0  # seconds in-flight calls get to finish once a stop is asked

    def __post_init__(self) -> None:
        # the first lane leaves a third of the workers to the rest (see `lanes`)
        self._queue = Lanes(first_cap=max(1, self.concurrency - self.concurrency // 3))
        self._crash: BaseException | None = None
        self._stop = asyncio.Event()
        self._taken = asyncio.Event()  # a worker took a batch: room for the feeder
        self._reason = StopReason.DONE
        self._error: ApiError | None = None
        self._abort_now = False
        self.calls_made = 0

    # --- control ----------------------------------------------------------------------------
    def stop(self, reason: StopReason, error: ApiError | None = None, *, now: bool = False) -> None:
        """Stop dispatching; the first reason given wins."""
        if not self._stop.is_set():
            self._reason, self._error = reason, error
            self._stop.set()
        self._abort_now = self._abort_now or now

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def queued(self) -> int:
        """Batches waiting for a worker."""
        return self._queue.qsize()

    @property
    def queued_first(self) -> int:
        """Batches waiting in the first lane (see `submit`)."""
        return self._queue.first

    def submit(self, batch: Batch, *, first: bool = False) -> None:
        """One more batch, from a callback while the run is on (e.g. moves once their users'
        snapshot is committed); submitted before the callback returns, it is waited for.
        `first`: before every batch queued without it (the moves that reads feed go before
        more reads, so what was read is moved at once and no read waits for nothing)."""
        self._queue.put(batch, first=first)

    async def run(self, batches: Iterable[Batch], lookahead: int = 0) -> RunOutcome:
        """Send every batch; with `lookahead`, `batches` is drawn lazily, keeping at most
        that many queued (a 10M-row run never holds its 200,000 batches at once)."""
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self.concurrency))]
        joined = asyncio.create_task(self._feed_then_join(iter(batches), lookahead))
        stopped = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({joined, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if self.stopping:
                self._queue.drain()
                for _ in workers:  # idle workers leave at once; busy ones after their call
                    self._queue.put(None)
                if not self._abort_now:
                    await asyncio.wait(workers, timeout=self.grace)
        finally:
            for task in (*workers, joined, stopped):
                task.cancel()
            await asyncio.gather(*workers, joined, stopped, return_exceptions=True)
        if self._crash is not None:
            raise self._crash
        return RunOutcome(self._reason, self._error, self.calls_made)

    async def _feed_then_join(self, batches: Iterator[Batch], lookahead: int) -> None:
        for batch in batches:
            self._queue.put(batch)
            while lookahead and self._queue.qsize() >= lookahead and not self.stopping:
                self._taken.clear()
                await self._taken.wait()
            if self.stopping:
                return
        await self._queue.join()

    # --- workers ----------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            batch, first = await self._queue.get()
            self._taken.set()
            try:
                if batch is None:
                    return
                if not self.stopping:
                    await self._process(batch)
            except Exception as exc:  # e.g. the ledger cannot write: stop, and tell run()
                self._crash = self._crash or exc
                self.stop(StopReason.FATAL, now=True)
                return
            finally:
                self._queue.task_done(first)

    async def _process(self, batch: Batch) -> None:
        attempts = 0
        unanswered: list[OutcomeUnknownError] = []  # sent, never answered: may have applied

        async def attempt() -> T:
            nonlocal attempts
            if self.stopping:
                raise _Abandoned
            attempts += 1
            self.calls_made += 1
            try:
                return await self._send_visible(batch)
            except OutcomeUnknownError as exc:
                unanswered.append(exc)
                raise

        try:
            result: T = await self._with_retries(attempt)
        except (_Abandoned, ApiError) as exc:
            if unanswered and self.on_unknown is not None and batch.op != "read":
                self._unknown(batch, exc if isinstance(exc, ApiError) else unanswered[-1], attempts)
                self._stop_for(exc)
            elif not isinstance(exc, _Abandoned):
                self._settle_error(batch, exc, attempts)
            return
        self.on_done(batch, result, attempts)
        if batch.op != "read":  # a snapshot read settles nothing: its users' moves will
            self._count(len(batch), 0)

    def _stop_for(self, exc: Exception) -> bool:  # True when `exc` stops the run
        if isinstance(exc, DailyQuotaError):
            self.stop(StopReason.DAILY_QUOTA, exc)
        elif isinstance(exc, ProtocolError | FatalApiError | TokenError):
            self.stop(StopReason.FATAL, exc, now=True)
        return isinstance(exc, DailyQuotaError | ProtocolError | FatalApiError | TokenError)

    def _settle_error(self, batch: Batch, exc: ApiError, attempts: int) -> None:
        """A batch whose every attempt was answered, and answered with an error."""
        if self._stop_for(exc):
            return
        if isinstance(exc, TransientError | MinuteQuotaError):
            if not self.stopping:
                self._fail(batch, exc, attempts, f"gave up after {attempts} attempts: ")
        elif (isinstance(exc, RowError) and self.bisect and exc.errcode in BISECT_ERRCODES
              and len(batch) > 1):
            for half in split(batch):
                self._queue.put(half, first=True)
        else:  # a RowError, or an errcode missing from the table: report it, go on
            self._fail(batch, exc, attempts)

    async def _send_visible(self, batch: Batch) -> T:
        """`send`, with a short, bounded wait for a tag WeChat does not see yet (45159)."""
        for delay in (*TAG_VISIBLE_DELAYS, None):
            try:
                return await self.send(batch)
            except RowError as exc:
                if (exc.errcode != INVALID_TAG_ID or delay is None or self.stopping
                        or batch.op not in ("tag", "untag")):
                    raise
                self.calls_made += 1
                await self.policy.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fail(self, batch: Batch, exc: ApiError, attempts: int, prefix: str = "") -> None:
        self.on_failed([RowFailure(row, exc.errcode, prefix + exc.errmsg, attempts)
                        for row in batch.rows])
        self._count(len(batch), len(batch))

    def _unknown(self, batch: Batch, exc: ApiError, attempts: int) -> None:
        """Rows whose move may have been applied: not failed (nor counted) until read back."""
        assert self.on_unknown is not None
        why = f"sent {attempts} times, never answered as WeChat documents ({exc.errmsg})"
        self.on_unknown([RowFailure(row, exc.errcode, why, attempts) for row in batch.rows])
        self._count(len(batch), 0)

    def _count(self, settled: int, failed: int) -> None:
        if self.limits is not None and self.limits.add(settled, failed):
            self.stop(StopReason.THRESHOLD)

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """The first attempt runs outside tenacity, which costs ~40 µs a call to set up (0.8 s
        of a 1M-user run) and which most calls never need. A retryable failure is replayed
        to tenacity as its attempt 1, so the waits and the attempt caps stay tenacity's."""
        try:
            return await attempt()
        except (TransientError, MinuteQuotaError) as exc:
            first: BaseException | None = exc

        async def replay_then_attempt() -> T:
            nonlocal first
            if first is not None:
                failure, first = first, None
                raise failure
            return await attempt()

        result: T = await retrying(self.policy, lambda: self.stopping, self._stop)(
            replay_then_attempt)
        return result


def retrying(policy: RetryPolicy, stopping: Callable[[], bool] = lambda: False,
             stop_event: asyncio.Event | None = None) -> AsyncRetrying:
    """tenacity, configured once: transient failures back off with full jitter, 45011 waits
    for the next minute; a stop request cuts waits short and ends the retries."""
    backoff = wait_random_exponential(multiplier=policy.base_delay, max=policy.max_delay)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, MinuteQuotaError):  # the gate holds the retry until the window turns
            return 0.0 if exc.managed else policy.seconds_to_next_minute()
        return float(backoff(state))

    def give_up(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        cap = policy.attempts
        if isinstance(exc, MinuteQuotaError):
            cap = MANAGED_MINUTE_ATTEMPTS if exc.managed else policy.minute_quota_attempts
        return stopping() or state.attempt_number >= cap

    async def sleep(seconds: float) -> None:
        if stop_event is None:
            await policy.sleep(seconds)
            return
        # a stop request cuts the wait short; the next attempt then abandons the batch
        sleeper = asyncio.ensure_future(policy.sleep(seconds))
        stopper = asyncio.ensure_future(stop_event.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(sleeper, stopper, return_exceptions=True)

    return AsyncRetrying(
        retry=retry_if_exception_type((TransientError, MinuteQuotaError)),
        wait=wait,
        stop=give_up,
        sleep=sleep,
        reraise=True,
    )


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """One call outside the worker pool (e.g. `groups/get`), under the same retry policy."""
    result: T = await retrying(policy)(call)
    return result
