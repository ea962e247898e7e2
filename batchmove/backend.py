"""Where the API calls go: WeChat itself, or an embedded sandbox started for this run.

The one place that builds the client: its token source (from the job's credentials, or the
sandbox's own account) and its rate limiter, which every HTTP attempt passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter

from batchmove.errors import JobFileError
from batchmove.ledger import Ledger
from batchmove.models import JobSpec
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.token import SecretTokenSource, TokenSource, token_source_from


def make_limiter(rate: float) -> AsyncLimiter | None:
    """Evenly spaced calls, no initial burst: a bucket of one call refilled every 1/rate s."""
    return AsyncLimiter(1, 1.0 / rate) if rate > 0 else None


@asynccontextmanager
async def api_client(spec: JobSpec, ledger: Ledger) -> AsyncIterator[WeChatClient]:
    """The client, talking to WeChat or to an embedded sandbox started for this run."""
    async with _backend(spec, ledger) as (base_url, source):
        client = WeChatClient(base_url, source, timeout=spec.timeout,
                              limiter=make_limiter(spec.rate))
        async with client:
            yield client


@asynccontextmanager
async def _backend(spec: JobSpec, ledger: Ledger) -> AsyncIterator[tuple[str, TokenSource]]:
    if spec.api_base != "sandbox":
        yield spec.api_base, token_source_from(spec.credentials)
        return
    from batchmove.sandbox import SandboxConfig, running_sandbox

    settings = dict(spec.sandbox)
    if not {"users", "users_file", "openids"} & settings.keys():
        settings["openids"] = sorted({r.openid for r in ledger.rows("status != 'invalid'")})
    try:
        config = SandboxConfig(**settings)
    except (TypeError, ValueError) as exc:  # unknown key, or SandboxConfigError
        raise JobFileError(f"[sandbox] in {spec.job_path or 'the job'}: {exc}") from None
    async with running_sandbox(config, host="127.0.0.1", port=0) as sandbox:
        yield sandbox.base_url, SecretTokenSource(config.appid, config.secret)
