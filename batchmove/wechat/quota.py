"""`openapi/quota/get`'s answer: today's calls of one endpoint and, where WeChat sets one, its
frequency limit (`rate_limit`: `call_count` calls per `refresh_second` seconds), which
`rate = "auto"` starts from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchmove.errors import ApiError

ENDPOINT = "openapi/quota/get"


@dataclass(frozen=True, slots=True)
class Quota:
    """`openapi/quota/get` for one endpoint: whether a job fits in today's calls, and how
    fast it may send them (None: no frequency limit reported)."""

    daily_limit: int
    used: int
    remain: int
    call_count: int | None = None
    refresh_second: float | None = None

    @property
    def rate_limit(self) -> float | None:
        """Calls per second the reported frequency limit allows."""
        if self.call_count and self.refresh_second:
            return self.call_count / self.refresh_second
        return None


def quota_of(data: dict[str, Any]) -> Quota:
    quota = data.get("quota") or {}
    limit = data.get("rate_limit")
    count = seconds = None
    if limit is not None:  # optional; when present it must make sense
        count, seconds = limit.get("call_count") if isinstance(limit, dict) else None, \
            limit.get("refresh_second") if isinstance(limit, dict) else None
        if not (_positive(count) and _positive(seconds)):
            raise ApiError(None, f"rate_limit is not {{call_count, refresh_second}} > 0: "
                                 f"{str(limit)[:80]}", ENDPOINT)
    return Quota(int(quota.get("daily_limit", 0)), int(quota.get("used", 0)),
                 int(quota.get("remain", 0)), None if count is None else int(count),
                 None if seconds is None else float(seconds))


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
