"""A third-party platform's tickets, tokens and refresh tokens, kept in the account registry.

The `PlatformStore` of `wechat.component`, over the registry's `tokens` table: everything of one
platform is filed under the account `account_key("component", <component appid>)`, so two
platforms on one machine never share a row, with kinds

    "component"            the component_access_token (expires_at: when WeChat drops it)
    "refresh:<appid>"      an authorised account's authorizer_refresh_token (no expiry: valid
                           until revoked)
    "ticket"               the latest component_verify_ticket, `saved_at` when it arrived

An authorised account's `authorizer_access_token` is not filed here: it is that account's
access token, kept once in the account's own slot (`registry.account_of`, kind "access") by
the client's `TokenManager`, like any account's token.

Tokens go through `SharedTokens` (one indexed read; `flight()` is the cross-process lock of
the single-flight fetch); the list of authorizers and the ticket's arrival time are read here.
The registry file is mode 600 in a mode-700 directory; no value ever enters a message.

A long-lived process that only reads and stores tickets (`ticket receive`, a push every 10
minutes) passes `keep_open=False`: the registry is closed after each ticket read or stored
(the other methods leave it open), so the process never holds it between pushes, and another
that meets a damaged file can set it aside.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

from batchmove.registry.store import Registry, account_key
from batchmove.registry.tokens import SharedTokens
from batchmove.wechat.gate import StoredToken

_COMPONENT = "component"
_REFRESH = "refresh:"
_TICKET = "ticket"


class RegistryPlatformStore:
    """`wechat.component.PlatformStore` in the machine's account registry."""

    def __init__(self, registry: Registry | None = None, *,
                 wall: Callable[[], float] = time.time, keep_open: bool = True) -> None:
        self.registry = registry if registry is not None else Registry()
        self._wall = wall
        self._keep_open = keep_open

    def _done(self) -> None:
        if not self._keep_open:
            self.registry.close()

    def __repr__(self) -> str:
        return f"RegistryPlatformStore({str(self.registry.path)!r})"

    @property
    def where(self) -> str:
        return str(self.registry.path)

    def _tokens(self, component: str, kind: str) -> SharedTokens:
        return SharedTokens(self.registry, account_key("component", component), kind,
                            wall=self._wall)

    def token(self, component: str) -> tuple[str, float] | None:
        found = self._tokens(component, _COMPONENT).read()
        if found is None or found.expires_at is None:
            return None
        return found.value, found.expires_at

    def put_token(self, component: str, value: str, expires_at: float) -> None:
        self._tokens(component, _COMPONENT).save(StoredToken(value, None, expires_at))

    def locked(self, component: str) -> AbstractAsyncContextManager[None]:
        return self._tokens(component, _COMPONENT).flight()

    def refresh_token(self, component: str, authorizer: str) -> str | None:
        found = self._tokens(component, _REFRESH + authorizer).read()
        return found.value if found is not None else None

    def put_refresh_tokens(self, component: str, tokens: Mapping[str, str]) -> None:
        account, now = account_key("component", component), self._wall()
        with self.registry.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO tokens (account, kind, value, renew_at, expires_at, "
                "saved_at) VALUES (?, ?, ?, NULL, NULL, ?)",
                [(account, _REFRESH + appid, value, now) for appid, value in tokens.items()])

    def authorizers(self, component: str) -> list[str]:
        rows = self.registry.conn.execute(
            "SELECT kind FROM tokens WHERE account = ? AND kind LIKE 'refresh:%' ORDER BY kind",
            (account_key("component", component),)).fetchall()
        return [str(kind).removeprefix(_REFRESH) for (kind,) in rows]

    def ticket(self, component: str) -> tuple[str, float] | None:
        try:
            row = self.registry.conn.execute(
                "SELECT value, saved_at FROM tokens WHERE account = ? AND kind = ?",
                (account_key("component", component), _TICKET)).fetchone()
        finally:
            self._done()
        return (str(row[0]), float(row[1])) if row else None

    def put_ticket(self, component: str, ticket: str, pushed_at: float) -> None:
        try:
            with self.registry.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO tokens (account, kind, value, renew_at, "
                    "expires_at, saved_at) VALUES (?, ?, ?, NULL, NULL, ?)",
                    (account_key("component", component), _TICKET, ticket, pushed_at))
        finally:
            self._done()
