"""The two seams through which the client shares an account with other runs on the machine.

The client knows nothing of where rate budgets and tokens are kept (`batchmove.registry`
keeps them in SQLite, shared by every process); it only calls these Protocols:

- `RateGate`: `await enter(endpoint)` before each HTTP attempt (it waits for a slot of the
  account's rate, and for room under its concurrency), `leave(...)` after it with what came
  back, so an adaptive gate can slow down on 45011 / -1 / rising latency. A client without a
  gate (`--rate 0`) pays nothing per call.
- `TokenStore`: a cached access token shared by the runs of one account, and a cross-process
  single flight (`flight()`), so parallel runs never fetch or refresh over each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from batchmove.errors import ApiError, MinuteQuotaError

T = TypeVar("T")

#: what `RateGate.leave` is told when no errcode came back (timeout, dropped connection)
NO_ANSWER = None


class RateGate(Protocol):
    """Paces the HTTP attempts of one client (every attempt, retries and token fetches too)."""

    async def enter(self, endpoint: str) -> float:
        """Wait for a slot; returns the attempt's start (monotonic seconds)."""

    def leave(self, endpoint: str, started: float, errcode: int | None) -> None:
        """The attempt ended: errcode 0 for success, None for no answer at all."""

    def managed_wait(self, endpoint: str) -> bool:
        """True when the gate itself holds calls after a 45011 (until the window turns), so
        the caller retries at once instead of sleeping to the next minute."""


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token as the store keeps it. Times are wall-clock seconds (processes share them):
    `renew_at` is when its runs should fetch a new one, `expires_at` when WeChat drops it
    (None: the source cannot tell, e.g. a token command)."""

    value: str = field(repr=False)
    renew_at: float | None = None
    expires_at: float | None = None


class TokenStore(Protocol):
    """One account's shared token; `flight()` is held by at most one process at a time."""

    def read(self) -> StoredToken | None:
        """The token the account's runs share now, if any."""

    def save(self, token: StoredToken) -> None:
        """Replace the shared token (call while holding `flight()`)."""

    def flight(self) -> AbstractAsyncContextManager[None]:
        """The cross-process single flight around a fetch: re-read inside it before fetching."""


async def gated(gate: RateGate, endpoint: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """One HTTP attempt through the gate, which hears what came back."""
    started = await gate.enter(endpoint)
    errcode: int | None = NO_ANSWER
    try:
        data = await attempt()
        errcode = 0
        return data
    except ApiError as exc:
        errcode = exc.errcode
        if isinstance(exc, MinuteQuotaError) and gate.managed_wait(endpoint):
            exc.managed = True  # the gate holds the endpoint's calls until the window turns
        raise
    finally:
        gate.leave(endpoint, started, errcode)
