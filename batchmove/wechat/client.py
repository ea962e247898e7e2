"""The async WeChat client: the only module that speaks HTTP to WeChat.

Each HTTP attempt (token fetches included) passes the rate gate (`wechat.gate.RateGate`: the
account's budget shared with its other runs; none at `--rate 0`), is counted in `calls`, and
has its failures translated here, at one boundary, into the `batchmove.errors` tree:

    errcode != 0                    -> errcodes.error_for(errcode, errmsg, endpoint)
    a field missing or mistyped     -> ProtocolError naming the field (`answers`: each endpoint's
                                       answer declared once, decoded and checked in one pass)
    sent, never answered: timeout,  -> OutcomeUnknownError (it may have been applied)
      dropped, cut off, HTTP 500/502/504
    refused, HTTP 503, 408, 429     -> TransientError (not applied)
    other HTTP 4xx                  -> FatalApiError (wrong base URL or a proxy refusing us)

aiohttp's exception strings carry the request URL, and the URL carries the access token, so
messages are built here from the exception's type and passed through `redact()`; the foreign
exception is dropped with `raise ... from None` so no traceback can print it.

The client does not retry transient failures (the runner does, with tenacity). It does retry a
call after a token error, at most twice, through `TokenManager`, which refuses to loop.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
from yarl import URL

from batchmove.errors import FatalApiError, OutcomeUnknownError, TokenError, TransientError, redact
from batchmove.models import MAX_BATCH, MAX_USER_INFO_BATCH, Target
from batchmove.wechat import answers
from batchmove.wechat.answers import Ack, UserInfo
from batchmove.wechat.gate import RateGate, TokenStore, gated
from batchmove.wechat.quota import Quota, quota_of
from batchmove.wechat.token import HttpFetch, TokenManager, TokenSource

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter

__all__ = ["FollowerPage", "Quota", "WeChatClient"]

A = TypeVar("A", bound="answers.Answer | Ack")

MAX_TOKEN_RETRIES = 2  # retries of one call after token errors; then the token problem is fatal


@dataclass(frozen=True, slots=True)
class FollowerPage:
    """One page of `user/get` or `user/tag/get`; an empty `next_openid` (or an empty page) ends
    the list. `user/tag/get` reports no total: its pages have `total` 0 (a tag's member count is
    in `get_tags()`)."""

    total: int
    openids: list[str]
    next_openid: str


class WeChatClient:
    """One aiohttp session, every endpoint batchmove uses, and `call()` underneath them all."""

    def __init__(
        self,
        base_url: str = "https://api.weixin.qq.com",
        token_source: TokenSource | None = None,
        *,
        timeout: float = 15.0,
        limiter: AsyncLimiter | None = None,
        max_refreshes: int = 10,
        connector_limit: int = 100,
        gate: RateGate | None = None,
        token_store: TokenStore | None = None,
    ) -> None:
        if token_source is None:
            raise TypeError("WeChatClient needs a token_source")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.limiter = limiter
        self.gate = gate
        self.connector_limit = connector_limit
        self.calls: Counter[str] = Counter()
        self.raw: HttpFetch = self._request  # no access token: component endpoints' own
        self.tokens = TokenManager(token_source, self._request, max_refreshes=max_refreshes,
                                   store=token_store)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # endpoint -> URL with `_urls_token` in its query
        self._urls_token: str | None = None

    def __repr__(self) -> str:
        return f"WeChatClient({self.base_url!r}, {self.tokens.source!r})"

    async def __aenter__(self) -> WeChatClient:
        if self._session is not None:
            raise RuntimeError("WeChatClient is already open")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.connector_limit),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- the core ---------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        endpoint: str,
        *,
        answer: type[A],
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> A:
        """One API call with the access token; refreshes it (bounded) when WeChat rejects it.
        `answer` declares what the endpoint must return (`batchmove.wechat.answers`)."""
        token = await self.tokens.get()
        for attempt in range(MAX_TOKEN_RETRIES + 1):
            try:
                data = await self._request(method, endpoint, answer=answer, params=params,
                                           json=json, access_token=token)
            except TokenError as exc:
                if attempt == MAX_TOKEN_RETRIES:
                    raise FatalApiError(exc.errcode, (
                        f"the access token was rejected {attempt + 1} times in a row"
                        f" ({exc.errmsg}); not refreshing again"), endpoint) from None
                token = await self.tokens.refresh(token, exc)
                continue
            self.tokens.confirm(token)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self,
        method: str,
        endpoint: str,
        *,
        answer: type[A],
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        access_token: str | None = None,
    ) -> A:
        """One HTTP attempt: gate (or limiter), counter, and every foreign failure translated."""
        if self._session is None:
            raise RuntimeError("use `async with WeChatClient(...)` before calling it")
        attempt = partial(self._attempt, method, endpoint, answer, params, json, access_token)
        if self.gate is not None:
            return await gated(self.gate, endpoint, attempt)
        async with self.limiter or contextlib.nullcontext():  # --rate 0: nothing per call
            return await attempt()

    async def _attempt(self, method: str, endpoint: str, answer: type[A],
                       params: Mapping[str, str] | None, json: Mapping[str, Any] | None,
                       access_token: str | None) -> A:
        assert self._session is not None
        url = self._url(endpoint, access_token, params)
        headers = {}
        body: bytes | None = None
        if json is not None:
            body = orjson.dumps(json if isinstance(json, dict) else dict(json))
            headers["Content-Type"] = "application/json"
        self.calls[endpoint] += 1
        try:
            async with self._session.request(method, url, data=body, headers=headers) as resp:
                status, reason = resp.status, resp.reason or _reason(resp.status)
                content_type = resp.content_type
                raw = await resp.read()
        except TimeoutError:
            raise OutcomeUnknownError(None, f"no answer within {self.timeout:g}s",
                                      endpoint) from None
        except aiohttp.ClientError as exc:
            kind = TransientError if _not_sent(exc) else OutcomeUnknownError
            raise kind(None, _describe(exc), endpoint) from None
        return _decode(status, reason, content_type, raw, endpoint, answer)

    def _url(self, endpoint: str, access_token: str | None,
             params: Mapping[str, str] | None) -> URL:
        """The call's URL, query encoded. Without `params` it is kept per endpoint for the
        current token: aiohttp encoding the query on every call cost ~25 µs of CPU a call."""
        if params:
            query = dict(params)
            if access_token is not None:
                query["access_token"] = access_token
            return URL(f"{self.base_url}/cgi-bin/{endpoint}").with_query(query)
        if access_token != self._urls_token:
            self._urls, self._urls_token = {}, access_token
        url = self._urls.get(endpoint)
        if url is None:
            url = URL(f"{self.base_url}/cgi-bin/{endpoint}")
            if access_token is not None:
                url = url.with_query(access_token=access_token)
            self._urls[endpoint] = url
        return url

    # -- groups -----------------------------------------------------------------------------

    async def get_groups(self) -> list[Target]:
        """Every group of the account, from an answer read whole (`answers.GroupList`)."""
        found = await self.call("GET", "groups/get", answer=answers.GroupList)
        return [Target(g.id, g.name, g.count) for g in found.groups]

    async def create_group(self, name: str) -> Target:
        """Not idempotent: two creates make two groups (callers look the name up first)."""
        found = await self.call("POST", "groups/create", answer=answers.GroupCreated,
                                json={"group": {"name": name}})
        return Target(found.group.id, found.group.name)

    async def update_group(self, group_id: int, name: str) -> None:
        await self.call("POST", "groups/update", answer=Ack,
                        json={"group": {"id": group_id, "name": name}})

    async def delete_group(self, group_id: int) -> None:
        await self.call("POST", "groups/delete", answer=Ack, json={"group": {"id": group_id}})

    async def get_user_group(self, openid: str) -> int:
        found = await self.call("POST", "groups/getid", answer=answers.GroupOfUser,
                                json={"openid": openid})
        return found.groupid

    async def move_user(self, openid: str, to_groupid: int) -> None:
        await self.call("POST", "groups/members/update", answer=Ack,
                        json={"openid": openid, "to_groupid": to_groupid})

    async def move_users(self, openids: Sequence[str], to_groupid: int) -> None:
        """Up to 50 users in one call; larger batches are a bug, refused before any I/O."""
        _check_size(openids, MAX_BATCH, "move_users")
        await self.call("POST", "groups/members/batchupdate", answer=Ack,
                        json={"openid_list": list(openids), "to_groupid": to_groupid})

    # -- tags (what replaced groups in 2016) ------------------------------------------------

    async def get_tags(self) -> list[Target]:
        """Every tag, the reserved ones (0, 1, 2) included, with its live member count."""
        found = await self.call("GET", "tags/get", answer=answers.TagList)
        return [Target(t.id, t.name, t.count) for t in found.tags]

    async def create_tag(self, name: str) -> Target:
        """Names are unique per account (45157 for a taken one), so a retried create that had
        succeeded fails instead of duplicating; callers look the name up first all the same."""
        found = await self.call("POST", "tags/create", answer=answers.TagCreated,
                                json={"tag": {"name": name}})
        return Target(found.tag.id, found.tag.name)

    async def update_tag(self, tag_id: int, name: str) -> None:
        await self.call("POST", "tags/update", answer=Ack,
                        json={"tag": {"id": tag_id, "name": name}})

    async def delete_tag(self, tag_id: int) -> None:
        """Removes the tag from every user; refused (45057) above 100,000 members."""
        await self.call("POST", "tags/delete", answer=Ack, json={"tag": {"id": tag_id}})

    async def tag_users(self, openids: Sequence[str], tag_id: int) -> None:
        """Tag up to 50 users in one call (idempotent); larger batches are refused before I/O.
        All or nothing on WeChat's side: one user with 20 other tags fails the call (45059)."""
        _check_size(openids, MAX_BATCH, "tag_users")
        await self.call("POST", "tags/members/batchtagging", answer=Ack,
                        json={"openid_list": list(openids), "tagid": tag_id})

    async def untag_users(self, openids: Sequence[str], tag_id: int) -> None:
        """Untag up to 50 users in one call; a user without the tag is no error."""
        _check_size(openids, MAX_BATCH, "untag_users")
        await self.call("POST", "tags/members/batchuntagging", answer=Ack,
                        json={"openid_list": list(openids), "tagid": tag_id})

    async def get_user_tags(self, openid: str) -> list[int]:
        found = await self.call("POST", "tags/getidlist", answer=answers.TagsOfUser,
                                json={"openid": openid})
        return found.tagid_list

    async def get_tag_followers(self, tag_id: int, next_openid: str = "") -> FollowerPage:
        found = await self.call("POST", "user/tag/get", answer=answers.TagFollowerList,
                                json={"tagid": tag_id, "next_openid": next_openid})
        return FollowerPage(0, answers.openids_of(found, "user/tag/get"), found.next_openid)

    async def iter_tag_followers(self, tag_id: int) -> AsyncIterator[str]:
        """Every openid carrying the tag, page by page."""
        async for openid in _walk(lambda cursor: self.get_tag_followers(tag_id, cursor)):
            yield openid

    # -- followers and users ----------------------------------------------------------------

    async def get_followers(self, next_openid: str = "") -> FollowerPage:
        found = await self.call("GET", "user/get", answer=answers.FollowerList,
                                params={"next_openid": next_openid})
        return FollowerPage(found.total, answers.openids_of(found, "user/get"),
                            found.next_openid)

    async def iter_followers(self) -> AsyncIterator[str]:
        """Every follower's openid, page by page, until WeChat says there are no more."""
        async for openid in _walk(self.get_followers):
            yield openid

    async def batch_get_user_info(self, openids: Sequence[str],
                                  lang: str = "zh_CN") -> list[UserInfo]:
        """Up to 100 users in one call: each a `Follower` (with `groupid` and `tagid_list`) or
        a `NotFollower`; an answer that leaves out a user asked is a `ProtocolError`."""
        _check_size(openids, MAX_USER_INFO_BATCH, "batch_get_user_info")
        asked = list(openids)
        found = await self.call("POST", "user/info/batchget", answer=answers.UserInfoList,
                                json={"user_list": [{"openid": o, "lang": lang} for o in asked]})
        return answers.answered_for(found.user_info_list, asked, "user/info/batchget")

    # -- quotas -----------------------------------------------------------------------------

    async def get_quota(self, cgi_path: str) -> Quota:
        """Today's quota of one endpoint (`groups/get` or `/cgi-bin/groups/get`)."""
        path = cgi_path if cgi_path.startswith("/") else f"/cgi-bin/{cgi_path}"
        return quota_of(await self.call("POST", "openapi/quota/get", answer=answers.QuotaAnswer,
                                        json={"cgi_path": path}))

    async def clear_quota(self, appid: str) -> None:
        """Resets the account's quotas (10 times a month): only ever on a human's request."""
        await self.call("POST", "clear_quota", answer=Ack, json={"appid": appid})


