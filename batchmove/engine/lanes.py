"""The runner's queue: batches waiting for a worker, in two lanes."""

from __future__ import annotations

import asyncio
import itertools

from batchmove.models import Batch


class Lanes:
    """The batches waiting for a worker, in two lanes each in order: `first` (moves whose
    users were just read, halves of a bisected batch) goes before anything else queued."""

    def __init__(self) -> None:
        self._heap: asyncio.PriorityQueue[tuple[int, int, Batch | None]] = (
            asyncio.PriorityQueue())
        self._order = itertools.count()
        self.first = 0  # batches waiting in the first lane

    def put(self, batch: Batch | None, *, first: bool = False) -> None:
        self.first += first
        self._heap.put_nowait((0 if first else 1, next(self._order), batch))

    async def get(self) -> Batch | None:
        lane, _, batch = await self._heap.get()
        self.first -= lane == 0
        return batch

    def qsize(self) -> int:
        return self._heap.qsize()

    def task_done(self) -> None:
        self._heap.task_done()

    async def join(self) -> None:
        await self._heap.join()

    def drain(self) -> None:
        while not self._heap.empty():
            self._heap.get_nowait()
            self._heap.task_done()
        self.first = 0
