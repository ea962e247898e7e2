"""The runner's queue: batches waiting for a worker, in two lanes.

The first lane (moves whose users were just read, halves of a bisected batch) goes before
anything else queued, but holds at most `first_cap` workers at once: the rest stay free for
the second lane. Without the cap a snapshot commit that released 20 moves at once took every
worker of the pool, each move waiting for its slot of the account's rate (~0.2 s for 20 at
100/s), while the reads that feed the next moves sat queued: the reads dipped to 30-40 a
second, the moves ran dry behind them (66-80 moves in a second against 98; 100,000 users at
100 moves/s, move phase 1.03-1.06x its bound).
"""

from __future__ import annotations

import asyncio
from collections import deque

from batchmove.models import Batch


class Lanes:
    """The batches waiting for a worker, in two lanes each in order: `first` goes before
    anything else queued, on at most `first_cap` workers at once (None: any number)."""

    def __init__(self, first_cap: int | None = None) -> None:
        self.first_cap = first_cap
        self._first: deque[Batch | None] = deque()
        self._rest: deque[Batch | None] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._holding = 0  # first-lane batches a worker has and is not done with
        self._unfinished = 0
        self._joined = asyncio.Event()
        self._joined.set()

    @property
    def first(self) -> int:
        """Batches waiting in the first lane."""
        return len(self._first)

    def put(self, batch: Batch | None, *, first: bool = False) -> None:
        (self._first if first else self._rest).append(batch)
        self._unfinished += 1
        self._joined.clear()
        self._wake()

    async def get(self) -> tuple[Batch | None, bool]:
        """The next batch, and whether it came from the first lane (say so to `task_done`)."""
        while not self._takeable():
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._getters:
                    self._getters.remove(waiter)
                self._wake()  # a wake-up this getter will not use goes to the next one
                raise
        if self._first and self._first_room():
            self._holding += 1
            return self._first.popleft(), True
        return self._rest.popleft(), False

    def task_done(self, first: bool) -> None:
        self._unfinished -= 1
        if first:
            self._holding -= 1
        if self._unfinished <= 0:
            self._joined.set()
        self._wake()

    def qsize(self) -> int:
        return len(self._first) + len(self._rest)

    async def join(self) -> None:
        await self._joined.wait()

    def drain(self) -> None:
        self._unfinished -= self.qsize()
        self._first.clear()
        self._rest.clear()
        if self._unfinished <= 0:
            self._joined.set()

    def _first_room(self) -> bool:
        return self.first_cap is None or self._holding < self.first_cap

    def _takeable(self) -> bool:
        return bool(self._rest) or bool(self._first and self._first_room())

    def _wake(self) -> None:
        """Wake as many waiting workers as there are batches they may take now."""
        ready = len(self._rest) + (
            len(self._first) if self.first_cap is None
            else min(len(self._first), max(0, self.first_cap - self._holding)))
        while ready > 0 and self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                ready -= 1
