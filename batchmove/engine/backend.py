"""Where the API calls go: WeChat itself, or an embedded sandbox started for this run.

The one place that builds the client: its token source (from the job's credentials, or the
sandbox's own account) and its rate limiter, which every HTTP attempt passes through.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from batchmove.errors import JobFileError
from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec
from batchmove.registry import Registry, SharedGate, SharedTokens, account_of, shared_gate
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.token import SecretTokenSource, TokenSource, token_source_from

if TYPE_CHECKING:  # imported when a limiter is made: aiolimiter reads its own package
    from aiolimiter import AsyncLimiter  # metadata on import (~0.02 s), needless at --rate 0

#: calls the limiter may bunch together to make up for workers that woke up late
LIMITER_BURST = 2


def make_limiter(rate: float) -> AsyncLimiter | None:
    """At most `rate` calls in any one-second window, sustaining rate - LIMITER_BURST, within
    this process only (runs use the account's shared gate, `registry.SharedGate`).

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
    """The client for a job's settings (`api_base`, credentials, rate, timeout, `[sandbox]`),
    sharing the account's token and rate with its other runs through the registry. An
    embedded sandbox is an account of its own, forgotten when the run ends."""
    registry = Registry()
    async with _backend(spec, default_openids, registry) as (base_url, source, account):
        gate = shared_gate(registry, account, spec)
        try:
            client = WeChatClient(base_url, source, timeout=spec.timeout, gate=gate,
                                  token_store=SharedTokens(registry, account, _kind(source)),
                                  connector_limit=max(100, spec.workers))
            async with client:
                yield client
        finally:
            if gate is not None:
                gate.close()
            if spec.api_base == "sandbox":
                registry.forget(account, _kind(source))
            registry.close()


def _kind(source: TokenSource) -> str:
    """The store's slot: a secret source's token is shared only by runs with that secret."""
    if isinstance(source, SecretTokenSource):
        return f"access:{source.fingerprint}"
    return "access"


def gate_of(client: WeChatClient) -> SharedGate | None:
    """The client's shared gate, when the job has a rate (None at `--rate 0`)."""
    return client.gate if isinstance(client.gate, SharedGate) else None


def source_for(spec: JobSpec, registry: Registry) -> TokenSource:
    """The job's token source: an account of a third-party platform (its tokens kept in the
    registry), or the account's own."""
    if spec.credentials.component:
        from batchmove.registry.platform import RegistryPlatformStore
        from batchmove.wechat.tickets import component_source

        return component_source(spec.credentials, spec.single_account,
                                RegistryPlatformStore(registry))
    return token_source_from(spec.credentials)


@asynccontextmanager
async def _backend(spec: JobSpec, default_openids: Callable[[], list[str]] | None,
                   registry: Registry) -> AsyncIterator[tuple[str, TokenSource, str]]:
    if spec.api_base != "sandbox":
        yield spec.api_base, source_for(spec, registry), account_of(spec)
        return
    from batchmove.sandbox import SandboxConfig, SandboxState, running_sandbox

    settings = dict(spec.sandbox)
    if not {"users", "users_file", "openids", "from_file"} & settings.keys() and default_openids:
        settings["openids"] = default_openids()
    try:
        config = SandboxConfig(**settings)
        state = SandboxState(config)  # reads `from` (an export file) and checks it
    except (TypeError, ValueError) as exc:  # unknown key, or SandboxConfigError
        raise JobFileError(f"[sandbox] in {spec.job_path or 'the job'}: {exc}") from None
    async with running_sandbox(config, host="127.0.0.1", port=0, state=state) as sandbox:
        account = f"sandbox-{secrets.token_hex(8)}"  # ephemeral: never shared
        yield sandbox.base_url, SecretTokenSource(config.appid, config.secret), account