async def _walk(fetch: Callable[[str], Awaitable[FollowerPage]]) -> AsyncIterator[str]:
    """The openids of successive pages until an empty page, an empty cursor or a cursor that
    does not move."""
    cursor = ""
    while True:
        page = await fetch(cursor)
        for openid in page.openids:
            yield openid
        if not page.openids or not page.next_openid or page.next_openid == cursor:
            return
        cursor = page.next_openid


def _check_size(openids: Sequence[str], limit: int, what: str) -> None:
    if isinstance(openids, str):
        raise TypeError(f"{what} takes a list of openids, not a string")
    if not openids:
        raise ValueError(f"{what} needs at least one openid")
    if len(openids) > limit:
        raise ValueError(f"{what} takes at most {limit} openids a call, got {len(openids)}")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _describe(exc: aiohttp.ClientError) -> str:
    """What went wrong, from the exception's type (its str() may hold the URL and token)."""
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"the server closed the connection without answering ({name})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror if exc.os_error.strerror else "connection failed"
        return redact(f"cannot connect to {exc.host}:{exc.port}: {detail} ({name})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer was cut off ({name})"
    if isinstance(exc, aiohttp.ClientOSError):
        return redact(f"connection error: {exc.strerror or 'unknown'} ({name})")
    return f"HTTP request failed ({name})"


def _not_sent(exc: aiohttp.ClientError) -> bool:
    """The request never reached the server (nothing can have been applied)."""
    return isinstance(exc, aiohttp.ClientConnectorError)


#: HTTP errors after which the call may have been applied (a gateway gave up waiting)
_MAYBE_APPLIED = frozenset({500, 502, 504})


def _decode(status: int, reason: str, content_type: str, raw: bytes,
            endpoint: str, answer: type[A]) -> A:
    """The endpoint's checked answer (WeChat may label it text/plain), or the matching error."""
    if status != 200:
        text = f"HTTP {status} {reason}".strip()
        if status in _MAYBE_APPLIED:
            raise OutcomeUnknownError(None, text, endpoint)
        if status >= 500 or status in (408, 429):
            raise TransientError(None, text, endpoint)
        raise FatalApiError(None, f"{text}: check the API base URL", endpoint)
    return answers.decode(raw, answer, endpoint, content_type)
