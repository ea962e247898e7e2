"""The fourth token source: an account's token through a third-party platform (component).

An agency's platform holds, per authorised account, an `authorizer_refresh_token`; WeChat
turns it into that account's access token (`api_authorizer_token`, 2 h), given the platform's
own `component_access_token` (`api_component_token`, 2 h), which needs the latest
`component_verify_ticket` WeChat pushed (every 10 min, valid 12 h). Pitfalls users of the SDKs
report, and what this module does about each:

- tokens fetched again by every process, burning the daily quota: the component token is
  cached in a `PlatformStore` shared by every process of the machine (the account registry's,
  `registry.platform`) until shortly before it expires, and fetched under its cross-process
  lock; an authorizer's token is an account's access token like any other, cached once, by
  the client's `TokenManager` in the account's `TokenStore` (single-flight across processes);
- a refresh token lost on restart (61023): it lives in the store and is replaced the moment
  WeChat returns a new one; a platform with none stored seeds them from
  `api_get_authorizer_list` (also `batchmove accounts sync`);
- a stale ticket: one older than 12 h is never sent; the run stops with one line (exit 3) and
  the same command resumes once a fresh ticket arrives (61005/61006 from WeChat likewise);
- keys colliding between platforms: every key carries the component appid.

Every answer is checked (`wechat.answers`): each endpoint's answer is declared below, and a
missing or mistyped field is a `ProtocolError` naming it, never a default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Protocol, TypeVar

import msgspec
from msgspec import Meta, Struct

from batchmove.errors import ApiError, FatalApiError, TokenError
from batchmove.wechat.answers import Answer, NonEmpty
from batchmove.wechat.token import HttpFetch, Token, TokenSource

TICKET_LIFETIME = 12 * 3600.0
STORE_MARGIN = 300.0  # a stored token this close to its expiry is fetched again
LIST_PAGE = 500
_TICKET_CODES = (61005, 61006)


class PlatformStore(Protocol):
    """Where a platform's ticket, component token and refresh tokens live, shared by every
    process of the machine; every method names the platform (its component appid). An
    authorizer's token is not kept here: it is that account's own access token, in the
    client's `TokenStore`. Times are wall-clock seconds."""

    @property
    def where(self) -> str:
        """Where the store is, for messages."""

    def token(self, component: str) -> tuple[str, float] | None:
        """The stored component token and when it expires."""

    def put_token(self, component: str, value: str, expires_at: float) -> None: ...

    def locked(self, component: str) -> AbstractAsyncContextManager[None]:
        """The machine-wide single flight of the component token: re-read inside it before
        fetching."""

    def refresh_token(self, component: str, authorizer: str) -> str | None: ...

    def put_refresh_tokens(self, component: str, tokens: Mapping[str, str]) -> None:
        """Store or replace refresh tokens (authorizer appid -> token) at once."""

    def authorizers(self, component: str) -> list[str]:
        """The authorizer appids with a stored refresh token, sorted."""

    def ticket(self, component: str) -> tuple[str, float] | None:
        """The latest ticket received and when it arrived."""

    def put_ticket(self, component: str, ticket: str, pushed_at: float) -> None: ...


class TicketSource(Protocol):
    """The latest `component_verify_ticket` and when it was pushed (None: unknown)."""

    @property
    def describe(self) -> str: ...

    async def read(self) -> tuple[str, float | None]: ...


Lifetime = Annotated[int, Meta(ge=1)]
C = TypeVar("C", bound=Answer)


class ComponentToken(Answer, frozen=True, gc=False, kw_only=True):
    """`component/api_component_token`."""

    component_access_token: NonEmpty
    expires_in: Lifetime


class AuthorizerToken(Answer, frozen=True, gc=False, kw_only=True):
    """`component/api_authorizer_token`: the refresh token may come back rotated."""

    authorizer_access_token: NonEmpty
    expires_in: Lifetime
    authorizer_refresh_token: NonEmpty


class Authorizer(Struct, frozen=True, gc=False):
    authorizer_appid: NonEmpty
    refresh_token: NonEmpty


class AuthorizerList(Answer, frozen=True, gc=False, kw_only=True):
    """`component/api_get_authorizer_list`, one page."""

    total_count: Annotated[int, Meta(ge=0)]
    authorizers: list[Authorizer] = msgspec.field(name="list")  # WeChat's key is `list`


class Nick(Struct, frozen=True, gc=False):
    nick_name: NonEmpty


class AuthorizerInfo(Answer, frozen=True, gc=False, kw_only=True):
    """`component/api_get_authorizer_info` (the fields batchmove reads)."""

    authorizer_info: Nick


