"""One shared access token per account (and, for third-party platforms, per kind of token).

`SharedTokens(registry, account, kind)` is the `TokenStore` the client's `TokenManager` uses:
`read()` is one indexed SELECT; `flight()` is an exclusive `flock` on a lock file of the
account and kind, taken without blocking the event loop (polled every 20 ms). The kernel drops
the lock when its holder dies, SIGKILL included, so a killed run never leaves the others
waiting. Inside the flight a run reads the store again before it fetches: N runs that find the
token expired at once cause one fetch, and a run never refreshes over another's refresh.

Kinds: "access" (an account's access token, an authorizer account's of a third-party
platform included). Others are free-form text keys for tokens kept beside it, e.g. a
platform's "component" token and each account's "refresh:<appid>" token, which `save`
replaces whenever WeChat hands back a new one. `forget()` drops one kind.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from batchmove.registry.store import Registry, token_lock
from batchmove.wechat.gate import StoredToken

ACCESS = "access"
POLL_S = 0.02


class SharedTokens:
    """The `TokenStore` of one account and kind, kept in the registry."""

    def __init__(self, registry: Registry, account: str, kind: str = ACCESS, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.registry, self.account, self.kind = registry, account, kind
        self._wall = wall

    def __repr__(self) -> str:
        return f"SharedTokens({self.account!r}, {self.kind!r})"

    def read(self) -> StoredToken | None:
        row = self.registry.conn.execute(
            "SELECT value, renew_at, expires_at FROM tokens WHERE account = ? AND kind = ?",
            (self.account, self.kind)).fetchone()
        if row is None:
            return None
        value, renew_at, expires_at = row
        if expires_at is not None and self._wall() >= expires_at:
            return None
        return StoredToken(value, renew_at, expires_at)

    def save(self, token: StoredToken) -> None:
        with self.registry.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tokens (account, kind, value, renew_at, expires_at, "
                "saved_at) VALUES (?, ?, ?, ?, ?, ?)",
                (self.account, self.kind, token.value, token.renew_at, token.expires_at,
                 self._wall()))

    def forget(self) -> None:
        with self.registry.transaction() as conn:
            conn.execute("DELETE FROM tokens WHERE account = ? AND kind = ?",
                         (self.account, self.kind))

    @asynccontextmanager
    async def flight(self) -> AsyncIterator[None]:
        path = token_lock(self.registry.directory, self.account, self.kind)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(POLL_S)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
