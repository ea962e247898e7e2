"""Live progress of a run, read from its ledger at most once a second, however many pages watch.

One `Watch` per run directory keeps a read-only connection open and a short history of counts
(for users/s and the ETA). A poll costs one `PRAGMA data_version` when the run committed
nothing, else one pass over the rows (about 0.1 s per 1,000,000 rows, in a thread, so the
console's event loop keeps answering). Per-target counts sort the rows by target and cost
more, so they are refreshed only as often as they stay under a tenth of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchmove.errors import RunStateError
from batchmove.ledger.reader import LedgerReader, Totals
from batchmove.ledger.store import LEDGER_NAME

RATE_WINDOW_S = 10.0
TARGET_SHARE = 0.1  # per-target counts may take this share of the time at most


@dataclass
class Watch:
    run_dir: Path
    reader: LedgerReader | None = None
    version: int | None = None
    totals: Totals | None = None
    targets: dict[str, dict[str, int]] = field(default_factory=dict)
    targets_at: float = -1e9
    targets_cost: float = 0.0
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    polled_at: float = -1e9
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class Watcher:
    """Shared progress polls: `await watcher.poll(run_dir)` -> the latest figures."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.watches: dict[Path, Watch] = {}

    async def poll(self, run_dir: Path, *, live: bool, phase_hint: str = "") -> dict[str, Any]:
        watch = self.watches.setdefault(run_dir, Watch(run_dir))
        async with watch.lock:
            if self.clock() - watch.polled_at >= self.interval:
                await asyncio.to_thread(self._refresh, watch)
                watch.polled_at = self.clock()
        figures = self._figures(watch, live, phase_hint)
        if not live:
            watch.close()
            self.watches.pop(run_dir, None)
        return figures

    def close(self) -> None:
        for watch in self.watches.values():
            watch.close()
        self.watches.clear()

    def _refresh(self, watch: Watch) -> None:
        if watch.reader is None:
            if not (watch.run_dir / LEDGER_NAME).exists():
                return
            with contextlib.suppress(RunStateError):
                watch.reader = LedgerReader(watch.run_dir).__enter__()
            if watch.reader is None:
                return
        reader = watch.reader
        try:
            version = reader.data_version()
            if version != watch.version or watch.totals is None:
                watch.version = version
                watch.totals = reader.totals()
            now = self.clock()
            counts = watch.totals.counts
            watch.samples.append((now, counts["moved"] + counts["failed"] + counts["already"]))
            if now - watch.targets_at >= max(self.interval, watch.targets_cost / TARGET_SHARE):
                started = time.perf_counter()
                watch.targets = reader.by_target()
                watch.targets_cost = time.perf_counter() - started
                watch.targets_at = now
        except Exception:  # the run replaced its ledger (a restart): open it again next time
            watch.close()
            watch.version = None

    def _figures(self, watch: Watch, live: bool, hint: str) -> dict[str, Any]:
        totals = watch.totals
        counts = dict(totals.counts) if totals else {}
        pending = counts.get("pending", 0)
        rate = _rate(watch.samples)
        return {
            "phase": _phase(totals, live, hint),
            "counts": counts,
            "moved": counts.get("moved", 0),
            "failed": counts.get("failed", 0),
            "pending": pending,
            "total": sum(counts.values()),
            "users_per_s": round(rate, 1),
            "eta_s": round(pending / rate) if rate > 0 and live else None,
            "targets": [_target(name, c) for name, c in sorted(watch.targets.items())],
        }


def _target(name: str, counts: dict[str, int]) -> dict[str, Any]:
    done = counts.get("moved", 0) + counts.get("already", 0) + counts.get("duplicate", 0)
    return {"target": name, "done": done, "failed": counts.get("failed", 0),
            "pending": counts.get("pending", 0),
            "total": sum(v for k, v in counts.items() if k != "invalid")}


def _rate(samples: deque[tuple[float, int]]) -> float:
    """Rows answered per second over the last RATE_WINDOW_S seconds."""
    if len(samples) < 2:
        return 0.0
    last_t, last_n = samples[-1]
    first_t, first_n = next(((t, n) for t, n in samples if last_t - t <= RATE_WINDOW_S),
                            samples[0])
    return (last_n - first_n) / (last_t - first_t) if last_t > first_t else 0.0


def _phase(totals: Totals | None, live: bool, hint: str) -> str:
    if hint:
        return hint
    if totals is None or not sum(totals.counts.values()):
        return "loading" if live else "waiting"
    counts = totals.counts
    if not live:
        return "done" if not counts["pending"] else "stopped"
    answered = counts["moved"] + counts["failed"] + counts["already"]
    if not counts["pending"]:
        return "reports"
    if totals.snapshotted and not counts["moved"]:
        return "snapshot"
    return "moving" if answered else "preparing"
