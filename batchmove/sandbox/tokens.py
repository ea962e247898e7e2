"""Access tokens as WeChat hands them out: classic ones rotate, stable ones do not.

Classic (`token`) and stable (`stable_token`) tokens are separate tracks, as on WeChat. A new token
on a track leaves the previous one usable for `grace` seconds, then it answers 40001.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_MISSING = 41001
TOKEN_INVALID = 40001
TOKEN_EXPIRED = 42001


@dataclass(slots=True)
class _Token:
    expires_at: float
    invalid_at: float = math.inf


class TokenBook:
    """Issues and checks tokens on the sandbox clock; never logs or prints them."""

    def __init__(self, clock: Callable[[], float], grace: float) -> None:
        self._clock = clock
        self._grace = grace
        self._tokens: dict[str, _Token] = {}
        self._current: dict[str, str] = {}  # track ("classic"/"stable") -> its latest token
        self.issued: list[str] = []

    def classic(self, ttl: float) -> tuple[str, int]:
        """A new token; the previous classic token dies `grace` seconds from now."""
        return self._issue("classic", ttl)

    def stable(self, ttl: float, force_refresh: bool) -> tuple[str, int]:
        """The current stable token while it is valid, else (or when forced) a new one."""
        now = self._clock()
        current = self._current.get("stable")
        if current is not None and not force_refresh:
            record = self._tokens[current]
            if now < min(record.expires_at, record.invalid_at):
                return current, max(0, int(record.expires_at - now))
        return self._issue("stable", ttl)

    def check(self, token: str | None) -> int:
        """0 when `token` may be used now, else the errcode WeChat would answer."""
        if not token:
            return TOKEN_MISSING
        record = self._tokens.get(token)
        if record is None:
            return TOKEN_INVALID
        now = self._clock()
        if now >= record.invalid_at and record.invalid_at < record.expires_at:
            return TOKEN_INVALID
        if now >= record.expires_at:
            return TOKEN_EXPIRED
        return 0

    def expire_all(self) -> None:
        """Every token issued so far answers 42001 from now on (tests of refresh paths)."""
        now = self._clock()
        for record in self._tokens.values():
            record.expires_at = min(record.expires_at, now)

    def _issue(self, track: str, ttl: float) -> tuple[str, int]:
        now = self._clock()
        previous = self._current.get(track)
        if previous is not None:
            old = self._tokens[previous]
            old.invalid_at = min(old.invalid_at, now + self._grace)
        token = secrets.token_urlsafe(48)  # 64 chars
        self._tokens[token] = _Token(expires_at=now + ttl)
        self._current[track] = token
        self.issued.append(token)
        return token, int(ttl)
