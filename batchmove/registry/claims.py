"""Who is moving whom: each registered run's users, as 64-bit hashes of their openids.

A run registers when it starts (state "running", its pid) and removes its registration when it
ends, however it ends; a run killed with SIGKILL leaves a registration whose pid is gone, which
the next look at the account drops. The console registers runs waiting for approval ("pending",
"approved"; they expire after `PENDING_S`). Overlap is counted against every other live
registration of the account: same openid, whatever the target (two runs moving one user to two
places both report success, and the last one wins).

Each run's users are one table `claims_<id>` keyed by the hash (an INTEGER PRIMARY KEY: the
table is its own index, 8-9 bytes a user). They are hashed into a TEMP table first (no lock on
the shared file), then copied sorted, 50,000 to a transaction, so a 1M-user registration never
holds the registry's write lock for more than a few milliseconds at a time: runs of other
processes keep taking their rate slots meanwhile. 1M users: ~1 s (hashing 0.6 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from batchmove.registry.store import Registry, pid_alive
from batchmove.results import AccountRun, Overlap

RUNNING, PENDING, APPROVED = "running", "pending", "approved"
STATES = (RUNNING, PENDING, APPROVED)
PENDING_S = 7 * 86_400.0  # a registration waiting for approval lapses after a week
_COPY_ROWS = 50_000


def openid_hash(openid: str) -> int:
    """A signed 64-bit hash of an openid (collisions: ~1 in 10^7 pairs of 1M-user runs)."""
    digest = hashlib.blake2b(openid.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class Claims:
    """The registrations of one account."""

    def __init__(self, registry: Registry, account: str, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.registry, self.account, self._wall = registry, account, wall

    def register(self, run_dir: Path, job: str, openid_pages: Iterable[list[str]], *,
                 state: str = RUNNING, planned: Mapping[str, int] | None = None) -> list[Overlap]:
        """Register (or register again) the run of `run_dir`; the other runs it overlaps."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        self.release(run_dir)
        now = self._wall()
        pid = os.getpid() if state == RUNNING else None
        expires = None if state == RUNNING else now + PENDING_S
        with self.registry.transaction() as conn:
            run_id = conn.execute(
                "INSERT INTO runs (account, run_dir, job, state, pid, users, planned, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (self.account, _key(run_dir), job, state, pid, json.dumps(dict(planned or {})),
                 now, expires)).lastrowid
            assert run_id is not None
            conn.execute(f"CREATE TABLE claims_{run_id} (h INTEGER PRIMARY KEY)")
        users = self._fill(run_id, openid_pages)
        with self.registry.transaction() as conn:
            conn.execute("UPDATE runs SET users = ? WHERE id = ?", (users, run_id))
        return self._overlaps(run_id)

    def release(self, run_dir: Path) -> None:
        """Remove the run's registration (a run that ends, a plan the console discards)."""
        found = self.registry.conn.execute(
            "SELECT id FROM runs WHERE run_dir = ?", (_key(run_dir),)).fetchall()
        for (run_id,) in found:
            self._drop(run_id)

    def overlaps(self, run_dir: Path) -> list[Overlap]:
        """The live runs that move some of the registered run's users."""
        row = self.registry.conn.execute("SELECT id FROM runs WHERE run_dir = ?",
                                         (_key(run_dir),)).fetchone()
        return self._overlaps(row[0]) if row else []

    def runs(self) -> list[AccountRun]:
        """Every live registration on the account (stale ones are dropped on the way)."""
        rows = self.registry.conn.execute(
            "SELECT id, run_dir, job, state, users, created_at, pid, expires_at FROM runs "
            "WHERE account = ? ORDER BY created_at", (self.account,)).fetchall()
        live = []
        for run_id, run_dir, job, state, users, created, pid, expires in rows:
            if self._stale(state, pid, expires):
                self._drop(run_id)
            else:
                live.append(AccountRun(run_dir, job, state, users, created, pid))
        return live

    # --- inside -----------------------------------------------------------------------------
    def _fill(self, run_id: int, openid_pages: Iterable[list[str]]) -> int:
        conn = self.registry.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS mine (h INTEGER)")
        conn.execute("DELETE FROM temp.mine")
        for page in openid_pages:
            conn.executemany("INSERT INTO temp.mine VALUES (?)",
                             [(openid_hash(o),) for o in page])
        cursor = conn.execute("SELECT DISTINCT h FROM temp.mine ORDER BY h")
        users = 0
        while chunk := cursor.fetchmany(_COPY_ROWS):
            with self.registry.transaction():
                conn.executemany(f"INSERT INTO claims_{run_id} VALUES (?)", chunk)
            users += len(chunk)
        conn.execute("DELETE FROM temp.mine")
        return users

    def _overlaps(self, run_id: int) -> list[Overlap]:
        conn = self.registry.conn
        others = [r for r in self.runs() if r.run_dir != self._dir_of(run_id)]
        found = []
        for other in others:
            row = conn.execute("SELECT id FROM runs WHERE run_dir = ?", (other.run_dir,)
                               ).fetchone()
            if row is None:
                continue
            (shared,) = conn.execute(
                f"SELECT count(*) FROM claims_{run_id} JOIN claims_{row[0]} USING (h)"
            ).fetchone()
            if shared:
                found.append(Overlap(other.run_dir, other.job, other.state, shared))
        return found

    def _dir_of(self, run_id: int) -> str | None:
        row = self.registry.conn.execute("SELECT run_dir FROM runs WHERE id = ?",
                                         (run_id,)).fetchone()
        return row[0] if row else None

    def _stale(self, state: str, pid: int | None, expires: float | None) -> bool:
        if state == RUNNING:
            return not pid_alive(pid)
        return expires is not None and self._wall() >= expires

    def _drop(self, run_id: int) -> None:
        with self.registry.transaction() as conn:
            conn.execute(f"DROP TABLE IF EXISTS claims_{run_id}")
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def _key(run_dir: Path) -> str:
    return str(Path(os.path.abspath(run_dir)))
