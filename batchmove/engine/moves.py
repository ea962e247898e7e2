"""The stages that call WeChat for every user: snapshot, move, and reading users back.

Each drives the worker pool (`runner`) over batches and commits what it learns to the ledger
before counting it anywhere else, so a kill loses nothing that was reported.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

from batchmove.engine.planner import chunked, plan_tag_batches, stream_batches
from batchmove.engine.runner import Limits, RetryPolicy, Runner, RunOutcome
from batchmove.engine.signals import StopSignals
from batchmove.engine.targets import RowOps, TargetApi, tag_operations
from batchmove.ledger.buffer import Checkpointer, ResultBuffer
from batchmove.ledger.store import Ledger
from batchmove.models import MAX_USER_INFO_BATCH, Batch, JobSpec, Move, RowFailure, RowStatus
from batchmove.results import Events, Progress, StopReason
from batchmove.wechat.answers import Follower, UserInfo
from batchmove.wechat.client import WeChatClient


async def snapshot(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
                   events: Events) -> RunOutcome:
    """Record every pending user's current group (or tags); users already where the row asks
    become `already` and are not moved. All or nothing per user: a user whose read failed, or
    who does not follow the account, gets a row verdict and is never moved unrecorded."""
    tags = spec.backend == "tags"
    todo = ledger.snapshots.missing("prev_tags" if tags else "prev_group")
    if not todo:
        return RunOutcome(StopReason.DONE)
    found, unread, outcome = await read_users(client, todo, spec, stop)
    followers = {row: info for row, info in found.items() if isinstance(info, Follower)}
    ledger.record_failed([*map(snapshot_failed, unread), *(
        not_following(row) for row, info in found.items() if not isinstance(info, Follower))])
    if tags:
        ledger.snapshots.record_tags({row: info.tagid_list for row, info in followers.items()})
        return outcome
    already = ledger.snapshots.record_groups({row: info.groupid
                                              for row, info in followers.items()})
    if already:
        events.info(f"{already} users are already in their target group: not moved")
    return outcome


#: the errcode of a row whose user does not follow the account (`user/info/batchget` said so)
NOT_FOLLOWING = 43004


def not_following(row: int) -> RowFailure:
    """The verdict of a row whose user `user/info/batchget` answered with subscribe 0: WeChat
    would refuse the move, and there is nothing to snapshot or roll back."""
    return RowFailure(row, NOT_FOLLOWING, "not a follower of this account (user/info/batchget"
                                          " answered subscribe 0); not moved", 0)


def snapshot_failed(failure: RowFailure) -> RowFailure:
    """A row whose user's group or tags before the run could not be read: not moved."""
    return failure._replace(errmsg=f"not moved: the snapshot could not read this user "
                                   f"({failure.errmsg})")


async def read_users(client: WeChatClient, moves: list[Move], spec: JobSpec, stop: StopSignals
                     ) -> tuple[dict[int, UserInfo], list[RowFailure], RunOutcome]:
    """Each row's user as `user/info/batchget` describes them (100 users a call), and the rows
    whose call failed for good; rows of calls never made (a stop) are in neither."""
    found: dict[int, UserInfo] = {}
    failures: list[RowFailure] = []

    def done(batch: Batch, infos: list[UserInfo], attempts: int) -> None:
        by_openid = {i.openid: i for i in infos}  # every openid asked: the client checked
        for row, openid in zip(batch.rows, batch.openids, strict=True):
            found[row] = by_openid[openid]

    batches = [Batch.of(0, part, "read") for part in chunked(moves, MAX_USER_INFO_BATCH)]
    runner: Runner[list[UserInfo]] = Runner(
        send=lambda b: client.batch_get_user_info(b.openids), on_done=done,
        on_failed=failures.extend, concurrency=spec.workers,
        policy=RetryPolicy(attempts=spec.retries), bisect=False)
    outcome = await stop.watch(runner, batches)
    return found, failures, outcome


async def move(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
               events: Events) -> RunOutcome:
    """Every pending row through the worker pool; each result is committed before counted."""
    targets = TargetApi(client, spec.backend)
    tracker: RowOps | None = None
    batches: Iterable[Batch]
    if spec.backend == "tags":
        meta = ledger.meta()
        operations, tracker, already = tag_operations(
            ledger.tag_rows(), meta["target_kind"], frozen(meta.get("untag")))
        ledger.mark_already(already)
        batches = plan_tag_batches(operations, spec.batch_size)
        total = len(tracker.remaining)
    else:  # streamed: a 10M-row run never holds its 200,000 batches
        batches = stream_batches(((g, r, o) for g, r, o, _ in ledger.pending_stream()),
                                 spec.batch_size)
        total = ledger.pending_count()
    commit = Committer(ResultBuffer(ledger), ProgressClock("moving", total), events)

    def done(batch: Batch, _: object, attempts: int) -> None:
        rows = batch.rows
        commit.buffer.moved(rows if tracker is None else tracker.complete(rows), attempts)
        commit()

    def first(failures: list[RowFailure]) -> list[RowFailure]:
        """A tags row is settled (failed, or unknown) by the first of its calls to end so."""
        if tracker is None:
            return failures
        once = set(tracker.fail(f.row for f in failures))
        return [f for f in failures if f.row in once]

    def failed(failures: list[RowFailure]) -> None:
        commit.buffer.failed(first(failures))
        commit()

    def unknown(failures: list[RowFailure]) -> None:
        commit.buffer.unknown(first(failures))
        commit()

    runner: Runner[object] = Runner(
        send=lambda batch: targets.send(batch, spec.batch_size), on_done=done,
        on_failed=failed, on_unknown=unknown, concurrency=spec.workers,
        policy=RetryPolicy(attempts=spec.retries),
        limits=Limits(spec.max_failure_rate, spec.failure_sample))
    events.progress(commit.clock.report(0, 0))
    try:
        with Checkpointer(ledger.path):
            return await stop.watch(runner, batches, lookahead=2 * max(1, spec.workers))
    finally:
        commit(force=True)


class ProgressClock:
    """Turns running totals into `Progress` (rate and ETA since the stage began)."""

    def __init__(self, phase: str, total: int, clock: Callable[[], float] = time.monotonic):
        self.phase, self.total, self.clock = phase, total, clock
        self.started = clock()

    def report(self, moved: int, failed: int) -> Progress:
        elapsed = self.clock() - self.started
        rate = moved / elapsed if elapsed > 0 else 0.0
        left = max(self.total - moved - failed, 0)
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        return Progress(self.phase, moved, failed, self.total, round(elapsed, 3),
                        round(rate, 1), None if eta is None else round(eta, 1))


class Committer:
    """Flushes the result buffer when due and reports progress once the rows are written."""

    def __init__(self, buffer: ResultBuffer, clock: ProgressClock, events: Events) -> None:
        self.buffer, self.clock, self.events = buffer, clock, events
        self.tally = Counter[str]()

    def __call__(self, force: bool = False) -> None:
        if force or self.buffer.due():
            moved, failed = self.buffer.flush()
            self.tally[RowStatus.MOVED] += moved
            self.tally[RowStatus.FAILED] += failed
            self.events.progress(self.clock.report(self.tally[RowStatus.MOVED],
                                                   self.tally[RowStatus.FAILED]))


def frozen(untag: list[int] | None) -> frozenset[int] | None:
    return None if untag is None else frozenset(untag)
