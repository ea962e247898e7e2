"""What each WeChat endpoint must answer, declared once, and the one function that checks it.

Every answer the client accepts is decoded straight into the frozen msgspec `Struct` its
endpoint declares below. A field that is missing, or present with the wrong type, is a
`ProtocolError` naming the endpoint and the field (`groups`, `user_info_list[3].groupid`): the
runner retries it like any transient failure, then stops the run (exit 3). Nothing is read
with a default: `{"errcode": 0}` from `groups/get` is not "the account has no groups".

The one default is WeChat's own convention: an answer with a payload carries no `errcode`, so
`errcode` is 0 when absent (`Answer`); answers without a payload (`Ack`) must carry it.
Non-followers are a documented answer, not a fault: `user/info/batchget` gives a user who does
not follow the account as `{"subscribe": 0, "openid"}` only, so `UserInfo` is either a
`Follower` (subscribe 1: `groupid` and `tagid_list` required) or a `NotFollower` (subscribe 0);
any other `subscribe` is a protocol error.

Adding an endpoint (e.g. the component platform's, or `rate_limit` of `openapi/quota/get`):
declare a `Struct` subclass of `Answer` with the fields the endpoint must return, and call
`client.call(method, endpoint, answer=ThatStruct, json=...)`. A field WeChat legitimately leaves
out is typed `X | UnsetType = UNSET` (see `FollowerList.data`) and checked where it is used;
value rules go in `Annotated[int, Meta(gt=0)]`. The checks cost nothing extra: msgspec decodes
and validates a 100-user `user/info/batchget` answer (30 kB) in ~42 µs, where `orjson.loads`
into dicts took ~73 µs (`bench/answers.py`).
"""

from __future__ import annotations

import json as jsonlib
import re
from typing import Annotated, Any, TypeVar

import msgspec
import orjson
from msgspec import UNSET, Meta, Struct, UnsetType

from batchmove.errors import ProtocolError
from batchmove.wechat.errcodes import error_for

T = TypeVar("T", bound="Answer | Ack")

NonEmpty = Annotated[str, Meta(min_length=1)]


class Answer(Struct, frozen=True, gc=False, kw_only=True):
    """An answer with a payload; `errcode` is absent (0) on success."""

    errcode: int = 0


class Ack(Struct, frozen=True, gc=False):
    """`{"errcode": 0, "errmsg": "ok"}`: the answer of a call that changes something."""

    errcode: int


class TokenAnswer(Answer, frozen=True, gc=False, kw_only=True):
    """`token` and `stable_token`."""

    access_token: NonEmpty
    expires_in: int


class GroupEntry(Struct, frozen=True, gc=False):
    id: int
    name: str
    count: int


class GroupList(Answer, frozen=True, gc=False, kw_only=True):
    """`groups/get`: every group of the account, read whole."""

    groups: list[GroupEntry]


class TagList(Answer, frozen=True, gc=False, kw_only=True):
    """`tags/get`: every tag of the account, read whole."""

    tags: list[GroupEntry]


class Created(Struct, frozen=True, gc=False):
    id: int
    name: str


class GroupCreated(Answer, frozen=True, gc=False, kw_only=True):
    group: Created


class TagCreated(Answer, frozen=True, gc=False, kw_only=True):
    tag: Created


class GroupOfUser(Answer, frozen=True, gc=False, kw_only=True):
    """`groups/getid`."""

    groupid: int


class TagsOfUser(Answer, frozen=True, gc=False, kw_only=True):
    """`tags/getidlist`."""

    tagid_list: list[int]


class Openids(Struct, frozen=True, gc=False):
    openid: list[str]


class FollowerList(Answer, frozen=True, gc=False, kw_only=True):
    """`user/get`. `data` is absent from an empty page, and only then (`openids_of`)."""

    total: int
    count: int
    data: Openids | UnsetType = UNSET
    next_openid: str


class TagFollowerList(Answer, frozen=True, gc=False, kw_only=True):
    """`user/tag/get`: like `user/get` without `total`."""

    count: int
    data: Openids | UnsetType = UNSET
    next_openid: str


class Follower(Struct, frozen=True, gc=False, tag_field="subscribe", tag=1):
    """A follower as `user/info/batchget` describes them (the fields batchmove reads)."""

    openid: str
    groupid: int
    tagid_list: list[int]


class NotFollower(Struct, frozen=True, gc=False, tag_field="subscribe", tag=0):
    """An openid that does not follow the account: WeChat says only that."""

    openid: str


UserInfo = Follower | NotFollower


class UserInfoList(Answer, frozen=True, gc=False, kw_only=True):
    """`user/info/batchget`: one entry per openid asked (`client.batch_get_user_info`)."""

    user_info_list: list[UserInfo]


