"""Where the API calls go: WeChat itself, or an embedded sandbox started for this run.

The one place that builds the client: its token source (from the job's credentials, or the
sandbox's own account) and its rate limiter, which every HTTP attempt passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from batchmove.errors import JobFileError
from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.token import SecretTokenSource, TokenSource, token_source_from

if TYPE_CHECKING:  # imported when a limiter is made: aiolimiter reads its own package
    from aiolimiter import AsyncLimiter  # metadata on import (~0.02 s), needless at --rate 0

#: calls the limiter may bunch together to make up for workers that woke up late
LIMITER_BURST = 2


def make_limiter(rate: float) -> AsyncLimiter | None:
    """At most `rate` calls in any one-second window, sustaining rate - LIMITER_BURST.

    A bucket of k calls draining at (rate - k)/s lets through at most k + (rate - k) = rate
    calls in any second, and a worker woken late takes a slot the bucket kept for it. A bucket of
    one call (strictly even spacing) loses every late wake-up: at --rate 100 it sent about 90
    calls a second (bench/, scenario "limit"). Slow rates keep the even spacing.
    """
    if rate <= 0:
        return None
    from aiolimiter import AsyncLimiter

    if rate <= 4 * LIMITER_BURST:
        return AsyncLimiter(1, 1.0 / rate)
    return AsyncLimiter(LIMITER_BURST, LIMITER_BURST / (rate - LIMITER_BURST))


@asynccontextmanager
async def api_client(spec: JobSpec, ledger: Ledger) -> AsyncIterator[WeChatClient]:
    """The client, talking to WeChat or to an embedded sandbox started for this run (whose
    followers are the input's openids unless `[sandbox]` says otherwise)."""
    async with client_for(spec, ledger.valid_openids) as client:
        yield client


@asynccontextmanager
async def client_for(spec: JobSpec, default_openids: Callable[[], list[str]] | None = None
                     ) -> AsyncIterator[WeChatClient]:
    """The client for a job's settings (`api_base`, credentials, rate, timeout, `[sandbox]`).
    `default_openids` gives an embedded sandbox its followers when `[sandbox]` names none."""
    async with _backend(spec, default_openids) as (base_url, source):
        client = WeChatClient(base_url, source, timeout=spec.timeout,
                              limiter=make_limiter(spec.rate))
        async with client:
            yield client


def source_for(spec: JobSpec) -> TokenSource:
    """The job's token source: an account of a third-party platform, or the account's own."""
    if spec.credentials.component:
        from batchmove.wechat.tickets import component_source

        return component_source(spec.credentials, spec.single_account)
    return token_source_from(spec.credentials)


@asynccontextmanager
async def _backend(spec: JobSpec, default_openids: Callable[[], list[str]] | None
                   ) -> AsyncIterator[tuple[str, TokenSource]]:
    if spec.api_base != "sandbox":
        yield spec.api_base, source_for(spec)
        return
    from batchmove.sandbox import SandboxConfig, running_sandbox

    settings = dict(spec.sandbox)
    if not {"users", "users_file", "openids"} & settings.keys() and default_openids:
        settings["openids"] = default_openids()
    try:
        config = SandboxConfig(**settings)
    except (TypeError, ValueError) as exc:  # unknown key, or SandboxConfigError
        raise JobFileError(f"[sandbox] in {spec.job_path or 'the job'}: {exc}") from None
    async with running_sandbox(config, host="127.0.0.1", port=0) as sandbox:
        yield sandbox.base_url, SecretTokenSource(config.appid, config.secret)
