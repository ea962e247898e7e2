"""Group commit of results: the runner's answers reach the ledger in few transactions."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from batchmove.ledger.store import Ledger
from batchmove.models import RowFailure


class ResultBuffer:
    """Group commit: results are written in one transaction every `max_rows` rows or
    `max_delay` seconds, and reported only once written. A commit per 50-user batch made the
    ledger the bottleneck of a fast run; a `kill -9` now loses at most the last fraction of a
    second of answers, whose rows are simply sent again (moves are idempotent) and were never
    counted as done."""

    def __init__(self, ledger: Ledger, max_rows: int = 2_000, max_delay: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.clock = clock
        self._moved: dict[int, list[int]] = {}  # attempts -> rows
        self._count = 0
        self._failed: list[RowFailure] = []
        self._since: float | None = None

    def moved(self, rows: Sequence[int], attempts: int) -> None:
        self._moved.setdefault(attempts, []).extend(rows)
        self._count += len(rows)
        self._mark()

    def failed(self, failures: list[RowFailure]) -> None:
        self._failed += failures
        self._count += len(failures)
        self._mark()

    def _mark(self) -> None:
        if self._since is None:
            self._since = self.clock()

    def due(self) -> bool:
        return self._since is not None and (
            self._count >= self.max_rows
            or self.clock() - self._since >= self.max_delay)

    def flush(self) -> tuple[int, int]:
        """Commit what is buffered; returns (moved, failed) rows written."""
        moved, failed = self._moved, self._failed
        if moved or failed:
            self.ledger.record_results(moved, failed)
        self._moved, self._failed, self._count, self._since = {}, [], 0, None
        return sum(map(len, moved.values())), len(failed)
