"""The groups backend's snapshot and moves as one stream through one worker pool.

Two phases (read every user, then move every user) left the pool idle between them and held
every user's info at once. Here the pending rows are read a page at a time: 100 users go to one
`user/info/batchget`; once answered, their previous groups are committed to the ledger
(`ledger.snapshots.record_previous`) and only then are they batched by target group and moved,
while later users are still being read. Moves go in the runner's first lane, before any read
queued: what was read is moved at once, and reads (which the feeder queues up to its lookahead)
take the workers the moves leave. A snapshot commit releases users every 1,000 users read
(`SNAPSHOT_COMMIT_ROWS`: one ledger transaction for ten reads), and at once for the first 1,000
(the first moves wait for no more than a batch's worth of reads) and whenever the pool is about
to idle.
Against a rate-limited move endpoint, moves queued behind ~64 reads waited ~2 s for their
first call and ran dry whenever the reads' rate dipped (100,000 users, 100 moves/s: the move
phase took 1.26x its bound; moves first, with the gate's latency signal fixed and the reads
starting at the moves' pace, 1.02x).

Every moved user's previous group is in the ledger before the call that moves them is sent, so
`rollback` is exact however the run ends. The snapshot is all or nothing per user: a user whose
read fails is not moved (the row fails with the read's reason, and `--retry-failed` tries
again), nor is a user the read shows not following the account (failed, 43004, without a move
call). Rows that already have a snapshot (a resumed run) are moved without a new read.

100,000 users, 8 groups, 20 ms, concurrency 16: snapshot and moves take 3,000 calls in
~3.9 s (bound 3.75 s) instead of 2.2 s + 0.4 s idle + 3.2 s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from batchmove.engine.moves import (
    Committer,
    ProgressClock,
    move,
    not_following,
    snapshot_failed,
)
from batchmove.engine.planner import Batcher
from batchmove.engine.runner import Limits, RetryPolicy, Runner, RunOutcome
from batchmove.engine.signals import StopSignals
from batchmove.engine.tagsnapshot import tag_snapshot
from batchmove.engine.targets import TargetApi
from batchmove.ledger.buffer import Checkpointer, ResultBuffer
from batchmove.ledger.store import Ledger
from batchmove.models import MAX_USER_INFO_BATCH, Batch, JobSpec, RowFailure
from batchmove.results import Events
from batchmove.wechat.answers import Follower, UserInfo
from batchmove.wechat.client import WeChatClient

Stage = Callable[[WeChatClient, Ledger, JobSpec, StopSignals, Events], Awaitable[RunOutcome]]

#: snapshot answers committed together once this many rows wait (or the queue runs low)
SNAPSHOT_COMMIT_ROWS = 1_000


def send_stages(spec: JobSpec) -> list[Stage]:
    """The stages that send, in order: the groups backend overlaps its snapshot and moves;
    the tags backend reads every user's tags first (its moves are planned from them). After
    them the caller reads back the moves never answered (`settle_unknown`), this run's and a
    stopped run's, even when a quota or the failure threshold stopped the moves."""
    if not spec.snapshot:
        return [move]
    if spec.backend == "groups":
        return [snapshot_and_move]
    return [tag_snapshot, move]


async def snapshot_and_move(client: WeChatClient, ledger: Ledger, spec: JobSpec,
                            stop: StopSignals, events: Events) -> RunOutcome:
    """Every pending row: read (unless its snapshot is recorded), committed, then moved."""
    targets = TargetApi(client, "groups")
    commit = Committer(ResultBuffer(ledger), ProgressClock("moving", ledger.pending_count()),
                        events)
    flow = _Flow(ledger, Batcher(spec.batch_size), commit)

    def send(batch: Batch) -> Any:
        if batch.op == "read":
            return client.batch_get_user_info(batch.openids)
        return targets.send(batch, spec.batch_size)

    runner: Runner[Any] = Runner(
        send=send, on_done=flow.done, on_failed=flow.failed, on_unknown=flow.unknown,
        concurrency=spec.workers,
        policy=RetryPolicy(attempts=spec.retries),
        limits=Limits(spec.max_failure_rate, spec.failure_sample))
    flow.runner = runner
    events.progress(commit.clock.report(0, 0))
    try:
        with Checkpointer(ledger.path):
            return await stop.watch(runner, flow.batches(),
                                    lookahead=2 * max(1, spec.workers))
    finally:
        flow.commit_snapshot(release=False)
        commit(force=True)
        if flow.already:
            events.info(f"{flow.already} users are already in their target group: not moved")


