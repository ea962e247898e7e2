"""The shared rate budget: one schedule of call slots per account and endpoint, in SQLite.

Every run on an account takes the slots of each call from its endpoint's schedule, whatever
its rate setting, so the runs together never exceed the account's rate on an endpoint (WeChat
limits each endpoint apart). The schedule's rate is the account's: `rate = "auto"` runs move it
(`aimd`, from quota/get's rate_limit or the safe start). A run with a fixed `rate = N` takes at
most N of it: it paces all its calls in the scope "*" first, at N, as it always has (fixed runs
together share the lowest N: the account's rate their users set); while an auto run is on the
account it then also takes each call's slot of the endpoint's schedule, one at a time (so no
slot it would not use in time is lost to the others). Alone with other fixed runs it needs no
endpoint slots: "*" is their only schedule.

The registry keeps, per scope, the next free slot (`tat`, GCRA's theoretical arrival time) and
the rate; a process takes a few slots at a time (`reserve`: ~50 ms worth, one short
transaction), spaced 1/rate apart after every slot handed out before them, whichever process
took those. So N processes together never exceed the rate, and N busy processes, each taking
its next slots only when it has used the last ones, interleave: each gets a fair 1/N share. A
process that dies loses at most the slots it had taken (~50 ms); its lease (a row with a pid
and an expiry, renewed on each reservation) stops counting it among the sharers at once when
its pid is gone, or after `LEASE_S` in any case.

Slots may be used up to one slot late (a worker woken late); later they are dropped. So a
window of one second holds at most rate + 1 slots' calls: a fixed `rate = N` above 8 spaces its
slots at N - 2 per second (one slot for lateness, one for the network's jitter: what the old
in-process bucket of 2 did), N or less at N.

Each reservation also hands in the calls the process sent since its last one, per endpoint:
the account's day (`spent`) and the process's own (`run_spent`: what its registered run has
taken of what it planned, see `claims.Claims.to_spend`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass, fields, replace
from datetime import UTC, datetime, timedelta

from batchmove.registry.aimd import BucketState, Report, apply
from batchmove.registry.store import Registry, pid_alive

LEASE_S = 5.0
SLOT_S = 0.05  # seconds of slots a process takes at once
MAX_AHEAD_S = 1.0  # a process never takes slots further ahead than this
ANY = "*"
_COLUMNS = tuple(f.name for f in fields(BucketState))
_CHINA = timedelta(hours=8)  # WeChat's days run 0-24 h Beijing time


def wechat_day(wall: float) -> str:
    return (datetime.fromtimestamp(wall, UTC) + _CHINA).date().isoformat()


def fixed_spacing(rate: float) -> float:
    """Calls per second a fixed `rate` sustains (see the module docstring)."""
    return rate - 2.0 if rate > 8 else rate


@dataclass(frozen=True, slots=True)
class Grant:
    """Slots taken (monotonic times), or how long to wait before asking again."""

    slots: tuple[float, ...]
    wait: float
    rate: float
    sharing: int  # live leases on the account, this one included
    auto_live: bool = False  # a `rate = "auto"` run holds a lease on the account


class Budget:
    """The account's budget as one process sees it: its lease and its reservations."""

    def __init__(self, registry: Registry, account: str, *, fixed_rate: float | None = None,
                 max_rate: float = 200.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, pid: int | None = None) -> None:
        self.registry, self.account = registry, account
        self.fixed_rate, self.max_rate = fixed_rate, max_rate
        self.clock, self.wall = clock, wall
        self.pid = os.getpid() if pid is None else pid
        self.lease: int | None = None

    def join(self) -> None:
        """Take a lease on the account (dead processes' leases are dropped first)."""
        now = self.clock()
        with self.registry.transaction() as conn:
            for lease, pid, expires in conn.execute(
                    "SELECT id, pid, expires_at FROM leases WHERE account = ?",
                    (self.account,)).fetchall():
                if expires < now - LEASE_S or not pid_alive(pid):
                    conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
            for (pid,) in conn.execute("SELECT DISTINCT pid FROM run_spent WHERE account = ?",
                                       (self.account,)).fetchall():
                if not pid_alive(pid):  # a process gone: its calls count for no run now
                    conn.execute("DELETE FROM run_spent WHERE account = ? AND pid = ?",
                                 (self.account, pid))
            self.lease = conn.execute(
                "INSERT INTO leases (account, pid, fixed_rate, expires_at) VALUES (?, ?, ?, ?)",
                (self.account, self.pid, self.fixed_rate, now + LEASE_S)).lastrowid

    def leave(self) -> None:
        if self.lease is not None:
            with self.registry.transaction() as conn:
                conn.execute("DELETE FROM leases WHERE id = ?", (self.lease,))
            self.lease = None

    def seed(self, scope: str, rate: float, ceiling: float | None, window: float | None,
             *, alone: bool, shared: float | None = None) -> None:
        """Set a scope's start (reported rate_limit or the safe start) and its ceilings:
        `ceiling` for a run alone on the account, `shared` while others share it (each
        reservation looks: the moment a second run takes its lease, the slots slow down). A
        run alone starts afresh; one that joins others keeps their rate, learns the ceiling."""
        with self.registry.transaction():
            state = self._state(scope, rate)
            if alone:
                state = BucketState(rate=rate, tat=state.tat, ceiling=ceiling, window=window,
                                    found=state.found, shared=shared)
            elif ceiling is not None:
                state = replace(state, ceiling=ceiling, window=window, shared=shared,
                                rate=min(state.rate, ceiling))
            self._write(scope, state)

    def reserve(self, scope: str, report: Report, start_rate: float, want: int = 0,
                spent: Mapping[str, int] | None = None) -> Grant:
        """Report what was seen (and the calls spent per endpoint), then take up to `want`
        slots (0: report only)."""
        now, wall = self.clock(), self.wall()
        with self.registry.transaction() as conn:
            state = self._state(scope, start_rate)
            if self.fixed_rate is None:
                state = apply(state, report, now, self.max_rate, 60.05 - wall % 60.0)
            sharing, fixed, auto_live = self._sharers(now)
            rate = fixed_spacing(fixed) if scope == ANY and fixed is not None else state.rate
            if sharing > 1 and state.shared is not None:  # others on the account: each
                rate = min(rate, state.shared)  # second within its rate, not the window
            grant = _take(state, now, rate, want)
            self._write(scope, state if not grant.slots else replace(
                state, tat=grant.slots[-1] + 1.0 / rate))
            if self.lease is not None:
                conn.execute("UPDATE leases SET expires_at = ? WHERE id = ?",
                             (now + LEASE_S, self.lease))
            if spent:
                self._hand_in(spent, wechat_day(wall))
        return Grant(grant.slots, grant.wait, rate, sharing, auto_live)

    def _hand_in(self, spent: Mapping[str, int], day: str) -> None:
        calls = [(e, n) for e, n in spent.items() if n]
        self.registry.conn.executemany(
            "INSERT INTO spent (account, day, endpoint, calls) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls",
            [(self.account, day, e, n) for e, n in calls])
        self.registry.conn.executemany(
            "INSERT INTO run_spent (account, pid, endpoint, calls) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls",
            [(self.account, self.pid, e, n) for e, n in calls])

    def _sharers(self, now: float) -> tuple[int, float | None, bool]:
        """Live leases on the account; the lowest fixed rate among them (this one's
        included); whether an auto run holds one."""
        rows = self.registry.conn.execute(
            "SELECT pid, fixed_rate FROM leases WHERE account = ? AND expires_at > ?",
            (self.account, now)).fetchall()
        live = [(pid, fixed) for pid, fixed in rows if pid == self.pid or pid_alive(pid)]
        rates = [f for _, f in live if f is not None]
        if self.fixed_rate is not None:
            rates.append(self.fixed_rate)
        auto_live = self.fixed_rate is None or any(f is None for _, f in live)
        return max(len(live), 1), min(rates, default=None), auto_live

    def _state(self, scope: str, rate: float) -> BucketState:
        row = self.registry.conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM buckets WHERE account = ? AND scope = ?",
            (self.account, scope)).fetchone()
        if row is None:
            return BucketState(rate=rate)
        state = BucketState(*row)
        if state.tat > self.clock() + 3600:  # a monotonic time from before a reboot
            state = replace(state, tat=0.0, paused_until=0.0)
        return state

    def _write(self, scope: str, state: BucketState) -> None:
        self.registry.conn.execute(
            f"INSERT OR REPLACE INTO buckets (account, scope, {', '.join(_COLUMNS)}) "
            f"VALUES (?, ?, {', '.join('?' for _ in _COLUMNS)})",
            (self.account, scope, *astuple(state)))


