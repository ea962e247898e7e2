"""Listing followers at scale: pages of openids, then each one's current group and tags.

The account's followers come as *streams* of pages: `user/get` (every follower), or one
`user/tag/get` stream per asked tag. Pages are read one after the other (each needs the last
page's `next_openid`); while page k's followers are read with `user/info/batchget` (100 a call,
through the worker pool, retries and rate limiter included), page k+1 is already being fetched.
A page is handed to `on_page` only once every one of its followers is known, together with the
cursor of the next page, so the caller can checkpoint page by page and resume exactly.

Knows nothing of files: the checkpoint and the output are the caller's (`flows/export.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from batchmove.engine.planner import chunked
from batchmove.engine.runner import RetryPolicy, Runner, RunOutcome, with_retries
from batchmove.engine.signals import StopSignals
from batchmove.errors import ApiError, TransientError
from batchmove.ledger.checkpoint import Cursor, Follower
from batchmove.models import MAX_USER_INFO_BATCH, Batch, RowFailure
from batchmove.results import StopReason
from batchmove.wechat import answers
from batchmove.wechat.answers import UserInfo
from batchmove.wechat.client import FollowerPage, WeChatClient


@dataclass(frozen=True)
class Streams:
    """What to list: every follower (`tag_ids` empty), or the followers of these tags; and,
    for a group selection, the group ids to keep (None: keep everyone listed)."""

    tag_ids: tuple[int, ...] = ()
    tag_members: int = 0  # followers of those tags, by `tags/get` (overlaps counted twice)
    keep_groups: frozenset[int] | None = None

    @property
    def count(self) -> int:
        return max(1, len(self.tag_ids))

    def fetch(self, client: WeChatClient, stream: int) -> Callable[[str], Awaitable[FollowerPage]]:
        if not self.tag_ids:
            return client.get_followers
        return partial(client.get_tag_followers, self.tag_ids[stream])

    def endpoint(self) -> str:
        return "user/tag/get" if self.tag_ids else "user/get"


#: (the page's followers that are kept, the cursor after the page, openids the page listed)
OnPage = Callable[[list[Follower], Cursor, int], None]


@dataclass
class Lister:
    """Walk the streams from `start`, calling `on_page` after each page is fully read."""

    client: WeChatClient
    streams: Streams
    on_page: OnPage
    stop: StopSignals
    concurrency: int = 8
    retries: int = 6
    on_first_page: Callable[[FollowerPage], Awaitable[None]] | None = None

    async def run(self, start: Cursor) -> RunOutcome:
        """DONE once every stream is read; otherwise why it stopped (the last page recorded
        is where a resume starts). Daily quota and fatal errors on a page fetch propagate."""
        policy = RetryPolicy(attempts=self.retries)
        for stream in range(start.stream, self.streams.count):
            fetch = self.streams.fetch(self.client, stream)
            cursor = start.next_openid if stream == start.stream else ""
            page = await with_retries(partial(fetch, cursor), policy)
            if self.on_first_page is not None:
                await self.on_first_page(page)
                self.on_first_page = None
            while True:
                last = _is_last(page, cursor)
                ahead = None
                if not last:
                    ahead = asyncio.ensure_future(
                        with_retries(partial(fetch, page.next_openid), policy))
                try:
                    followers, outcome = await self._read(page.openids)
                except BaseException:
                    await _cancel(ahead)
                    raise
                if outcome.reason is not StopReason.DONE or self.stop.reason is not None:
                    await _cancel(ahead)
                    return outcome if outcome.reason is not StopReason.DONE else RunOutcome(
                        self.stop.reason or StopReason.DONE)
                after = (Cursor(stream + 1) if stream + 1 < self.streams.count
                         else Cursor(stream + 1, "", True)) if last else Cursor(
                             stream, page.next_openid)
                self.on_page(followers, after, len(page.openids))
                if ahead is None:
                    break
                cursor, page = page.next_openid, await ahead
        return RunOutcome(StopReason.DONE)

    async def _read(self, openids: Sequence[str]) -> tuple[list[Follower], RunOutcome]:
        """Every openid's group and tags (100 a call); unsubscribed users are left out."""
        infos: dict[int, list[UserInfo]] = {}
        batches = [Batch(0, (i,), tuple(part))
                   for i, part in enumerate(chunked(list(openids), MAX_USER_INFO_BATCH))]
        runner: Runner[list[UserInfo]] = Runner(
            send=lambda b: self.client.batch_get_user_info(b.openids),
            on_done=lambda b, found, _: infos.__setitem__(b.rows[0], found),
            on_failed=lambda failures: _give_up(runner, failures),
            concurrency=self.concurrency, policy=RetryPolicy(attempts=self.retries),
            bisect=False)
        outcome = await self.stop.watch(runner, batches) if batches else RunOutcome(
            StopReason.DONE)
        keep = self.streams.keep_groups
        followers = []
        for i in range(len(batches)):
            for info in infos.get(i, ()):  # non-followers (subscribe 0) are left out
                if isinstance(info, answers.Follower) and (keep is None or info.groupid in keep):
                    followers.append((info.openid, info.groupid,
                                      ";".join(map(str, info.tagid_list))))
        return followers, outcome


def _is_last(page: FollowerPage, cursor: str) -> bool:
    return not page.openids or not page.next_openid or page.next_openid == cursor


def _give_up(runner: Runner[Any], failures: list[RowFailure]) -> None:
    """A user/info/batchget call that failed for good: the page cannot be recorded whole."""
    first = failures[0]
    runner.stop(StopReason.FATAL, TransientError(first.errcode, first.errmsg,
                                                 "user/info/batchget"), now=True)


async def _cancel(task: asyncio.Future[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError, ApiError):
            await task