class _Flow:
    """What is being read, what waits for its snapshot to be committed, what waits to fill a
    batch. Callbacks of the runner, so all in one event loop: no locks."""

    def __init__(self, ledger: Ledger, batcher: Batcher, commit: Committer) -> None:
        self.ledger, self.batcher, self.commit = ledger, batcher, commit
        self.runner: Runner[Any] | None = None
        self.reading: dict[int, int] = {}  # row -> target group, while its read is out
        self.exhausted = False  # every pending row was handed out
        self.already = 0
        self.released = 0  # users handed to the moves so far
        self._previous: dict[int, list[int]] = {}  # prev_group -> rows, not committed yet
        self._already: list[int] = []
        self._ready: dict[int, tuple[list[int], list[str]]] = {}  # group -> users to move

    def batches(self) -> Iterator[Batch]:
        """Reads of 100 users, and moves of users whose snapshot a resumed run recorded."""
        rows: list[int] = []
        openids: list[str] = []
        for target_id, row, openid, previous in self.ledger.pending_stream():
            if previous is not None:
                batch = self.batcher.add(target_id, row, openid)
                if batch is not None:
                    yield batch
                continue
            self.reading[row] = target_id
            rows.append(row)
            openids.append(openid)
            if len(rows) == MAX_USER_INFO_BATCH:
                yield Batch(0, tuple(rows), tuple(openids), "read")
                rows, openids = [], []
        if rows:
            yield Batch(0, tuple(rows), tuple(openids), "read")
        self.exhausted = True
        if not self.reading:  # nothing out: users read and not released yet, then the last
            self.commit_snapshot(release=True)  # partial batches go now
            yield from self.batcher.rest()

    def done(self, batch: Batch, result: Any, attempts: int) -> None:
        if batch.op != "read":
            self.commit.buffer.moved(batch.rows, attempts)
            self.commit()
            return
        infos: dict[str, UserInfo] = {i.openid: i for i in result}  # each asked: checked
        strangers = []
        for row, openid in zip(batch.rows, batch.openids, strict=True):
            target = self.reading.pop(row)
            info = infos[openid]
            if not isinstance(info, Follower):
                strangers.append(not_following(row))
                continue
            self._previous.setdefault(info.groupid, []).append(row)
            if info.groupid == target:
                self._already.append(row)
                continue
            users = self._ready.get(target)
            if users is None:
                users = self._ready[target] = ([], [])
            users[0].append(row)
            users[1].append(openid)
        if strangers:
            self.commit.buffer.failed(strangers)
        self._maybe_commit()
        self.commit()  # move results wait at most their 0.2 s while reads come back

    def failed(self, failures: list[RowFailure]) -> None:
        """A move's rows, or a read's: either way they fail (a user not read is not moved)."""
        read = [self.reading.pop(f.row, None) is not None for f in failures]
        if any(read):
            failures = [snapshot_failed(f) if r else f
                        for f, r in zip(failures, read, strict=True)]
        self.commit.buffer.failed(failures)
        self.commit()
        self._maybe_commit()

    def unknown(self, rows: list[RowFailure]) -> None:
        """A move's rows whose call was never answered: read back at the end of the run."""
        self.commit.buffer.unknown(rows)
        self.commit()

    def _maybe_commit(self) -> None:
        last = self.exhausted and not self.reading
        low = self.runner is not None and self.runner.queued < self.runner.concurrency
        starting = self.released < SNAPSHOT_COMMIT_ROWS  # the first moves go at once
        if last or low or starting or self._waiting() >= SNAPSHOT_COMMIT_ROWS:
            self.commit_snapshot(release=True)
        if last and self.runner is not None and not self.runner.stopping:
            for batch in self.batcher.rest():
                self.runner.submit(batch, first=True)

    def commit_snapshot(self, *, release: bool) -> None:
        """Commit the answers read so far; with `release`, hand their users to the moves."""
        if self._previous or self._already:
            self.ledger.snapshots.record_previous(self._previous, self._already)
            self.already += len(self._already)
            self.commit.clock.total -= len(self._already)  # progress counts what moves
        self._previous, self._already = {}, []
        ready, self._ready = self._ready, {}
        if not release or self.runner is None or self.runner.stopping:
            return
        self.released += sum(len(rows) for rows, _ in ready.values())
        for target_id, (rows, openids) in ready.items():
            for batch in self.batcher.extend(target_id, rows, openids):
                self.runner.submit(batch, first=True)

    def _waiting(self) -> int:
        """Users read back whose snapshot is not committed yet."""
        return sum(len(rows) for rows, _ in self._ready.values()) + len(self._already)
