"""Where a third-party platform's tickets, tokens and refresh tokens live: one SQLite file per
machine (`BATCHMOVE_STATE_DIR/platforms.sqlite3`, mode 600 in a mode-700 directory), shared by
every batchmove process, so a restart, a retry on another working directory or twenty
processes of one batch reuse what one of them fetched.

Keys carry the component appid (`component:<appid>`, `authorizer:<component>:<appid>`), so two
platforms on one machine never share a token. `locked(key)` is the cross-process half of the
single-flight refresh: an exclusive `flock` on a file of its own per key, taken in a thread so
the event loop keeps running; whoever gets it second finds the token the first one stored.

Nothing here prints a value: reprs and errors name the file and the key only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

from batchmove.errors import UsageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    component_appid TEXT PRIMARY KEY, ticket TEXT NOT NULL, pushed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    component_appid TEXT NOT NULL, authorizer_appid TEXT NOT NULL, value TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (component_appid, authorizer_appid));
"""


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """`BATCHMOVE_STATE_DIR`, else `$XDG_STATE_HOME/batchmove`, else ~/.local/state/batchmove."""
    given = environ.get("BATCHMOVE_STATE_DIR", "").strip()
    if given:
        return Path(given).expanduser().absolute()
    xdg = environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return (base / "batchmove").absolute()


class PlatformStore:
    """The machine's platform state (see the module docstring); one short transaction a call."""

    def __init__(self, directory: Path | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / "platforms.sqlite3"
        self.clock = clock
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.directory / "locks").mkdir(exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            finally:
                db.close()
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot use the state directory {self.directory}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None

    def __repr__(self) -> str:
        return f"PlatformStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # -- tickets -----------------------------------------------------------------------------

    def ticket(self, component_appid: str) -> tuple[str, float] | None:
        """The latest ticket received for this platform and when (epoch seconds)."""
        with self._db() as db:
            row = db.execute("SELECT ticket, pushed_at FROM tickets WHERE component_appid = ?",
                             (component_appid,)).fetchone()
        return (str(row[0]), float(row[1])) if row else None

    def put_ticket(self, component_appid: str, ticket: str, pushed_at: float) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO tickets VALUES (?, ?, ?)",
                       (component_appid, ticket, pushed_at))

    # -- access tokens -----------------------------------------------------------------------

    def token(self, key: str) -> tuple[str, float] | None:
        """A cached token and its expiry (epoch seconds), if one is stored."""
        with self._db() as db:
            row = db.execute("SELECT value, expires_at FROM tokens WHERE key = ?",
                             (key,)).fetchone()
        return (str(row[0]), float(row[1])) if row else None

    def put_token(self, key: str, value: str, expires_at: float) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)", (key, value, expires_at))

    # -- refresh tokens ----------------------------------------------------------------------

    def refresh_token(self, component_appid: str, authorizer_appid: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT value FROM refresh_tokens WHERE component_appid = ? AND "
                             "authorizer_appid = ?", (component_appid, authorizer_appid)
                             ).fetchone()
        return str(row[0]) if row else None

    def put_refresh_tokens(self, component_appid: str, tokens: Mapping[str, str]) -> None:
        """Store (or replace) refresh tokens, authorizer appid -> token, in one transaction."""
        now = self.clock()
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO refresh_tokens VALUES (?, ?, ?, ?)",
                           [(component_appid, appid, value, now)
                            for appid, value in tokens.items()])

    def authorizers(self, component_appid: str) -> list[str]:
        """The authorizer appids with a stored refresh token, sorted."""
        with self._db() as db:
            rows = db.execute("SELECT authorizer_appid FROM refresh_tokens WHERE "
                              "component_appid = ? ORDER BY authorizer_appid",
                              (component_appid,)).fetchall()
        return [str(row[0]) for row in rows]

    # -- single flight across processes ------------------------------------------------------

    @contextlib.asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[None]:
        """Hold the machine-wide lock of `key` (one process at a time refreshes it)."""
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        fd = os.open(self.directory / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
