"""Live progress of a run, read from its ledger, shared by however many pages watch it.

One `Watch` per run directory keeps a read-only connection open and a short history of counts
(for users/s and the ETA). The headline and the per-target table come from one read, the
per-target counts (moved, already, failed and pending summed over the targets are the run's
own; invalid and duplicate rows are nobody's target, and fixed once the rows are loaded, so
they are counted again only when the loaded rows change): the page never shows a headline
the table does not add up to. A poll costs one `PRAGMA data_version` when the run committed
nothing, else that read (a sort by target: 0.6-1 s per 1,000,000 rows on the 2-core bench
machine, 0.8-1.4 s under a load average of 5), in a thread, so the console's event loop keeps
answering. Counting must not slow the run it watches: it is done at most once a second and
at most `COUNT_SHARE` of the time (1,000,000 rows: every 6-14 s; 100,000 rows: every second;
before, the headline was counted apart, cheaper, at most 8% of the time, and the table at
most 5%, so the two could disagree for seconds). Pages get the latest figures every second
either way, with their age (`age_s`).
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
from batchmove.models import RowStatus
from batchmove.results import Counts, RunWatch

RATE_WINDOW_S = 10.0
COUNT_SHARE = 0.10  # counting may take this share of the time at most


@dataclass
class Watch:
    run_dir: Path
    reader: RunWatch | None = None
    version: int | None = None
    counts: Counts | None = None
    targets: dict[str, Counts] = field(default_factory=dict)
    sent: int = -1  # rows sent to a target (changes only when rows are loaded)...
    unsent: tuple[int, int] = (0, 0)  # ...and then invalid and duplicate are counted again
    counted_at: float = -1e9
    count_cost: float = 0.0
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
            watch.counted_at = -1e9
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

    def _due(self, watch: Watch) -> bool:
        return self.clock() - watch.counted_at >= max(self.interval,
                                                      watch.count_cost / COUNT_SHARE)

    def _refresh(self, watch: Watch) -> None:
        reader = self._reader(watch)
        if reader is None:
            return
        try:
            version = reader.version()
            if watch.counts is not None and (version == watch.version or not self._due(watch)):
                return
            started = time.perf_counter()
            targets = reader.targets()
            sent = sum(_target(name, c)["total"] for name, c in targets.items())
            if sent != watch.sent:  # rows loaded (or the ledger replaced): count the rest
                full = reader.counts()
                watch.sent, watch.unsent = sent, (full["invalid"], full["duplicate"])
            watch.version, watch.targets = version, targets
            watch.counts = _headline(targets, watch.unsent)
            watch.count_cost, watch.counted_at = time.perf_counter() - started, self.clock()
            c = watch.counts
            watch.samples.append((self.clock(), c["moved"] + c["failed"] + c["already"]))
        except Exception:  # the run replaced its ledger (a restart): open it again next time
            watch.close()
            watch.version = None

    @staticmethod
    def _reader(watch: Watch) -> RunWatch | None:
        if watch.reader is None:
            with contextlib.suppress(RunStateError):
                watch.reader = api.watch_run(watch.run_dir)
        return watch.reader

    def _figures(self, watch: Watch, live: bool, hint: str) -> dict[str, Any]:
        counts = cast(dict[str, int], dict(watch.counts or {}))
        pending = counts.get(RowStatus.PENDING, 0)
        rate = _rate(watch.samples)
        return {
            "phase": _phase(counts, live, hint),
            "counts": counts,
            "moved": counts.get(RowStatus.MOVED, 0),
            "failed": counts.get(RowStatus.FAILED, 0),
            "pending": pending,
            "total": sum(counts.values()),
            "users_per_s": round(rate, 1),
            "eta_s": round(pending / rate) if rate > 0 and live else None,
            "targets": [_target(name, c) for name, c in sorted(watch.targets.items())],
            "age_s": round(max(0.0, self.clock() - watch.counted_at), 1)
            if watch.counts is not None else None,
        }


def _headline(targets: dict[str, Counts], unsent: tuple[int, int]) -> Counts:
    """The run's counts from its per-target counts (one read: they add up by construction)."""
    return Counts(moved=sum(c["moved"] for c in targets.values()),
                  already=sum(c["already"] for c in targets.values()),
                  failed=sum(c["failed"] for c in targets.values()),
                  pending=sum(c["pending"] for c in targets.values()),
                  unknown=sum(c["unknown"] for c in targets.values()),
                  invalid=unsent[0], duplicate=unsent[1])


def _target(name: str, counts: Counts) -> dict[str, Any]:
    """One target's columns: moved + already + failed + unknown (sent, not answered yet) +
    pending = its rows, and each column summed over the targets is the run's own figure."""
    return {"target": name, "moved": counts["moved"], "already": counts["already"],
            "failed": counts["failed"], "unknown": counts["unknown"],
            "pending": counts["pending"],
            "total": counts["moved"] + counts["already"] + counts["failed"] + counts["unknown"]
            + counts["pending"]}


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
        return "stopped" if counts[RowStatus.PENDING] or counts.get(RowStatus.UNKNOWN) else "done"
    if not counts[RowStatus.PENDING]:
        return "reports"
    answered = sum(counts[s] for s in (RowStatus.MOVED, RowStatus.FAILED, RowStatus.ALREADY))
    return "moving" if answered else "preparing"
