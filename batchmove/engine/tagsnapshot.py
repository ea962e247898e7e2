"""The tags backend's snapshot, from whichever source is cheaper (`snapshotsource`).

`user/info/batchget` reads 100 pending users a call (`moves.snapshot`). Listing every tag's
members with `user/tag/get` (10,000 a page) reads the same tag sets in far fewer calls when the
account's tags are small next to the job: 100,000 users over 8 tags, 26 calls instead of 1,000.
The choice is made from the counts of the resolver's `tags/get` (kept in the ledger's meta as
`tag_counts`), exactly as `plan` makes it, and recorded as meta `snapshot_source`.

Tags are listed concurrently (one cursor each, up to `concurrency` tags at a time); each page is
committed with its cursor (`ledger.tagmembers`), so a killed listing resumes where it stopped,
and no user's `prev_tags` is written until every list is read.

A user found in no list gets `[]`. Member lists cannot tell an untagged follower from a user
who is not a follower (batchget says `subscribe` 0, and such a user gets no snapshot); either
way the move tags them, and a non-follower's move fails with WeChat's errcode as before.
"""

from __future__ import annotations

import asyncio
from functools import partial

from batchmove.engine.moves import snapshot
from batchmove.engine.runner import RetryPolicy, RunOutcome, with_retries
from batchmove.engine.signals import StopSignals
from batchmove.engine.snapshotsource import BATCHGET, MEMBERS, choose_source, listed_tags
from batchmove.errors import FatalApiError, RowError
from batchmove.ledger.store import Ledger
from batchmove.ledger.tagmembers import TagListing
from batchmove.models import JobSpec, Target
from batchmove.results import Events, StopReason
from batchmove.wechat.client import WeChatClient

#: 45159: the tag was deleted since `tags/get`; nobody carries it any more
_TAG_GONE = 45159


def account_tags(ledger: Ledger) -> list[Target]:
    """The tags (id, count) the resolver's `tags/get` saw."""
    return [Target(int(i), "", int(n)) for i, n in ledger.meta().get("tag_counts", [])]


async def tag_snapshot(client: WeChatClient, ledger: Ledger, spec: JobSpec, stop: StopSignals,
                       events: Events) -> RunOutcome:
    """Every pending user's tags, from member lists when cheaper, else `user/info/batchget`."""
    listing = TagListing(ledger)
    users = listing.todo_count()
    if not users:
        return RunOutcome(StopReason.DONE)
    tags = account_tags(ledger)
    choice = choose_source(users, tags, spec.snapshot_source)
    resumed = spec.snapshot_source != "batchget" and listing.in_progress()
    source = MEMBERS if resumed else choice.source
    ledger.set_meta(snapshot_source=source)
    if source == BATCHGET:
        listing.discard()  # a listing begun before the job asked for batchget
        return await snapshot(client, ledger, spec, stop, events)
    events.info("resuming the snapshot from tag member lists" if resumed
                else choice.describe())
    todo = listing.begin([t.id for t in listed_tags(tags)], resume=resumed)
    await _list(client, listing, todo, spec, stop)
    if stop.reason is not None:
        return RunOutcome(stop.reason)
    listing.finish()
    return RunOutcome(StopReason.DONE)


async def _list(client: WeChatClient, listing: TagListing, todo: list[tuple[int, str]],
                spec: JobSpec, stop: StopSignals) -> None:
    """Page through every tag left, up to `concurrency` tags at once; the first error cancels
    the others and is raised (each recorded page stays recorded)."""
    queue = list(todo)
    policy = RetryPolicy(attempts=spec.retries)

    async def worker() -> None:
        while queue and stop.reason is None:
            tag_id, cursor = queue.pop(0)
            await _list_tag(client, listing, tag_id, cursor, policy, stop)

    tasks = [asyncio.create_task(worker()) for _ in range(min(len(queue), spec.workers))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _list_tag(client: WeChatClient, listing: TagListing, tag_id: int, cursor: str,
                    policy: RetryPolicy, stop: StopSignals) -> None:
    """One tag's pages from `cursor` on, until WeChat ends the list (an empty page, an empty
    or unmoving cursor: as `WeChatClient.iter_tag_followers`)."""
    while stop.reason is None:
        try:
            page = await with_retries(partial(client.get_tag_followers, tag_id, cursor), policy)
        except RowError as exc:
            if exc.errcode != _TAG_GONE:  # a refused listing stops the run, resumable
                raise FatalApiError(exc.errcode, exc.errmsg, exc.endpoint) from exc
            listing.record_page(tag_id, [], "", done=True)
            return
        done = not page.openids or not page.next_openid or page.next_openid == cursor
        listing.record_page(tag_id, page.openids, page.next_openid, done)
        if done:
            return
        cursor = page.next_openid
