"""What a run asks WeChat that needs nothing from its ledger, asked as early as it can be.

The target listing (`groups/get` or `tags/get`, and with it the token) and, under
`rate = "auto"`, each sending endpoint's `openapi/quota/get` depend on the job alone. `run`
asks them as soon as its client is open, while the input is loaded into the ledger (CPU work,
in a thread), and awaits each answer where it is needed, so an error surfaces where it did
when the calls came after the load. 100,000 users against an account 30 ms away: the first
move came ~0.3 s sooner (the token, the listing and two quota calls one after another, then
the load, had been ~0.3 s and ~0.35-0.5 s).

Only read-only calls: nothing a run changes is sent before its plan and registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from functools import partial

from batchmove.engine.backend import gate_of
from batchmove.engine.planner import backend_endpoints
from batchmove.engine.resolver import match_groups
from batchmove.engine.runner import RetryPolicy, with_retries
from batchmove.engine.targets import TargetApi
from batchmove.errors import ApiError, DailyQuotaError
from batchmove.ledger.loading import GroupIds
from batchmove.models import JobSpec, Target, TargetKind
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.quota import Quota

SNAPSHOT_ENDPOINT = "user/info/batchget"
#: how long the load's first chunk waits for the listing (`Early.group_ids`), in seconds
LISTING_WAIT = 1.0


class Early:
    """The listing and the quotas of a run: asked at `start` (or when first awaited)."""

    def __init__(self, client: WeChatClient, spec: JobSpec) -> None:
        self.client, self.spec = client, spec
        self.listed: list[Target] | None = None  # the listing, once it has come
        self._answered = threading.Event()  # the listing came, or failed
        self._listing: asyncio.Task[list[Target]] | None = None
        self._quotas: asyncio.Task[dict[str, Quota | None]] | None = None

    def start(self) -> Early:
        """Ask both now; their answers wait for `listing` and `quotas`."""
        self._listing_task()
        if self.wants_quotas:
            self._quotas_task()
        return self

    @property
    def wants_quotas(self) -> bool:
        """`rate = "auto"` with a gate: its endpoints' rates start from their quotas."""
        return gate_of(self.client) is not None and self.spec.auto_rate

    def group_ids(self, kind: TargetKind) -> GroupIds | None:
        """For the load (`Ledger.load_rows`), run in a thread meanwhile: a chunk's targets
        resolved against the listing as `resolve_targets` will resolve them (None while it
        has not come). None for tag sets, which resolve per user.

        The first chunk, once read, waits for the listing (up to `LISTING_WAIT`): parsing
        holds the interpreter lock, and the loop asking for the token and the listing got it
        only every few ms (100,000 rows: the listing came 0.2 s into the load, after the
        insert had begun). No move can start before the listing anyway; a listing that takes
        longer costs at most the insert's 0.14 s per 100,000 rows less the 0.09 s UPDATE that
        ids written with the rows save."""
        if kind == "set":
            return None
        waited = False

        def ids(targets: set[str]) -> dict[str, int] | None:
            nonlocal waited
            if not waited:  # the first chunk only: a later one takes what has come
                waited = True
                self._answered.wait(LISTING_WAIT)
            listed = self.listed  # set once, on the loop's thread; never changed after
            if listed is None:
                return None
            try:
                return match_groups(listed, targets, kind).resolved
            except ValueError:  # a target as no id reads: resolve_targets will say so
                return None
        return ids

    async def listing(self) -> list[Target]:
        """The account's groups (or tags), retried as any call outside the worker pool."""
        return await self._listing_task()

    async def quotas(self) -> dict[str, Quota | None]:
        """Each sending endpoint's quota (None where the account may not read it)."""
        return await self._quotas_task()

    async def close(self) -> None:
        """Whatever was asked and not awaited (the load failed, the run stopped) is dropped."""
        tasks = [t for t in (self._listing, self._quotas) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _listing_task(self) -> asyncio.Task[list[Target]]:
        if self._listing is None:
            listing = TargetApi(self.client, self.spec.backend).list_targets
            self._listing = asyncio.create_task(
                with_retries(listing, RetryPolicy(attempts=self.spec.retries)))
            self._listing.add_done_callback(self._keep_listing)
        return self._listing

    def _keep_listing(self, task: asyncio.Task[list[Target]]) -> None:
        if not task.cancelled() and task.exception() is None:  # a failure: where awaited
            self.listed = task.result()
        self._answered.set()

    def _quotas_task(self) -> asyncio.Task[dict[str, Quota | None]]:
        if self._quotas is None:
            self._quotas = asyncio.create_task(self._ask_quotas())
        return self._quotas

    async def _ask_quotas(self) -> dict[str, Quota | None]:
        endpoints = sending_endpoints(self.spec)
        found = await asyncio.gather(*(quota_of(self.client, self.spec, e) for e in endpoints))
        return dict(zip(endpoints, found, strict=True))


async def quota_of(client: WeChatClient, spec: JobSpec, endpoint: str) -> Quota | None:
    """One endpoint's `openapi/quota/get`; None where the account may not read its quotas."""
    try:
        return await with_retries(partial(client.get_quota, endpoint),
                                  RetryPolicy(attempts=spec.retries))
    except DailyQuotaError:
        raise
    except ApiError:  # not every account may read its quotas: the safe start
        return None


def sending_endpoints(spec: JobSpec) -> list[str]:
    """The endpoints a run sends most of its calls to (their rates are seeded)."""
    endpoints = backend_endpoints(spec)
    sending = [endpoints["move"]]
    if spec.backend == "tags" and spec.untag:
        sending.append(endpoints["untag"])
    if spec.snapshot:
        sending.append(SNAPSHOT_ENDPOINT)
    return sending
