"""The shared token: one fetch for every run of an account, across processes; refreshes never
cross; a killed holder of the flight never blocks the others."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from batchmove.registry import Registry, SharedTokens, account_key
from batchmove.sandbox import SandboxConfig
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.gate import StoredToken
from batchmove.wechat.token import SecretTokenSource
from tests.support.processes import holder
from tests.support.sandboxes import REPO_ROOT, SandboxFactory

CHILD = textwrap.dedent("""
    import asyncio, sys
    from batchmove.registry import Registry, SharedTokens
    from batchmove.wechat.client import WeChatClient
    from batchmove.wechat.token import SecretTokenSource

    async def main(base, account):
        store = SharedTokens(Registry(), account)
        source = SecretTokenSource("wxsandbox0000000001", "sandbox-secret-not-real")
        async with WeChatClient(base, source, token_store=store) as client:
            await client.get_groups()
            print(client.tokens.fetches, client.tokens.adopted)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def source() -> SecretTokenSource:
    config = SandboxConfig()
    return SecretTokenSource(config.appid, config.secret)


def test_three_processes_fetch_the_token_once(sandbox_process) -> None:  # type: ignore[no-untyped-def]
    base = sandbox_process("--users", "5")
    account = account_key(base, "appid", SandboxConfig().appid)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, base, account], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(fetches) for fetches, _ in outs) == [0, 0, 1]
    with urllib.request.urlopen(f"{base}/sandbox/state") as resp:
        calls = json.loads(resp.read())["calls"]
    assert calls.get("stable_token") == 1
    assert calls.get("groups/get") == 3


async def test_a_refreshed_token_is_adopted_not_refreshed_again(
        sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=3))
    registry = Registry()
    store_a, store_b = (SharedTokens(registry, "acct") for _ in range(2))
    async with WeChatClient(sb.base_url, source(), token_store=store_a) as a, \
            WeChatClient(sb.base_url, source(), token_store=store_b) as b:
        await a.get_groups()
        await b.get_groups()
        assert (a.tokens.fetches, b.tokens.fetches) == (1, 0)
        old = await a.tokens.get()
        fresh = await a.tokens.refresh(old)  # as after a 40001
        assert fresh != old
        assert await b.tokens.refresh(old) == fresh  # b saw the same rejection: adopts
        assert (a.tokens.fetches, b.tokens.fetches) == (2, 0)
    assert sb.state.calls["stable_token"] == 2


def test_the_store_keeps_kinds_apart_and_forgets() -> None:
    registry = Registry()
    access = SharedTokens(registry, "acct")
    refresh = SharedTokens(registry, "acct", "refresh:wx123")
    access.save(StoredToken("a-token", renew_at=None, expires_at=None))
    refresh.save(StoredToken("r-token"))
    assert access.read() == StoredToken("a-token")
    assert refresh.read() == StoredToken("r-token")
    refresh.forget()
    assert refresh.read() is None
    assert access.read() is not None


def test_an_expired_stored_token_is_not_offered() -> None:
    store = SharedTokens(Registry(), "acct", wall=lambda: 1000.0)
    store.save(StoredToken("old", renew_at=900.0, expires_at=999.0))
    assert store.read() is None


def test_files_are_private(state_dir: Path) -> None:
    store = SharedTokens(Registry(), "acct")
    store.save(StoredToken("secret-token"))
    assert oct(state_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((state_dir / "registry.sqlite").stat().st_mode & 0o777) == "0o600"


LOCK_HOLDER = textwrap.dedent("""
    import asyncio, sys, time
    from batchmove.registry import Registry, SharedTokens

    async def main():
        async with SharedTokens(Registry(), "acct").flight():
            print("holding", flush=True)
            time.sleep(60)

    asyncio.run(main())
""")


def test_a_killed_flight_holder_releases_the_flight() -> None:
    with holder(LOCK_HOLDER, "holding") as other:
        os.kill(other.pid, signal.SIGKILL)
        other.wait(timeout=10)

        async def take() -> None:
            async with asyncio.timeout(5), SharedTokens(Registry(), "acct").flight():
                pass

        asyncio.run(take())


@pytest.mark.parametrize("env", [{}, {"XDG_STATE_HOME": "/x/state"}])
def test_state_dir_defaults(env: dict[str, str]) -> None:
    from batchmove.registry.store import state_dir

    found = state_dir(env)
    assert found == (Path("/x/state/batchmove") if env else
                     Path.home() / ".local" / "state" / "batchmove")
    assert state_dir({"BATCHMOVE_STATE_DIR": "/y"}) == Path("/y")
