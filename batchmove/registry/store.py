"""The registry's SQLite file: where it lives, who may read it, its schema, its transactions.

One file per machine user, `registry.sqlite` in the state directory: `$BATCHMOVE_STATE_DIR`,
else `$XDG_STATE_HOME/batchmove`, else `~/.local/state/batchmove`. The directory is made mode
700 and the files 600: the file holds access tokens. WAL journal, `synchronous=OFF`: what it
holds (a rate budget, a cached token, who moves whom) is worth nothing after a power cut, and
every write is a short `BEGIN IMMEDIATE` transaction (~0.1 ms), never held across an await.

Two clocks: rate state (slots, pauses, leases) is in `time.monotonic()` seconds, which on Linux
is one clock for every process of the machine; tokens and run registrations, which outlive a
reboot, are in wall-clock seconds.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from batchmove.errors import RunStateError
from batchmove.ledger.storage import atomic, storage_error

REGISTRY_NAME = "registry.sqlite"
STATE_ENV = "BATCHMOVE_STATE_DIR"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    account TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    renew_at REAL, expires_at REAL, saved_at REAL NOT NULL,
    PRIMARY KEY (account, kind));
CREATE TABLE IF NOT EXISTS buckets (
    account TEXT NOT NULL, scope TEXT NOT NULL, rate REAL NOT NULL, tat REAL NOT NULL,
    paused_until REAL NOT NULL DEFAULT 0, probe_delay REAL NOT NULL DEFAULT 0,
    last_cut REAL NOT NULL DEFAULT 0, ceiling REAL, window REAL, found REAL,
    slow_start INTEGER NOT NULL DEFAULT 1, ok_since REAL NOT NULL DEFAULT 0,
    ok_now INTEGER NOT NULL DEFAULT 0, ok_before INTEGER NOT NULL DEFAULT 0, shared REAL,
    PRIMARY KEY (account, scope));
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY, account TEXT NOT NULL, pid INTEGER NOT NULL,
    fixed_rate REAL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, account TEXT NOT NULL, run_dir TEXT NOT NULL UNIQUE,
    job TEXT NOT NULL, state TEXT NOT NULL, pid INTEGER, users INTEGER NOT NULL,
    planned TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, expires_at REAL,
    ledger TEXT);
CREATE INDEX IF NOT EXISTS runs_by_account ON runs (account);
CREATE TABLE IF NOT EXISTS run_spent (
    account TEXT NOT NULL, pid INTEGER NOT NULL, endpoint TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (account, pid, endpoint));
CREATE TABLE IF NOT EXISTS spent (
    account TEXT NOT NULL, day TEXT NOT NULL, endpoint TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (account, day, endpoint));
"""


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the registry lives (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV, "").strip():
        return Path(env[STATE_ENV]).expanduser()
    if env.get("XDG_STATE_HOME", "").strip():
        return Path(env["XDG_STATE_HOME"]).expanduser() / "batchmove"
    return Path.home() / ".local" / "state" / "batchmove"


def account_key(*parts: str) -> str:
    """The account's key: a digest of what names it (API address + appid, or the token
    source), so the registry never holds a command line that may carry credentials."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


class Registry:
    """The shared state of the machine's runs. One connection per process and thread."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else state_dir()
        self.path = self.directory / REGISTRY_NAME
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Registry({str(self.directory)!r})"

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            if not self.path.exists():  # made 600; never open() and close() it once it exists:
                # closing any descriptor of the file drops every POSIX lock this process holds
                # on it, SQLite's too, and another process's last close may then checkpoint
                # and delete the WAL under our other connection ("disk image is malformed")
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_SCHEMA)
            _migrate(conn)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.chmod(side, 0o600)
        except (OSError, sqlite3.Error) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise RunStateError(f"cannot open the account registry in {self.directory}: {why}"
                                f" (set {STATE_ENV} to a writable directory)") from None
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` ... COMMIT: one writer at a time across processes. An SQLite
        error (busy past the 30 s wait, a full disk) leaves as one line naming the registry."""
        try:
            with atomic(self.conn, "BEGIN IMMEDIATE") as conn:
                yield conn
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path) from exc

    def forget(self, account: str) -> None:
        """Drop everything kept for an account (an embedded sandbox's, when its run ends)."""
        with self.transaction() as conn:
            for (run_id,) in conn.execute("SELECT id FROM runs WHERE account = ?",
                                          (account,)).fetchall():
                conn.execute(f"DROP TABLE IF EXISTS claims_{int(run_id)}")
            for table in ("tokens", "buckets", "leases", "runs", "run_spent", "spent"):
                conn.execute(f"DELETE FROM {table} WHERE account = ?", (account,))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()


_ADDED = (("runs", "ledger", "TEXT"), ("buckets", "shared", "REAL"))  # since 0.3.0.dev0


def _migrate(conn: sqlite3.Connection) -> None:
    """A registry made by 0.3.0.dev0 before `runs.ledger` (or `buckets.shared`) existed gets
    the column."""
    missing = [(table, column, kind) for table, column, kind in _ADDED
               if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}]
    if not missing:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, kind in missing:  # another process may have added it meanwhile
            if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    finally:
        conn.execute("COMMIT")


def pid_alive(pid: int | None) -> bool:
    """Whether a process of this machine still runs (a SIGKILLed run's pid is gone)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not waited for yet is a zombie: gone all the same
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]
