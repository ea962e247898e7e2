"""`rate = "auto"`: how an account's rate for one endpoint moves (pure: no I/O, no clock).

AIMD, as in Netflix's concurrency-limits, with TCP's slow start in front:

- start from `quota/get`'s `rate_limit` when WeChat reports one (see `start_rate`: a run
  alone on the account 1% under call_count / refresh_second and at least 2 calls a window
  under it; runs that share the account 2% and at least 2 calls/s under it, as a fixed
  `rate` above 8 is: slots may be used one slot late, so a second can hold rate + 2 calls),
  else from `SAFE_START`;
- slow start: +1 call/s per clean answer (the rate doubles every second) until the first sign
  of congestion, then additive increase: +`ADDITIVE` calls/s per second of clean answers;
- on 45011, -1 or latency that has doubled: halve, at most once per `COOLDOWN` and once per run
  of 45011s (no clean answer between them: a hidden window may stay closed for seconds, and
  cuts 1 s apart, each under a goodput that sinks while nothing gets through, took the rate to
  ~40/s and left it 10 s climbing back), and never below 90% of the goodput of the last
  `GOODPUT_S` seconds (a limit enforced in fixed windows fills its window whatever the rate,
  so its goodput *is* the limit: halving below it only loses time);
- never above `max_rate`, nor above the reported (or configured) ceiling.

A 45011 is also a pause: every sender of the endpoint holds until `paused_until`, first
`PROBE_START` seconds, doubling while the answers stay 45011, never longer than the window, nor
than `PROBE_MAX` where the window is unknown (a hidden window may turn any moment: a pause that
doubled to 4 s waited ~2 s past a 5 s window's turn on average, and 45011 costs one call a
probe); the call that got it is retried, never lost.

The state lives in the registry (`BucketState`), shared by every process of the account; each
process reports what it saw (`Report`) when it takes its next slots.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SAFE_START = 20.0  # calls/s: yesterday's default rate
MIN_RATE = 1.0
ADDITIVE = 5.0  # calls/s gained per second of clean answers
COOLDOWN = 1.0  # seconds: one cut per congestion episode
PROBE_START = 0.25  # seconds: the first pause after a 45011
PROBE_MAX = 1.0  # seconds: the longest pause while the window is unknown
GOODPUT_S = 5.0
CEILING_SHARE = 0.99  # of a reported rate_limit, a run alone on the account
SHARED_SHARE = 0.98  # of a reported rate_limit, runs that share the account


@dataclass(frozen=True, slots=True)
class BucketState:
    """One account's rate for one endpoint (scope), as the registry keeps it."""

    rate: float
    tat: float = 0.0  # the next free slot (monotonic seconds)
    paused_until: float = 0.0
    probe_delay: float = 0.0
    last_cut: float = 0.0
    ceiling: float | None = None  # calls/s never to exceed (reported rate_limit)
    window: float | None = None  # refresh_second, when reported
    found: float | None = None  # the last rate that ran clean (the account's history)
    slow_start: bool = True
    ok_since: float = 0.0
    ok_now: int = 0
    ok_before: int = 0
    shared: float | None = None  # the ceiling while other runs share the account


@dataclass(slots=True)
class Report:
    """What one process saw since it last took slots."""

    ok: int = 0  # clean answers
    throttled: bool = False  # 45011
    busy: bool = False  # -1
    slow: bool = False  # median latency doubled

    def congested(self) -> bool:
        return self.throttled or self.busy or self.slow


def start_rate(call_count: int | None, refresh_second: float | None, *, alone: bool = True
               ) -> tuple[float, float | None]:
    """The first rate and the ceiling: from a reported rate_limit, or the safe start.

    A run alone on the account paces by the window WeChat reports: 1% under it and at least
    2 calls a window under it (500 calls per 5 s: 99/s; a late slot and ~40 ms of jitter
    still fit in the window). Runs that share it keep every second within its rate (the
    margin of `SHARED_SHARE` and 2 calls/s, as a fixed `rate` above 8 has): their slots
    interleave across processes, each with its own lateness, so a window must absorb more;
    it is also the bound the issue sets two runs (no 1 s window over the account's rate).
    """
    if not (call_count and refresh_second):
        return SAFE_START, None
    limit = call_count / refresh_second
    if limit <= 8:
        ceiling = SHARED_SHARE * limit
    elif alone:
        ceiling = min(CEILING_SHARE * limit, (call_count - 2) / refresh_second)
    else:
        ceiling = min(SHARED_SHARE * limit, limit - 2)
    return ceiling, ceiling


def goodput(state: BucketState, now: float) -> float:
    """Clean answers per second over about the last `GOODPUT_S` seconds."""
    elapsed = max(now - state.ok_since, 0.0)
    weight = max(0.0, 1.0 - elapsed / GOODPUT_S)
    return (state.ok_before * weight + state.ok_now) / GOODPUT_S


def apply(state: BucketState, report: Report, now: float, max_rate: float,
          to_next_minute: float) -> BucketState:
    """The bucket after one process's report."""
    state = _count(state, report.ok, now)
    # 45011s with no clean answer since the last one: the same episode, already cut for (a
    # window may stay closed for seconds, and each cut would sink further with the goodput)
    same = report.throttled and not (report.busy or report.slow) and (
        state.probe_delay > 0 and not report.ok)
    if report.throttled:
        state = _pause(state, report, now, to_next_minute)
    elif report.ok:
        state = replace(state, probe_delay=0.0)
    if report.congested() and not same:
        state = _cut(state, now)
    elif report.ok:
        state = _grow(state, report.ok)
    cap = min(max_rate, state.ceiling) if state.ceiling else max_rate
    return replace(state, rate=max(MIN_RATE, min(state.rate, cap)))


def _count(state: BucketState, ok: int, now: float) -> BucketState:
    if now - state.ok_since >= GOODPUT_S:
        before = state.ok_now if now - state.ok_since < 2 * GOODPUT_S else 0
        state = replace(state, ok_since=now, ok_before=before, ok_now=0)
    return replace(state, ok_now=state.ok_now + ok)


def _pause(state: BucketState, report: Report, now: float, to_next_minute: float
           ) -> BucketState:
    if now < state.paused_until:  # already paused: calls that were in flight
        return state
    again = state.probe_delay > 0 and not report.ok
    delay = 2 * state.probe_delay if again else PROBE_START
    limit = state.window if state.window else min(to_next_minute, PROBE_MAX)
    delay = min(delay, max(limit, PROBE_START))
    return replace(state, paused_until=now + delay, probe_delay=delay, tat=max(state.tat, now))


def _cut(state: BucketState, now: float) -> BucketState:
    if now - state.last_cut < COOLDOWN:
        return state
    floor = 0.9 * goodput(state, now)
    rate = min(state.rate, max(state.rate / 2, floor, MIN_RATE))
    return replace(state, rate=rate, last_cut=now, slow_start=False)


def _grow(state: BucketState, ok: int) -> BucketState:
    if state.slow_start:
        rate = state.rate + ok
    else:
        rate = state.rate + ADDITIVE * ok / max(state.rate, MIN_RATE)
    return replace(state, rate=rate, found=state.rate)
