"""Sessions: a login exchanges the key (or a person's secret) for a random token, which is all
a cookie (or a Bearer header) ever carries.

- The token is 32 random bytes; the console keeps only its sha256, in memory: a console that
  restarts signs everyone out, and nothing on disk can be replayed.
- A session ends at logout, after `ttl` (12 h by default), or when an admin ends a person's
  sessions from the settings page.
- The cookie is named for the console's port and id (`batchmove_8700_5e0c3a91d27f4b68`), its
  Path is the console's address (`/c/<id>/`), HttpOnly, SameSite=Strict, Secure under TLS,
  with Max-Age: two consoles on one host never overwrite each other's session, a cookie of
  an older console (Path=/, named for the port alone) is never mistaken for this one's, and
  the key itself is never a cookie.
- Failed logins are counted per client address: after `Throttle.limit` in `window` seconds the
  address is refused (429) until the window passes, so a secret cannot be guessed at speed.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from batchmove.console.people import Person

SESSION_TTL_S = 12 * 3600


def cookie_name(port: int, instance: str) -> str:
    return f"batchmove_{port}_{instance}"


@dataclass
class Session:
    person: Person
    started: float
    expires: float


@dataclass
class Sessions:
    ttl: float = SESSION_TTL_S
    clock: Callable[[], float] = time.time
    by_hash: dict[str, Session] = field(default_factory=dict)

    def open(self, person: Person) -> str:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        self.by_hash[_hash(token)] = Session(person, now, now + self.ttl)
        return token

    def find(self, token: str) -> Person | None:
        if not token:
            return None
        key = _hash(token)
        found = self.by_hash.get(key)
        if found is None:
            return None
        if found.expires <= self.clock():
            del self.by_hash[key]
            return None
        return found.person

    def close(self, token: str) -> None:
        self.by_hash.pop(_hash(token), None)

    def close_all(self, name: str) -> int:
        """End every session of one person; how many there were."""
        ended = [k for k, s in self.by_hash.items() if s.person.name == name]
        for key in ended:
            del self.by_hash[key]
        return len(ended)

    def active(self) -> dict[str, int]:
        """Open sessions per person (expired ones dropped)."""
        now = self.clock()
        for key in [k for k, s in self.by_hash.items() if s.expires <= now]:
            del self.by_hash[key]
        counts: dict[str, int] = {}
        for session in self.by_hash.values():
            counts[session.person.name] = counts.get(session.person.name, 0) + 1
        return counts


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Throttle:
    """Failed logins per client address over a sliding window."""

    limit: int = 5
    window: float = 300.0
    clock: Callable[[], float] = time.monotonic
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, client: str) -> bool:
        seen = self.failures.get(client)
        if seen is None:
            return False
        while seen and seen[0] <= self.clock() - self.window:
            seen.popleft()
        return len(seen) >= self.limit

    def failed(self, client: str) -> None:
        self.failures.setdefault(client, deque()).append(self.clock())
        if len(self.failures) > 10_000:  # a flood of addresses: forget the oldest
            self.failures.pop(next(iter(self.failures)))
