"""`openapi/quota/get`'s answer: today's calls of one endpoint and, where WeChat sets one, its
frequency limit (`rate_limit`: `call_count` calls per `refresh_second` seconds), which
`rate = "auto"` starts from."""

from __future__ import annotations

from dataclasses import dataclass

from msgspec import UnsetType

from batchmove.wechat.answers import QuotaAnswer


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


def quota_of(found: QuotaAnswer) -> Quota:
    """The checked answer (`answers.QuotaAnswer`: `rate_limit` is optional, and when present
    both its figures must be > 0) as a `Quota`."""
    figures, limit = found.quota, found.rate_limit
    if isinstance(limit, UnsetType):
        return Quota(figures.daily_limit, figures.used, figures.remain)
    return Quota(figures.daily_limit, figures.used, figures.remain, limit.call_count,
                 float(limit.refresh_second))
