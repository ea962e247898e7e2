"""Daily per-endpoint quotas and the optional per-minute quota, on the sandbox clock.

Windows are counted from the sandbox's start: minute k covers [60k, 60k+60) seconds, day k covers
[86400k, 86400k+86400). A call is counted once it is authenticated and not refused by a quota.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

DAILY_QUOTA_REACHED = 45009
MINUTE_QUOTA_REACHED = 45011
_SELF_LIMITED = "clear_quota"  # clearing quotas must not reset its own counter


class QuotaBook:
    """Counts calls per endpoint and per minute; O(1) per call."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start = clock()
        self._day = 0
        self._minute = 0
        self._minute_used = 0
        self.used: Counter[str] = Counter()

    def admit(self, endpoint: str, daily_limit: int, minute_limit: int | None) -> int:
        """Count one call and return 0, or return the quota errcode without counting it."""
        self._roll()
        if minute_limit and self._minute_used >= minute_limit:
            return MINUTE_QUOTA_REACHED
        if self.used[endpoint] >= daily_limit:
            return DAILY_QUOTA_REACHED
        self._minute_used += 1
        self.used[endpoint] += 1
        return 0

    def used_today(self, endpoint: str) -> int:
        self._roll()
        return self.used[endpoint]

    def clear(self) -> None:
        """Reset every daily counter (what `clear_quota` does) except clear_quota's own."""
        own = self.used[_SELF_LIMITED]
        self.used.clear()
        if own:
            self.used[_SELF_LIMITED] = own

    def _roll(self) -> None:
        elapsed = self._clock() - self._start
        minute = int(elapsed // 60)
        if minute != self._minute:
            self._minute = minute
            self._minute_used = 0
            day = int(elapsed // 86_400)
            if day != self._day:
                self._day = day
                self.used.clear()
