"""Live progress of a run, read from its ledger, shared by however many pages watch it.

One `Watch` per run directory keeps a read-only connection open and a short history of counts
(for users/s and the ETA). A poll costs one `PRAGMA data_version` when the run committed
nothing, else one pass over the rows (0.1-0.2 s per 1,000,000 rows on the 2-core bench
machine), in a thread, so the console's event loop keeps answering. Counting must not slow the
run it watches: the totals are re-counted at most once a second and at most `TOTALS_SHARE` of
the time, the per-target counts (a sort, 5x dearer) at most `TARGET_SHARE` of it. Pages get the
latest figures every second either way, with their age (`age_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from batchmove import api
from batchmove.errors import RunStateError
from batchmove.results import Counts, RunWatch

RATE_WINDOW_S = 10.0
TOTALS_SHARE = 0.08  # a full count may take this share of the time at most...
TARGET_SHARE = 0.05  # ...and the per-target counts this share
FULL_EVERY_S = 10.0  # while moving, every status is counted this often (else two)


@dataclass
class Watch:
    run_dir: Path
    reader: RunWatch | None = None
    version: int | None = None
    counts: Counts | None = None
    full: Counts | None = None  # the last count of every status
    full_at: float = -1e9
    counted_at: float = -1e9
    count_cost: float = 0.0
    targets: dict[str, Counts] = field(default_factory=dict)
    targets_at: float = -1e9
    targets_cost: float = 0.0
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class Watcher:
    """Shared progress polls: `await watcher.poll(run_dir, live=...)` -> the latest figures."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.watches: dict[Path, Watch] = {}

    async def poll(self, run_dir: Path, *, live: bool, phase_hint: str = "") -> dict[str, Any]:
        """The latest figures at once; a fresh count starts in the background when due (so a
        slow count on a loaded machine delays no page). A run that ended is counted afresh."""
        watch = self.watches.setdefault(run_dir, Watch(run_dir))
        if not live:
            watch.counted_at = watch.targets_at = watch.full_at = -1e9
            async with watch.lock:
                await asyncio.to_thread(self._refresh, watch)
                figures = self._figures(watch, live, phase_hint)
                watch.close()
            self.watches.pop(run_dir, None)
            return figures
        if watch.counts is None:
            await self._refresh_in_thread(watch)
        elif watch.task is None or watch.task.done():
            watch.task = asyncio.create_task(self._refresh_in_thread(watch))
        return self._figures(watch, live, phase_hint)

    async def _refresh_in_thread(self, watch: Watch) -> None:
        async with watch.lock:
            await asyncio.to_thread(self._refresh, watch)

    def close(self) -> None:
        for watch in self.watches.values():
            watch.close()
        self.watches.clear()

    def _due(self, last: float, cost: float, share: float) -> bool:
        return self.clock() - last >= max(self.interval, cost / share)

    def _refresh(self, watch: Watch) -> None:
        reader = self._reader(watch)
        if reader is None:
            return
        try:
            version = reader.version()
            if watch.counts is None or (version != watch.version and self._due(
                    watch.counted_at, watch.count_cost, TOTALS_SHARE)):
                started = time.perf_counter()
                watch.version, watch.counts = version, self._count(watch, reader)
                watch.count_cost, watch.counted_at = time.perf_counter() - started, self.clock()
                c = watch.counts
                watch.samples.append((self.clock(), c["moved"] + c["failed"] + c["already"]))
            if self._due(watch.targets_at, watch.targets_cost, TARGET_SHARE):
                started = time.perf_counter()
                watch.targets = reader.targets()
                watch.targets_cost, watch.targets_at = time.perf_counter() - started, self.clock()
        except Exception:  # the run replaced its ledger (a restart): open it again next time
            watch.close()
            watch.version = None

    def _count(self, watch: Watch, reader: RunWatch) -> Counts:
        """Every status; once users are moving only pending and failed change, so those two
        are counted (half the cost) and a full count corrects the rest every FULL_EVERY_S."""
        full = watch.full
        if full is None or not full["moved"] or self.clock() - watch.full_at >= FULL_EVERY_S:
            watch.full, watch.full_at = reader.counts(), self.clock()
            return Counts(**watch.full)
        pending, failed, rows, unknown = reader.answered()
        fixed = full["already"] + full["invalid"] + full["duplicate"]
        return Counts(**(full | {"pending": pending, "failed": failed, "unknown": unknown,
                                 "moved": rows - pending - failed - unknown - fixed}))

    @staticmethod
    def _reader(watch: Watch) -> RunWatch | None:
        if watch.reader is None:
            with contextlib.suppress(RunStateError):
                watch.reader = api.watch_run(watch.run_dir)
        return watch.reader

    def _figures(self, watch: Watch, live: bool, hint: str) -> dict[str, Any]:
        counts = cast(dict[str, int], dict(watch.counts or {}))
        pending = counts.get("pending", 0)
        rate = _rate(watch.samples)
        return {
            "phase": _phase(counts, live, hint),
            "counts": counts,
            "moved": counts.get("moved", 0),
            "failed": counts.get("failed", 0),
            "pending": pending,
            "total": sum(counts.values()),
            "users_per_s": round(rate, 1),
            "eta_s": round(pending / rate) if rate > 0 and live else None,
            "targets": [_target(name, c) for name, c in sorted(watch.targets.items())],
            "age_s": round(max(0.0, self.clock() - watch.counted_at), 1)
            if watch.counts is not None else None,
        }


def _target(name: str, counts: Counts) -> dict[str, Any]:
    """One target's columns: moved + already + failed + pending = its rows, and each column
    summed over the targets is the run's own figure."""
    return {"target": name, "moved": counts["moved"], "already": counts["already"],
            "failed": counts["failed"], "pending": counts["pending"],
            "total": counts["moved"] + counts["already"] + counts["failed"] + counts["pending"]}


def _rate(samples: deque[tuple[float, int]]) -> float:
    """Rows answered per second over the last RATE_WINDOW_S seconds."""
    if len(samples) < 2:
        return 0.0
    last_t, last_n = samples[-1]
    first_t, first_n = next(((t, n) for t, n in samples if last_t - t <= RATE_WINDOW_S),
                            samples[0])
    return (last_n - first_n) / (last_t - first_t) if last_t > first_t else 0.0


def _phase(counts: dict[str, int], live: bool, hint: str) -> str:
    if hint:
        return hint
    if not sum(counts.values()):
        return "loading" if live else "waiting"
    if not live:
        return "stopped" if counts["pending"] or counts.get("unknown") else "done"
    if not counts["pending"]:
        return "reports"
    answered = counts["moved"] + counts["failed"] + counts["already"]
    return "moving" if answered else "preparing"
