"""How the sandbox pushes back like a real account (all off by default; see docs/sandbox.md):

- `rate_limit`: per-endpoint frequency limits, `{endpoint: [call_count, refresh_second]}`: at
  most call_count calls in each window of refresh_second seconds (windows counted from the
  sandbox's start); beyond it the call is answered 45011 and not counted. `openapi/quota/get`
  reports the limit as `rate_limit {call_count, refresh_second}` unless `rate_limit_hidden`.
- `latency_tail`: latency drawn from a lognormal whose median is `latency_ms` and whose p99 is
  `latency_tail` times the median (10: p99 = 10x median), instead of `latency_ms` + uniform
  `jitter_ms`.
- `busy_above`: more than this many calls (all endpoints) arriving within one second: the
  excess is answered -1 (system busy), as an overloaded server does.
- `tag_visible_after`: a tag created less than this many seconds ago answers 45159 (invalid tag
  id) to batch (un)tagging: the delay WxJava users report after `tags/create`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from batchmove.sandbox.wire import ApiFault

MINUTE_QUOTA_REACHED = 45011
INVALID_TAG_ID = 45159
SYSTEM_BUSY = -1
_Z99 = 2.3263  # the standard normal's 99th percentile
TAGGING = ("tags/members/batchtagging", "tags/members/batchuntagging")


def check_rate_limits(limits: Mapping[str, Sequence[Any]], known: Mapping[str, Any]) -> None:
    """Raises ValueError for an unknown endpoint or a limit that is not two numbers > 0."""
    for endpoint, limit in limits.items():
        if endpoint not in known:
            raise ValueError(f"rate_limit: unknown endpoint {endpoint!r}")
        if (not isinstance(limit, list | tuple) or len(limit) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                           for v in limit)):
            raise ValueError(f"rate_limit of {endpoint} must be [call_count, refresh_second]"
                             f" > 0, got {limit!r}")


def latency_s(median_ms: float, jitter_ms: float, tail: float, rng: random.Random) -> float:
    """One call's latency in seconds."""
    if tail > 1 and median_ms > 0:
        return median_ms * math.exp(rng.gauss(0.0, math.log(tail) / _Z99)) / 1000.0
    return (median_ms + (rng.uniform(0.0, jitter_ms) if jitter_ms else 0.0)) / 1000.0


class Pushback:
    """Frequency windows, the busy meter and tag birth times, on the sandbox clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start = clock()
        self._windows: dict[str, tuple[int, int]] = {}  # endpoint -> (window, calls in it)
        self._arrivals: deque[float] = deque()
        self._born: dict[int, float] = {}

    def admit(self, endpoint: str, limits: Mapping[str, Sequence[float]]) -> int:
        """0, or 45011 when the endpoint's window is full (the call is not counted)."""
        limit = limits.get(endpoint)
        if not limit:
            return 0
        count, seconds = int(limit[0]), float(limit[1])
        window = int((self._clock() - self._start) // seconds)
        current, used = self._windows.get(endpoint, (window, 0))
        if current != window:
            used = 0
        if used >= count:
            return MINUTE_QUOTA_REACHED
        self._windows[endpoint] = (window, used + 1)
        return 0

    def busy(self, above: int | None) -> bool:
        """Record one arrival; True when more than `above` arrived within the last second."""
        if not above:
            return False
        now = self._clock()
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals and arrivals[0] <= now - 1.0:
            arrivals.popleft()
        return len(arrivals) > above

    def created(self, answer: dict[str, Any]) -> dict[str, Any]:
        """`tags/create`'s answer passes through; its tag's birth is noted."""
        tag = answer.get("tag")
        if isinstance(tag, dict) and isinstance(tag.get("id"), int):
            self._born[tag["id"]] = self._clock()
        return answer

    def check_visible(self, endpoint: str, body: Any, after: float) -> None:
        """45159 for a (un)tagging call naming a tag created less than `after` seconds ago."""
        if not after or endpoint not in TAGGING or not isinstance(body, dict):
            return
        born = self._born.get(body.get("tagid"))  # type: ignore[arg-type]
        if born is not None and self._clock() - born < after:
            raise ApiFault(INVALID_TAG_ID)

    @staticmethod
    def reported(answer: dict[str, Any], endpoint: str, faults: Any) -> dict[str, Any]:
        """quota/get's answer, with the endpoint's frequency limit unless it is hidden."""
        limit = faults.rate_limit.get(endpoint)
        if limit and not faults.rate_limit_hidden:
            answer["rate_limit"] = {"call_count": int(limit[0]), "refresh_second": limit[1]}
        return answer
