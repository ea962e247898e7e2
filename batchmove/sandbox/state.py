"""The sandbox's account as pure domain state: followers, groups, tags, tokens, quotas, call log.

No I/O and no aiohttp here: `SandboxState.handle` takes an endpoint, the method, the query and the
raw body, and returns the JSON object WeChat would answer. Time comes from an injectable clock, so
tests check token expiry and quota windows without sleeping. Every call is O(1) or O(batch)
(deleting a group excepted): a group keeps its live count, a follower's group is one int in an
array by position (10M followers: ~1.5 GB). What it starts with: seed.py (generated, or an
export file); tags: `TagBook` (tags.py); pushback: pushback.py.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from batchmove.sandbox.config import ENDPOINTS, Faults, SandboxConfig, SandboxConfigError
from batchmove.sandbox.members import RESERVED_GROUPS, Members, SandboxGroup, group_table
from batchmove.sandbox.pushback import Pushback
from batchmove.sandbox.quotas import QuotaBook
from batchmove.sandbox.seed import seed_of
from batchmove.sandbox.tags import TagBook
from batchmove.sandbox.tokens import TokenBook
from batchmove.sandbox.wire import (
    OK,
    ApiFault,
    Json,
    error_body,
    id_field,
    list_field,
    object_field,
    parse_body,
)

Handler = Callable[[Any], Json]

FIRST_GROUP_ID = 100
MAX_GROUP_NAME_CHARS = 30
MAX_MOVE_BATCH = 50
MAX_INFO_BATCH = 100
_SUBSCRIBE_EPOCH = 1_600_000_000


class SandboxState:
    """One Official Account: what the sandbox server reads and changes."""

    def __init__(self, config: SandboxConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SandboxConfig()
        self.appid = self.config.appid
        self.secret = self.config.secret
        self.faults: Faults = self.config.faults()
        self._clock = clock
        self._start = clock()
        seed = seed_of(self.config)
        self._position = seed.positions
        self.followers = list(self._position)
        self._group_of = seed.group_of
        self.members = Members(self._position, self.followers, self._group_of)
        self.groups = group_table(seed.groups, self._group_of)
        self._next_group_id = max([FIRST_GROUP_ID - 1, *self.groups]) + 1
        for name in self.config.groups:
            self._add_group(name)
        self.tags = TagBook(self.followers, self._position, self.config.tags,
                            max_tags=self.config.max_tags,
                            delete_limit=self.config.tag_delete_limit,
                            page_size=self.config.page_size, seeded=seed)
        self.calls: Counter[str] = Counter()
        #: every openid a move call applied, in order (tests check nothing is moved twice)
        self.move_log: list[str] = []
        self.timeline: deque[tuple[float, str]] = deque(maxlen=self.config.timeline_max)
        self.tokens = TokenBook(clock, self.config.token_grace)
        self.quotas = QuotaBook(clock)
        self.pushback = Pushback(clock)
        self._handlers: dict[str, Handler] = {
            "groups/create": self._create_group,
            "groups/get": self._get_groups,
            "groups/getid": self._get_group_id,
            "groups/update": self._update_group,
            "groups/delete": self._delete_group,
            "groups/members/update": self._move_one,
            "groups/members/batchupdate": self._move_batch,
            "tags/create": self.tags.create,
            "tags/get": self.tags.get,
            "tags/update": self.tags.update,
            "tags/delete": self.tags.delete,
            "tags/members/batchtagging": self.tags.batch_tag,
            "tags/members/batchuntagging": self.tags.batch_untag,
            "tags/getidlist": self.tags.id_list,
            "user/tag/get": self.tags.followers,
            "user/info/batchget": self._user_info,
            "openapi/quota/get": self._quota_get,
            "clear_quota": self._clear_quota,
        }

    # --- introspection and admin ------------------------------------------------------------

    @property
    def tag_log(self) -> list[tuple[str, str, int]]:
        """Every ("tag"/"untag", openid, tagid) a (un)tagging call applied, in order."""
        return self.tags.tag_log

    @property
    def issued_tokens(self) -> list[str]:
        """Every token ever issued, so tests can check none leaks into logs or reports."""
        return self.tokens.issued

    def now(self) -> float:
        """Seconds since the sandbox started, on its clock."""
        return self._clock() - self._start

    def set_faults(self, **changes: Any) -> Faults:
        """Change live settings (same keys as `POST /sandbox/faults`); returns the new ones."""
        self.faults = self.faults.updated(changes)
        return self.faults

    def snapshot(self) -> Json:
        """What `GET /sandbox/state` answers. `calls` counts every request that arrived
        (faulted and refused ones included); `quota_used` counts what the quotas count."""
        return {
            "groups": [{"id": g.id, "name": g.name, "count": g.count}
                       for g in self.groups.values()],
            "members": dict(self.members),
            "tags": self.tags.listing(),
            "user_tags": self.tags.user_tags_snapshot(),
            "calls": dict(self.calls),
            "quota_used": dict(self.quotas.used),
        }

    def timeline_calls(self) -> list[list[float | str]]:
        return [[t, endpoint] for t, endpoint in self.timeline]

    def record_arrival(self, endpoint: str) -> None:
        """Log one /cgi-bin/ request as it arrives, whatever happens to it afterwards."""
        self.calls[endpoint] += 1
        self.timeline.append((round(self._clock() - self._start, 6), endpoint))

    def move_directly(self, openid: str, to_groupid: int) -> None:
        """Move a user with no token or quota: "someone else moved this user"."""
        if openid not in self._position:
            raise ApiFault(40003)
        if to_groupid not in self.groups:
            raise ApiFault(40050)
        self._move(openid, to_groupid)

    def tag_directly(self, openid: str, tagid: int, untag: bool = False) -> None:
        """(Un)tag a user with no token, quota or log entry: "someone else tagged this user"."""
        self.tags.apply_directly(openid, tagid, untag)

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    def daily_limit(self, endpoint: str) -> int:
        override = self.faults.daily_quota.get(endpoint)
        return override if override is not None else ENDPOINTS[endpoint][0]

    # --- dispatch ---------------------------------------------------------------------------

    def handle(self, endpoint: str, method: str, query: Mapping[str, str], raw: bytes) -> Json:
        """Answer one /cgi-bin/ call as WeChat would: token, quota, method, body, then the work."""
        try:
            if endpoint == "token":
                return self._token(query)
            if endpoint == "stable_token":
                return self._stable_token(method, raw)
            self._raise_if(self.tokens.check(query.get("access_token")))
            self._admit(endpoint)
            if endpoint == "user/get":
                return self._followers(query.get("next_openid", ""))
            if ENDPOINTS[endpoint][1]:
                if method != "POST":
                    raise ApiFault(43002)
                body = parse_body(raw)
                self.pushback.check_visible(endpoint, body, self.faults.tag_visible_after)
                answer = self._handlers[endpoint](body)
                return self.pushback.created(answer) if endpoint == "tags/create" else answer
            return self._handlers[endpoint](None)
        except ApiFault as fault:
            return error_body(fault.code)

    def _admit(self, endpoint: str) -> None:
        self._raise_if(self.pushback.admit(endpoint, self.faults.rate_limit))
        minute = self.faults.minute_quota
        self._raise_if(self.quotas.admit(endpoint, self.daily_limit(endpoint), minute))

    @staticmethod
    def _raise_if(code: int) -> None:
        if code:
            raise ApiFault(code)

    # --- tokens -----------------------------------------------------------------------------

    def _check_credentials(self, grant_type: Any, appid: Any, secret: Any) -> None:
        """40002 bad grant_type, 41002/41004 missing, 40013 wrong appid, 40001 wrong secret."""
        if grant_type != "client_credential":
            raise ApiFault(40002)
        if not appid:
            raise ApiFault(41002)
        if not secret:
            raise ApiFault(41004)
        if appid != self.appid:
            raise ApiFault(40013)
        if secret != self.secret:
            raise ApiFault(40001)

    def _token(self, query: Mapping[str, str]) -> Json:
        self._check_credentials(query.get("grant_type"), query.get("appid"), query.get("secret"))
        self._admit("token")
        token, expires_in = self.tokens.classic(self.faults.token_ttl)
        return {"access_token": token, "expires_in": expires_in}

    def _stable_token(self, method: str, raw: bytes) -> Json:
        if method != "POST":
            raise ApiFault(43002)
        body = parse_body(raw)
        self._check_credentials(body.get("grant_type"), body.get("appid"), body.get("secret"))
        self._admit("stable_token")
        force = body.get("force_refresh") in (True, "true", 1)
        token, expires_in = self.tokens.stable(self.faults.token_ttl, force)
        return {"access_token": token, "expires_in": expires_in}

    # --- groups -----------------------------------------------------------------------------

    def _add_group(self, name: str) -> SandboxGroup:
        group = SandboxGroup(self._next_group_id, name)
        self.groups[group.id] = group
        self._next_group_id += 1
        return group

    def _create_group(self, body: Json) -> Json:
        name = _group_name(object_field(body, "group"))
        if len(self.groups) >= self.config.max_groups:
            raise ApiFault(45018)
        group = self._add_group(name)
        return {"group": {"id": group.id, "name": group.name}}

    def _get_groups(self, _: Any) -> Json:
        return {"groups": [{"id": g.id, "name": g.name, "count": g.count}
                           for g in self.groups.values()]}

    def _get_group_id(self, body: Json) -> Json:
        return {"groupid": self.members[self._openid(body.get("openid"))]}

    def _update_group(self, body: Json) -> Json:
        group = object_field(body, "group")
        gid = self._group_id(group.get("id"), modifiable=True)
        self.groups[gid].name = _group_name(group)
        return dict(OK)

    def _delete_group(self, body: Json) -> Json:
        gid = self._group_id(object_field(body, "group").get("id"), modifiable=True)
        group = self.groups.pop(gid)
        group_of = self._group_of
        for position in [i for i, g in enumerate(group_of) if g == gid]:  # rare: O(followers)
            group_of[position] = 0
        self.groups[0].count += group.count
        return dict(OK)

    # --- members ----------------------------------------------------------------------------

    def _move(self, openid: str, to_groupid: int) -> None:
        position = self._position[openid]
        current = self._group_of[position]
        if current != to_groupid:
            self.groups[current].count -= 1
            self.groups[to_groupid].count += 1
            self._group_of[position] = to_groupid

    def _move_one(self, body: Json) -> Json:
        gid = self._group_id(body.get("to_groupid"))
        openid = self._openid(body.get("openid"))
        self._move(openid, gid)
        self.move_log.append(openid)
        return dict(OK)

    def _move_batch(self, body: Json) -> Json:
        """All or nothing: one unknown openid fails the whole call with 40003."""
        openids = list_field(body, "openid_list", MAX_MOVE_BATCH)
        gid = self._group_id(body.get("to_groupid"))
        checked = [self._openid(openid) for openid in openids]
        for openid in checked:
            self._move(openid, gid)
        self.move_log.extend(checked)
        return dict(OK)

    # --- users ------------------------------------------------------------------------------

    def _followers(self, next_openid: str) -> Json:
        """A page of followers. The last page's `next_openid` is its last openid; asking for
        the page after it answers count 0, no `data`, `next_openid` "" (what wechatpy's
        `iter_followers` stops on)."""
        start = 0
        if next_openid:
            position = self._position.get(next_openid)
            if position is None:
                raise ApiFault(40003)
            start = position + 1
        page = self.followers[start:start + self.config.page_size]
        total = len(self.followers)
        if not page:
            return {"total": total, "count": 0, "next_openid": ""}
        return {"total": total, "count": len(page), "data": {"openid": page},
                "next_openid": page[-1]}

    def _user_info(self, body: Json) -> Json:
        users = list_field(body, "user_list", MAX_INFO_BATCH)
        infos: list[Json] = []
        for user in users:
            if not isinstance(user, dict) or not isinstance(user.get("openid"), str):
                raise ApiFault(47001)
            infos.append(self._info(user["openid"], str(user.get("lang") or "zh_CN")))
        return {"user_info_list": infos}

    def _info(self, openid: str, lang: str) -> Json:
        position = self._position.get(openid)
        if position is None:
            return {"subscribe": 0, "openid": openid}
        group = self._group_of[position]
        return {
            "subscribe": 1, "openid": openid, "nickname": f"用户{position}", "sex": 0,
            "language": lang, "city": "", "province": "", "country": "", "headimgurl": "",
            "subscribe_time": _SUBSCRIBE_EPOCH + position, "remark": "", "groupid": group,
            "tagid_list": self.tags.tag_ids_of(openid), "subscribe_scene": "ADD_SCENE_OTHERS",
            "qr_scene": 0, "qr_scene_str": "",
        }

    # --- quota ------------------------------------------------------------------------------

    def _quota_get(self, body: Json) -> Json:
        path = body.get("cgi_path")
        if not isinstance(path, str):
            raise ApiFault(47001)
        endpoint = path.removeprefix("/").removeprefix("cgi-bin/")
        if endpoint not in ENDPOINTS:
            raise ApiFault(76021)
        limit, used = self.daily_limit(endpoint), self.quotas.used_today(endpoint)
        quota = {"daily_limit": limit, "used": used, "remain": max(0, limit - used)}
        return self.pushback.reported({**OK, "quota": quota}, endpoint, self.faults)

    def _clear_quota(self, body: Json) -> Json:
        appid = body.get("appid")
        if not appid:
            raise ApiFault(41002)
        if appid != self.appid:
            raise ApiFault(40013)
        self.quotas.clear()
        return dict(OK)

    # --- validation -------------------------------------------------------------------------

    def _openid(self, value: Any) -> str:
        """The follower's own str (the move log then holds no copy from a request body: 10M
        moved users would be ~0.8 GB of copies)."""
        position = self._position.get(value) if isinstance(value, str) else None
        if position is None:
            raise ApiFault(40003)
        return self.followers[position]

    def _group_id(self, value: Any, modifiable: bool = False) -> int:
        """A known group id (ints or digit strings, as WeChat's lenient parser takes)."""
        gid = id_field(value, 40050)
        if modifiable and gid in RESERVED_GROUPS:
            raise ApiFault(45016)
        if gid not in self.groups:
            raise ApiFault(40050)
        return gid


def _group_name(group: Json) -> str:
    """40051 for a missing or blank name, 45017 for one over 30 characters."""
    name = group.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiFault(40051)
    if len(name) > MAX_GROUP_NAME_CHARS:
        raise ApiFault(45017)
    return name


__all__ = ["ApiFault", "SandboxConfigError", "SandboxGroup", "SandboxState", "error_body"]