class QuotaFigures(Struct, frozen=True, gc=False):
    daily_limit: int
    used: int
    remain: int


class RateLimit(Struct, frozen=True, gc=False):
    """`call_count` calls per `refresh_second` seconds."""

    call_count: Annotated[int, Meta(gt=0)]
    refresh_second: Annotated[float, Meta(gt=0)]


class QuotaAnswer(Answer, frozen=True, gc=False, kw_only=True):
    """`openapi/quota/get`; `rate_limit` only where the platform sets a frequency limit."""

    quota: QuotaFigures
    rate_limit: RateLimit | UnsetType = UNSET


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode(raw: bytes, answer: type[T], endpoint: str, content_type: str = "") -> T:
    """The endpoint's answer from a 200 response's body, or the error it stands for: WeChat's
    errcode (`errcodes.error_for`), or a `ProtocolError` naming the field."""
    decoder = _DECODERS.get(answer)
    if decoder is None:
        decoder = _DECODERS[answer] = msgspec.json.Decoder(answer)
    try:  # the usual answer: decoded and checked in one pass, in C
        found: T = decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    else:
        if found.errcode == 0:
            return found
    return _checked(_loads(raw, endpoint, content_type), answer, endpoint)


def _checked(data: dict[str, Any], answer: type[T], endpoint: str) -> T:
    """The slow path: an errcode answer, or the field that is wrong."""
    errcode = data.get("errcode", 0)
    try:
        code = 0 if errcode is None else int(errcode)
    except (TypeError, ValueError):
        raise ProtocolError(None, f"`errcode` is not a number ({str(errcode)[:20]!r})",
                            endpoint, "errcode") from None
    if code != 0:
        raise error_for(code, str(data.get("errmsg", "")), endpoint)
    try:
        return msgspec.convert(data, answer)
    except msgspec.ValidationError as exc:
        raise protocol_error(str(exc), endpoint) from None


def _loads(raw: bytes, endpoint: str, content_type: str) -> dict[str, Any]:
    """The JSON object of a body (bad UTF-8 and raw control characters tolerated); anything
    else (an HTML page from a proxy, a cut-off body) is a protocol error."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            data = jsonlib.loads(raw.decode("utf-8", errors="replace"), strict=False)
        except ValueError:
            data = None
    if not isinstance(data, dict):
        raise ProtocolError(None, (f"the body is not a JSON object (HTTP 200, "
                                   f"{content_type or 'no content type'}, {len(raw)} bytes)"),
                            endpoint, "(body)")
    return data


_PATH = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`(?P<more>[^,]*), got `(?P<got>[^`]+)`$")


def protocol_error(message: str, endpoint: str) -> ProtocolError:
    """msgspec's validation message as a `ProtocolError`: the field first, then what is
    wrong with it (`user_info_list[3].groupid` is a str, not an int)."""
    parts = _PATH.match(message)
    what = parts["what"] if parts else message
    path = (parts["path"] or "").lstrip(".") if parts else ""
    if (missing := _MISSING.match(what)) is not None:
        field = f"{path}.{missing['name']}" if path else missing["name"]
        return ProtocolError(None, f"`{field}` is missing", endpoint, field)
    if (expected := _EXPECTED.match(what)) is not None:
        want = expected["want"] + expected["more"]
        shown = f"`{path}`" if path else "the answer"
        return ProtocolError(None, f"{shown} is {_article(expected['got'])}, not {want}",
                             endpoint, path)
    shown = f"`{path}`: " if path else ""
    return ProtocolError(None, f"{shown}{what[:1].lower()}{what[1:]}", endpoint, path)


def _article(kind: str) -> str:
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


def openids_of(page: FollowerList | TagFollowerList, endpoint: str) -> list[str]:
    """A page's openids: `data` present exactly when `count` > 0, holding `count` openids."""
    if isinstance(page.data, UnsetType):
        if page.count:
            raise ProtocolError(None, f"`data` is missing from a page of {page.count}",
                                endpoint, "data")
        return []
    if len(page.data.openid) != page.count:
        raise ProtocolError(None, f"`data.openid` has {len(page.data.openid)} openids, "
                                  f"`count` says {page.count}", endpoint, "data.openid")
    return page.data.openid


def answered_for(users: list[UserInfo], asked: list[str], endpoint: str) -> list[UserInfo]:
    """Every openid asked has its entry (in any order): a user left out cannot be told from a
    user not read, so that answer is refused whole."""
    listed = {u.openid for u in users}
    missing = [o for o in asked if o not in listed]
    if missing:
        raise ProtocolError(None, (f"`user_info_list` has no entry for {len(missing)} of the "
                                   f"{len(asked)} openids asked"), endpoint, "user_info_list")
    return users