def _take(state: BucketState, now: float, rate: float, want: int) -> Grant:
    if state.paused_until > now:
        return Grant((), state.paused_until - now, rate, 0)
    if want <= 0:
        return Grant((), 0.0, rate, 0)
    spacing = 1.0 / max(rate, 1e-6)
    start = max(state.tat, now)
    if start - now > MAX_AHEAD_S:
        return Grant((), start - now - MAX_AHEAD_S, rate, 0)
    count = max(1, min(want, int(rate * SLOT_S)))
    return Grant(tuple(start + i * spacing for i in range(count)), 0.0, rate, 0)


def spent_today(registry: Registry, account: str, wall: float | None = None) -> dict[str, int]:
    """Calls this machine's runs made today (WeChat's day) on the account, per scope."""
    day = wechat_day(time.time() if wall is None else wall)
    return dict(registry.conn.execute(
        "SELECT endpoint, calls FROM spent WHERE account = ? AND day = ?", (account, day)))


def history(registry: Registry, account: str) -> dict[str, float]:
    """The last rate each endpoint ran clean at on this account (for the plan's ETA)."""
    return {scope: found for scope, found in registry.conn.execute(
        "SELECT scope, found FROM buckets WHERE account = ? AND found IS NOT NULL",
        (account,))}


def sharing(registry: Registry, account: str, clock: Callable[[], float] = time.monotonic
            ) -> int:
    """Runs holding a live lease on the account's rate now."""
    rows = registry.conn.execute("SELECT pid FROM leases WHERE account = ? AND expires_at > ?",
                                 (account, clock())).fetchall()
    return sum(1 for (pid,) in rows if pid_alive(pid))
