"""Sandbox settings: what it starts with (`SandboxConfig`), what can change live (`Faults`).

Kept apart from the server so the CLI, the engine and tests build and validate settings without
starting anything. Invalid values raise `SandboxConfigError` (a `ValueError`), which the CLI turns
into a one-line usage error.
"""

from __future__ import annotations

import base64
import ipaddress
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from batchmove.sandbox.pushback import check_rate_limits
from batchmove.sandbox.tags import RESERVED_TAGS, tag_name_errcode

DEFAULT_APPID = "wxsandbox0000000001"
DEFAULT_SECRET = "sandbox-secret-not-real"
DEFAULT_PORT = 8765

# endpoint (URL after /cgi-bin/) -> (default daily quota of a normal account, POST required).
# Group and token figures come from wechat-api.md; the others are documented choices. Tag
# endpoints mirror their group counterparts: management 1,000, (un)tagging 100,000 calls a day.
ENDPOINTS: dict[str, tuple[int, bool]] = {
    "token": (2_000, False),
    "stable_token": (10_000, True),
    "groups/create": (1_000, True),
    "groups/get": (1_000, False),
    "groups/getid": (1_000, True),
    "groups/update": (1_000, True),
    "groups/delete": (1_000, True),
    "groups/members/update": (100_000, True),
    "groups/members/batchupdate": (100_000, True),
    "user/get": (500, False),
    "user/info/batchget": (5_000_000, True),
    "tags/create": (1_000, True),
    "tags/get": (1_000, False),
    "tags/update": (1_000, True),
    "tags/delete": (1_000, True),
    "tags/members/batchtagging": (100_000, True),  # counted in calls: 50 users a call
    "tags/members/batchuntagging": (100_000, True),
    "tags/getidlist": (1_000, True),  # like groups/getid; user/info/batchget reads 100 at once
    "user/tag/get": (500, True),  # like user/get
    "openapi/quota/get": (1_000, True),
    "clear_quota": (10, True),  # WeChat: 10 a month; the sandbox day stands in for the month
}
DEFAULT_DAILY_QUOTAS: dict[str, int] = {name: quota for name, (quota, _) in ENDPOINTS.items()}

_RATES = ("error_rate", "http_error_rate", "drop_rate", "hang_rate")


class SandboxConfigError(ValueError):
    """A sandbox setting has a value the sandbox cannot honour."""


def sandbox_openids(n: int, seed: int = 0) -> list[str]:
    """N distinct, deterministic, real-looking openids (`o` + 27 chars), the same for a given seed.

    Public so tests, benchmarks and sample data produce exactly the sandbox's followers.
    """
    return list(_generated_positions(n, seed))