class ComponentClient:
    """A platform's component endpoints over the client's raw `HttpFetch`, tokens cached."""

    def __init__(self, component_appid: str, secret: str, ticket: TicketSource,
                 store: PlatformStore, *, clock: Callable[[], float] = time.time) -> None:
        self.appid = component_appid
        self.__secret = secret
        self.ticket = ticket
        self.store = store
        self.clock = clock

    def __repr__(self) -> str:
        return f"ComponentClient({self.appid!r}, {self.ticket.describe})"

    def cached(self) -> tuple[str, float] | None:
        """The stored token if still good for STORE_MARGIN seconds, and its remaining life."""
        found = self.store.token(self.appid)
        if found is None:
            return None
        left = found[1] - self.clock()
        return (found[0], left) if left > STORE_MARGIN else None

    async def token(self, http: HttpFetch, *, rejected: str | None = None) -> str:
        """The component_access_token: cached, else fetched once for every process.
        `rejected`: WeChat just refused this one, so it is not reused."""
        found = self.cached()
        if found is not None and found[0] != rejected:
            return found[0]
        async with self.store.locked(self.appid):
            found = self.cached()
            if found is not None and found[0] != rejected:
                return found[0]
            return await self._fetch(http)

    async def _fetch(self, http: HttpFetch) -> str:
        endpoint = "component/api_component_token"
        ticket = await self._fresh_ticket()
        body = {"component_appid": self.appid, "component_appsecret": self.__secret,
                "component_verify_ticket": ticket}
        try:
            found = await http("POST", endpoint, answer=ComponentToken, json=body)
        except ApiError as exc:
            raise self._refused(exc) from None
        value = found.component_access_token
        self.store.put_token(self.appid, value, self.clock() + found.expires_in)
        return value

    async def _fresh_ticket(self) -> str:
        ticket, pushed_at = await self.ticket.read()
        if pushed_at is not None:
            age = self.clock() - pushed_at
            if age >= TICKET_LIFETIME:
                raise FatalApiError(61005, (
                    f"the component_verify_ticket from {self.ticket.describe} is "
                    f"{age / 3600:.1f} h old (WeChat accepts 12 h): check the ticket receiver; "
                    "run the same command again once a fresh ticket has arrived"),
                    "component/api_component_token")
        return ticket

    def _refused(self, exc: ApiError) -> FatalApiError:
        endpoint = "component/api_component_token"
        if exc.errcode in _TICKET_CODES:
            return FatalApiError(exc.errcode, (
                f"WeChat refused the component_verify_ticket from {self.ticket.describe} "
                f"({exc.errmsg}): check the ticket receiver; run the same command again once "
                "a fresh ticket has arrived"), endpoint)
        if isinstance(exc, TokenError) or exc.errcode in (40013, 40125):
            return FatalApiError(exc.errcode, (
                f"WeChat refused the component appid/secret ({exc.errmsg}): check the "
                "platform's appid and secret"), endpoint)
        return exc if isinstance(exc, FatalApiError) else FatalApiError(
            exc.errcode, exc.errmsg, endpoint)

    async def call(self, http: HttpFetch, name: str, body: Mapping[str, Any],
                   answer: type[C]) -> C:
        """`component/<name>` with the component token; once more with a new one if refused."""
        rejected: str | None = None
        for attempt in range(2):
            token = await self.token(http, rejected=rejected)
            try:
                return await http("POST", f"component/{name}", answer=answer,
                                  params={"component_access_token": token},
                                  json={"component_appid": self.appid, **body})
            except TokenError:
                if attempt:
                    raise
                rejected = token
        raise AssertionError("unreachable")  # pragma: no cover

    async def authorizer_list(self, http: HttpFetch) -> dict[str, str]:
        """Every authorizer's refresh token (authorizer appid -> token), 500 a page."""
        found: dict[str, str] = {}
        while True:
            page = await self.call(http, "api_get_authorizer_list",
                                   {"offset": len(found), "count": LIST_PAGE}, AuthorizerList)
            found.update((a.authorizer_appid, a.refresh_token) for a in page.authorizers)
            if not page.authorizers or len(found) >= page.total_count:
                return found

    async def seed(self, http: HttpFetch) -> dict[str, str]:
        """Store every authorizer's refresh token from WeChat's list; the list."""
        tokens = await self.authorizer_list(http)
        self.store.put_refresh_tokens(self.appid, tokens)
        return tokens

    async def authorizer_name(self, http: HttpFetch, authorizer: str) -> str:
        found = await self.call(http, "api_get_authorizer_info",
                                {"authorizer_appid": authorizer}, AuthorizerInfo)
        return found.authorizer_info.nick_name


class ComponentTokenSource(TokenSource):
    """One authorizer account's access token through its platform (see the module docstring).

    It only fetches: the client's `TokenManager` caches the token, in the account's slot of
    the registry (`engine.backend`: the same `TokenStore` as any account's token, keyed by the
    API address, the component appid and the authorizer appid), and fetches it single-flight
    across processes. A source used without a store fetches once per client."""

    external = False

    def __init__(self, component: ComponentClient, authorizer_appid: str) -> None:
        self.component = component
        self.authorizer = authorizer_appid

    @property
    def describe(self) -> str:
        return f"component={self.component.appid!r}, authorizer={self.authorizer!r}"

    async def fetch(self, http: HttpFetch, *, force: bool = False) -> Token:
        endpoint = "component/api_authorizer_token"
        store, appid = self.component.store, self.component.appid
        refresh = store.refresh_token(appid, self.authorizer)
        if refresh is None:
            refresh = (await self.component.seed(http)).get(self.authorizer)
        if refresh is None:
            raise FatalApiError(61003, (
                f"the account {self.authorizer} is not among the authorizers of the platform "
                f"{appid} (api_get_authorizer_list): it must authorise the platform first"),
                endpoint)
        try:
            data = await self._exchange(http, refresh)
        except FatalApiError as exc:
            if exc.errcode != 61023:
                raise
            # rotated by another tool of the agency? WeChat's list has the current one
            again = (await self.component.seed(http)).get(self.authorizer)
            if again is None or again == refresh:
                raise FatalApiError(61023, (
                    f"WeChat no longer accepts the refresh token of {self.authorizer} "
                    "(61023): the account must authorise the platform again"),
                    endpoint) from None
            refresh = again
            data = await self._exchange(http, refresh)
        if data.authorizer_refresh_token != refresh:
            store.put_refresh_tokens(appid, {self.authorizer: data.authorizer_refresh_token})
        return Token(data.authorizer_access_token, float(data.expires_in))

    async def _exchange(self, http: HttpFetch, refresh: str) -> AuthorizerToken:
        return await self.component.call(http, "api_authorizer_token", {
            "authorizer_appid": self.authorizer, "authorizer_refresh_token": refresh},
            AuthorizerToken)
