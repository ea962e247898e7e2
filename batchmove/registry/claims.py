"""Who is moving whom: each registered run's users, and what it plans to send.

A run registers when it starts (state "running", its pid) and removes its registration when it
ends, however it ends; a run killed with SIGKILL leaves a registration whose pid is gone, which
the next look at the account drops. The console registers runs waiting for approval ("pending",
"approved"; they expire after `PENDING_S`). Overlap is counted against every other live
registration of the account: same openid, whatever the target (two runs moving one user to two
places both report success, and the last one wins).

A registration holds its users in one of two ways:

- **left in the run's ledger** (a running run, a plan counting its overlaps): only the
  ledger's directory is registered. A run that needs to compare reads them from there (rows
  pending, or settled since the registration), and only when another run is live on the
  account: a run alone on its account registers in a few milliseconds whatever its size
  (hashing and copying 1,000,000 users took 4.5 s of CPU before the raw run's first move);
- **copied** (the console's pending and approved runs, whose input has no ledger yet): 64-bit
  hashes of the openids in a table `claims_<id>` keyed by the hash (an INTEGER PRIMARY KEY:
  the table is its own index, 8-9 bytes a user). They are hashed into a TEMP table first, in
  one transaction of the TEMP database (no lock on the shared file), then copied sorted,
  50,000 to a transaction, so a 1M-user registration never holds the registry's write lock for
  more than a few milliseconds at a time: runs of other processes keep taking their rate slots.

Comparing hashes each side into a TEMP table (a copied registration is its own table) and
counts the other's among them: 100,000 users against 100,000 in 0.6-0.8 s of CPU on the bench
machine; registering alone, 3 ms.

Each registration also says what its run plans to send (`planned`: calls per endpoint), and
the budget counts what each process has sent (`run_spent`): `to_spend` is what the other runs
on the account will still take from today's quota, which `plan` and the runs' stop decisions
subtract from what `openapi/quota/get` says remains.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

from batchmove.errors import RunStateError
from batchmove.ledger.reader import LedgerReader
from batchmove.ledger.storage import atomic
from batchmove.registry.store import Registry, RegistryReplaced, pid_alive
from batchmove.results import AccountRun, Overlap

RUNNING, PENDING, APPROVED = "running", "pending", "approved"
STATES = (RUNNING, PENDING, APPROVED)
PENDING_S = 7 * 86_400.0  # a registration waiting for approval lapses after a week
_COPY_ROWS = 50_000


def openid_hash(openid: str) -> int:
    """A signed 64-bit hash of an openid (collisions: ~1 in 10^7 pairs of 1M-user runs)."""
    digest = hashlib.blake2b(openid.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class InLedger(NamedTuple):
    """A running run's users, left in its ledger: the ledger's directory, and how many."""

    directory: Path
    users: int


class _Registration(NamedTuple):
    id: int
    run: AccountRun
    ledger: str | None  # the run's ledger directory, or None: its users are copied


class Claims:
    """The registrations of one account."""

    def __init__(self, registry: Registry, account: str, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.registry, self.account, self._wall = registry, account, wall

    def register(self, run_dir: Path, job: str, users: Iterable[list[str]] | InLedger, *,
                 state: str = RUNNING, planned: Mapping[str, int] | None = None) -> list[Overlap]:
        """Register (or register again) the run of `run_dir`; the other runs it overlaps.
        `users`: where the run's ledger is (its pending rows are its users), or its openids
        a page at a time (copied)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        self.release(run_dir)
        with suppress(RegistryReplaced):  # a dead run's damaged claims: none of ours
            self._sweep()
        now = self._wall()
        pid = os.getpid() if state == RUNNING else None
        expires = None if state == RUNNING else now + PENDING_S
        ledger = str(users.directory) if isinstance(users, InLedger) else None
        count = users.users if isinstance(users, InLedger) else 0
        with self.registry.transaction() as conn:
            run_id = conn.execute(
                "INSERT INTO runs (account, run_dir, job, state, pid, users, planned, "
                "created_at, expires_at, ledger) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.account, _key(run_dir), job, state, pid, count,
                 json.dumps(dict(planned or {})), now, expires, ledger)).lastrowid
            assert run_id is not None
            if pid is not None:  # what this process sent before (another run) is not this run's
                conn.execute("DELETE FROM run_spent WHERE account = ? AND pid = ?",
                             (self.account, pid))
            if ledger is None:
                conn.execute(f"CREATE TABLE claims_{run_id} (h INTEGER PRIMARY KEY)")
        if not isinstance(users, InLedger):
            count = self._copy(run_id, users)
            with self.registry.transaction() as conn:
                conn.execute("UPDATE runs SET users = ? WHERE id = ?", (count, run_id))
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
        return [r.run for r in self._live()]

    def to_spend(self, *mine: Path) -> dict[str, int]:
        """Calls per endpoint the other live runs on the account (not `mine`) will still make:
        each registration's planned calls less what its process has sent so far."""
        skip = {_key(p) for p in mine}
        live = {r.run.run_dir for r in self._live()} - skip
        conn = self.registry.conn
        sent = {(pid, endpoint): calls for pid, endpoint, calls in conn.execute(
            "SELECT pid, endpoint, calls FROM run_spent WHERE account = ?", (self.account,))}
        total: Counter[str] = Counter()
        for run_dir, pid, planned in conn.execute(
                "SELECT run_dir, pid, planned FROM runs WHERE account = ?", (self.account,)):
            if run_dir in live:
                for endpoint, calls in json.loads(planned).items():
                    total[endpoint] += max(0, int(calls) - sent.get((pid, endpoint), 0))
        return dict(total)

    # --- inside -----------------------------------------------------------------------------
    def _live(self) -> list[_Registration]:
        rows = self.registry.conn.execute(
            "SELECT id, run_dir, job, state, users, created_at, pid, expires_at, ledger "
            "FROM runs WHERE account = ? ORDER BY created_at", (self.account,)).fetchall()
        live = []
        for run_id, run_dir, job, state, users, created, pid, expires, ledger in rows:
            if self._stale(state, pid, expires):
                self._drop(run_id)
            else:
                live.append(_Registration(
                    run_id, AccountRun(run_dir, job, state, users, created, pid), ledger))
        return live

    def _overlaps(self, run_id: int) -> list[Overlap]:
        live = self._live()
        me = next((r for r in live if r.id == run_id), None)
        others = [r for r in live if r.id != run_id]
        if me is None or not others:  # alone on the account: nothing to compare
            return []
        conn = self.registry.conn
        mine = self._hashes(me, "mine")
        found = []
        for other in others:
            theirs = self._hashes(other, "theirs")
            try:
                (shared,) = conn.execute(f"SELECT count(DISTINCT h) FROM {mine} "
                                         f"WHERE h IN (SELECT h FROM {theirs})").fetchone()
            except sqlite3.OperationalError as exc:  # its run ended (released, or dropped as
                if not str(exc).startswith("no such table"):  # dead) since it was listed:
                    raise  # it moves nobody now (1 registration in 120 of 4 processes at once)
                continue
            if shared:
                run = other.run
                found.append(Overlap(run.run_dir, run.job, run.state, shared))
        for name in ("mine", "theirs"):
            conn.execute(f"DROP TABLE IF EXISTS temp.{name}")
        return found

    def _hashes(self, registration: _Registration, name: str) -> str:
        """The table of a registration's hashes: its own, or `temp.<name>` from its ledger."""
        if registration.ledger is None:
            return f"claims_{registration.id}"
        try:
            with LedgerReader(Path(registration.ledger)) as reader:
                self._fill(name, reader.moving_openids(registration.run.registered_at))
        except RunStateError:  # its run directory is gone: it moves nobody we can see
            self._fill(name, [])
        return f"temp.{name}"

    def _fill(self, name: str, openid_pages: Iterable[list[str]]) -> None:
        """`temp.<name>`: the hashes, in one transaction of the TEMP database (no lock on the
        shared file; autocommit, a transaction a row, cost ~0.5 s per 100,000 users)."""
        conn = self.registry.conn
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (h INTEGER)")
        with atomic(conn):
            conn.execute(f"DELETE FROM temp.{name}")
            for page in openid_pages:
                conn.executemany(f"INSERT INTO temp.{name} VALUES (?)",
                                 zip(map(openid_hash, page)))

    def _copy(self, run_id: int, openid_pages: Iterable[list[str]]) -> int:
        """The hashes into `claims_<run_id>`, sorted, a few ms of write lock at a time.

        Each chunk is read whole before its write transaction begins: a cursor left open
        across them kept a read snapshot from before the other processes' commits, and
        `BEGIN IMMEDIATE` then failed at once ("database is locked", no busy wait: SQLite
        cannot move a stale snapshot forward into a write)."""
        conn = self.registry.conn
        self._fill("mine", openid_pages)
        conn.execute("DROP TABLE IF EXISTS temp.sorted")  # rowid 1..n in hash order
        conn.execute("CREATE TEMP TABLE sorted AS SELECT DISTINCT h FROM temp.mine ORDER BY h")
        conn.execute("DROP TABLE temp.mine")
        users = 0
        while chunk := conn.execute("SELECT h FROM temp.sorted WHERE rowid > ? AND rowid <= ?",
                                    (users, users + _COPY_ROWS)).fetchall():
            with self.registry.transaction():
                conn.executemany(f"INSERT INTO claims_{run_id} VALUES (?)", chunk)
            users += len(chunk)
        conn.execute("DROP TABLE temp.sorted")
        return users

    def _sweep(self) -> None:
        """Drop the stale registrations of every account, not only this one's: an account
        nobody runs on again (a test sandbox's address, an account handed back) would keep
        its killed runs' rows and claims tables for ever (1M copied users: ~9 MB each)."""
        rows = self.registry.conn.execute(
            "SELECT id, state, pid, expires_at FROM runs WHERE account != ?",
            (self.account,)).fetchall()
        for run_id, state, pid, expires in rows:
            if self._stale(state, pid, expires):
                self._drop(run_id)

    def _stale(self, state: str, pid: int | None, expires: float | None) -> bool:
        if state == RUNNING:
            return not pid_alive(pid)
        return expires is not None and self._wall() >= expires

    def _drop(self, run_id: int) -> None:
        with self.registry.transaction() as conn:
            conn.execute(f"DROP TABLE IF EXISTS claims_{run_id}")
            conn.execute("DELETE FROM run_spent WHERE (account, pid) = "
                         "(SELECT account, pid FROM runs WHERE id = ?)", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def _key(run_dir: Path) -> str:
    return str(Path(os.path.abspath(run_dir)))