def _generated_positions(n: int, seed: int) -> dict[str, int]:
    """`sandbox_openids` as openid -> position: the dict is its own "seen" set, so 10M
    followers cost one dict, not a dict, a set and a list."""
    if n < 0:
        raise SandboxConfigError(f"users must be >= 0, got {n}")
    rng = random.Random(f"batchmove-sandbox-openids:{seed}")
    positions: dict[str, int] = {}
    while len(positions) < n:
        # 21 random bytes are 28 urlsafe base64 chars ([A-Za-z0-9_-]); keep 27 of them
        openid = "o" + base64.urlsafe_b64encode(rng.randbytes(21)).decode("ascii")[:27]
        positions.setdefault(openid, len(positions))
    return positions


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: the only hosts the sandbox binds by default."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class _LiveSettings:
    """The settings a running sandbox can change: written once, shared by `Faults` (the live
    values) and `SandboxConfig` (the values it starts with)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    http_error_rate: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    minute_quota: int | None = None
    daily_quota: Mapping[str, int] = field(default_factory=dict)
    token_ttl: float = 7200.0
    fault_endpoints: Sequence[str] = ()  # faults hit only these endpoints; () = all
    # pushback like a real account (sandbox/pushback.py); all off by default
    rate_limit: Mapping[str, Sequence[float]] = field(default_factory=dict)
    rate_limit_hidden: bool = False  # enforce the limits, but quota/get does not report them
    latency_tail: float = 0.0  # > 1: lognormal latency, p99 = this x the median latency_ms
    busy_above: int | None = None  # calls arriving within 1 s beyond this are answered -1
    tag_visible_after: float = 0.0  # seconds a new tag answers 45159 to (un)tagging


_LIVE = tuple(f.name for f in fields(_LiveSettings))


@dataclass(frozen=True, slots=True)
class Faults(_LiveSettings):
    """Settings that can change while the sandbox runs (`set_faults`, `POST /sandbox/faults`).

    Rates are probabilities per /cgi-bin/ call. `minute_quota` None or 0 means no minute quota.
    `daily_quota` holds per-endpoint overrides of `DEFAULT_DAILY_QUOTAS`.
    """

    def __post_init__(self) -> None:
        try:
            check_rate_limits(self.rate_limit, ENDPOINTS)
        except ValueError as exc:
            raise SandboxConfigError(str(exc)) from None
        if self.busy_above is not None and (isinstance(self.busy_above, bool) or not isinstance(
                self.busy_above, int) or self.busy_above < 1):
            raise SandboxConfigError(f"busy_above must be an integer >= 1, got "
                                     f"{self.busy_above!r}")
        if self.latency_tail < 0 or self.tag_visible_after < 0:
            raise SandboxConfigError("latency_tail and tag_visible_after must be >= 0")
        for endpoint in self.fault_endpoints:
            if endpoint not in ENDPOINTS:
                raise SandboxConfigError(f"fault_endpoints: unknown endpoint {endpoint!r}")
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SandboxConfigError(f"{name} must be between 0 and 1, got {value}")
        for name in ("latency_ms", "jitter_ms"):
            if getattr(self, name) < 0:
                raise SandboxConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.token_ttl <= 0:
            raise SandboxConfigError(f"token_ttl must be > 0, got {self.token_ttl}")
        if self.minute_quota is not None and self.minute_quota < 0:
            raise SandboxConfigError(f"minute_quota must be >= 0, got {self.minute_quota}")
        for endpoint, limit in self.daily_quota.items():
            if endpoint not in ENDPOINTS:
                known = ", ".join(sorted(ENDPOINTS))
                raise SandboxConfigError(f"unknown endpoint {endpoint!r} (known: {known})")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise SandboxConfigError(f"daily quota of {endpoint} must be an integer >= 0")

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied; `daily_quota` entries merge into the existing ones."""
        unknown = sorted(set(changes) - set(_LIVE))
        if unknown:
            raise SandboxConfigError(f"unknown fault setting(s): {', '.join(unknown)}")
        values = dict(changes)
        if "daily_quota" in values:
            quota = values["daily_quota"]
            if not isinstance(quota, Mapping):
                raise SandboxConfigError("daily_quota must be an object {endpoint: n}")
            values["daily_quota"] = {**self.daily_quota, **quota}
        if "fault_endpoints" in values:
            chosen = values["fault_endpoints"]
            if isinstance(chosen, str) or not isinstance(chosen, list | tuple):
                raise SandboxConfigError("fault_endpoints must be a list of endpoints")
            values["fault_endpoints"] = tuple(chosen)
        for name, value in values.items():
            if name in ("daily_quota", "minute_quota", "fault_endpoints", "rate_limit",
                        "rate_limit_hidden", "busy_above"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SandboxConfigError(f"{name} must be a number, got {value!r}")
        minute = values.get("minute_quota")
        if minute is not None and (isinstance(minute, bool) or not isinstance(minute, int)):
            raise SandboxConfigError(f"minute_quota must be an integer or null, got {minute!r}")
        return replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["daily_quota"] = dict(self.daily_quota)
        data["rate_limit"] = {e: list(v) for e, v in self.rate_limit.items()}
        data["fault_endpoints"] = list(self.fault_endpoints)
        return data


# its live settings (`Faults`) come from `_LiveSettings`, declared once
@dataclass(frozen=True, slots=True)
class SandboxConfig(_LiveSettings):
    """Everything the sandbox starts with. Followers come from `from_file` (an export: their
    groups, tags and memberships too; seed.py), else `openids`, else `users_file`, else `users`
    generated from `seed`, all in group 0. `groups` are pre-created from id 100 (or after the
    export's highest id).
    `max_groups` counts every group, the three reserved ones included. `tags` are pre-created
    from id 100 (a separate id space); `max_tags` counts created tags only, not the reserved
    0/1/2. A tag with more than `tag_delete_limit` members cannot be deleted (45057).
    """

    appid: str = DEFAULT_APPID
    secret: str = DEFAULT_SECRET
    users: int = 200
    seed: int = 0
    users_file: str | None = None
    openids: Sequence[str] | None = None
    from_file: str | None = None  # an export file: followers, groups, tags (`[sandbox] from`)
    groups: Sequence[str] = ()
    max_groups: int = 500
    tags: Sequence[str] = ()
    max_tags: int = 100
    tag_delete_limit: int = 100_000
    page_size: int = 10_000
    token_grace: float = 300.0
    hang_seconds: float = 3600.0
    timeline_max: int = 5_000_000  # oldest arrivals are forgotten beyond this many

    def __post_init__(self) -> None:
        if not self.appid or not self.secret:
            raise SandboxConfigError("appid and secret must not be empty")
        for name in ("users", "max_groups", "page_size", "timeline_max", "max_tags",
                     "tag_delete_limit"):
            value = getattr(self, name)
            minimum = 0 if name in ("users", "max_tags", "tag_delete_limit") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SandboxConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        for name in ("token_grace", "hang_seconds"):
            if getattr(self, name) < 0:
                raise SandboxConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.from_file is not None and (self.users_file is not None
                                           or self.openids is not None):
            raise SandboxConfigError("from (an export file) gives the followers: leave out "
                                     "users_file and openids")
        if len(self.groups) + 3 > self.max_groups:
            raise SandboxConfigError(f"{len(self.groups)} groups do not fit in max_groups")
        self._check_tags()
        self.faults()  # validates the live settings too

    def _check_tags(self) -> None:
        if isinstance(self.tags, str):
            raise SandboxConfigError("tags must be a list of names, not a string")
        if len(self.tags) > self.max_tags:
            raise SandboxConfigError(f"{len(self.tags)} tags do not fit in max_tags")
        seen = set(RESERVED_TAGS.values())
        for name in self.tags:
            if tag_name_errcode(name):
                raise SandboxConfigError(
                    f"tag name {name!r} must be 1 to 30 bytes of UTF-8 and not blank")
            if name in seen:
                raise SandboxConfigError(f"tag name {name!r} is used twice (or is reserved)")
            seen.add(name)

    def faults(self) -> Faults:
        """The live settings this configuration starts with."""
        live = {name: getattr(self, name) for name in _LIVE}
        return Faults(**live | {
            "daily_quota": dict(self.daily_quota),
            "fault_endpoints": tuple(self.fault_endpoints),
            "rate_limit": {e: tuple(v) for e, v in self.rate_limit.items()}})

    def follower_openids(self) -> list[str]:
        """The followers, in the order `user/get` pages them."""
        return list(self.follower_positions())

    def follower_positions(self) -> dict[str, int]:
        """Each follower's position in `follower_openids()`; duplicates dropped, order kept.
        Streamed from the file: 10M followers never sit in a list and a dict at once."""
        if self.users_file is None and self.openids is None:
            return _generated_positions(self.users, self.seed)
        positions: dict[str, int] = {}
        try:
            for openid in self._listed():
                positions.setdefault(openid, len(positions))
        except OSError as exc:
            raise SandboxConfigError(f"cannot read users file: {exc}") from exc
        return positions

    def _listed(self) -> Iterator[str]:
        if self.openids is not None:
            yield from self.openids
            return
        assert self.users_file is not None
        with open(self.users_file, encoding="utf-8-sig") as handle:
            for line in handle:
                if openid := line.strip():
                    yield openid
