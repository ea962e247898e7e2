"""The registry's SQLite file: where it lives, who may read it, its schema, its transactions.

One file per machine user, `registry.sqlite` in the state directory: `$BATCHMOVE_STATE_DIR`,
else `$XDG_STATE_HOME/batchmove`, else `~/.local/state/batchmove`. The directory is made mode
700 and the files 600: the file holds access tokens. WAL journal, `synchronous=OFF`: what it
holds (a rate budget, a cached token, who moves whom) is worth nothing after a power cut, and
every write is a short `BEGIN IMMEDIATE` transaction (~0.1 ms), never held across an await.

A damaged file (SQLite finds it malformed, or not a database at all) holds nothing that cannot
be rebuilt: tokens are fetched again, rates found again, runs register again. Whichever
process meets the damage first (opening the file, in a transaction, reading) sets it aside as
`registry.damaged-<UTC time>-<pid>.sqlite` and starts a new one, saying so on stderr, but only
when no other process of the machine has the registry open: each one holds a shared `flock` on
`registry.lock` while it does, and setting aside needs it exclusive. A process that met the
damage lets go of its own hold and waits up to `SET_ASIDE_WAIT_S` for it: processes that met
it together do not wait for each other (one sets it aside, the others find it gone, and every
connection of a process follows to the new file). A process that keeps it open longer is a
live run that does not meet the damage: nothing is renamed under it (it would go on alone
with the old file, outside the shared budget and claims) and the command stops with exit 3:
the same command, once those runs have ended, sets the file aside and goes on. A damage met
inside a transaction or a read also stops the command with exit 3, the file set aside if it
could be: its ledger is intact and the same command resumes.

Two clocks: rate state (slots, pauses, leases) is in `time.monotonic()` seconds, which on Linux
is one clock for every process of the machine; tokens and run registrations, which outlive a
reboot, are in wall-clock seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from batchmove.errors import RunStateError, StorageError
from batchmove.ledger.storage import atomic, identity, is_busy, is_damage, storage_error

REGISTRY_NAME = "registry.sqlite"
LOCK_NAME = "registry.lock"
OPEN_WAIT_S = 30.0  # how long opening the registry waits for the other processes' locks
SET_ASIDE_WAIT_S = 2.0  # how long a process that met damage waits for the others to let go
LOG = logging.getLogger("batchmove.registry")
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

_CORE = ("tokens", "buckets", "leases", "runs", "run_spent", "spent")  # claims_<id> aside


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the registry lives (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV, "").strip():
        return Path(env[STATE_ENV]).expanduser()
    if env.get("XDG_STATE_HOME", "").strip():
        return Path(env["XDG_STATE_HOME"]).expanduser() / "batchmove"
    return Path.home() / ".local" / "state" / "batchmove"


def token_lock(directory: Path, account: str, kind: str) -> Path:
    """The lock file of the single flight that fetches an account's token of a kind."""
    return directory / "locks" / f"{account_key(account, kind)}.lock"


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
        self._held = False

    def __repr__(self) -> str:
        return f"Registry({str(self.directory)!r})"

    @property
    def conn(self) -> sqlite3.Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and identity(self.path) != conn.file:  # set aside by another thread
            self._drop_conn()
            conn = None
        if conn is None:
            file = identity(self.path)  # the file that may turn out damaged, not its successor
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                if not is_damage(exc):
                    raise self._refused(exc) from None
                self._set_aside(exc, file)
                try:
                    conn = self._connect()
                except (OSError, sqlite3.Error) as again:
                    raise self._refused(again) from None
            except OSError as exc:
                raise self._refused(exc) from None
            self._local.conn = conn
        return conn

    def _connect(self) -> _Connection:
        if not self._held:
            _hold(self.directory, 1)
            self._held = True
        deadline = time.monotonic() + OPEN_WAIT_S
        while True:
            conn = sqlite3.connect(self.path, timeout=OPEN_WAIT_S, isolation_level=None,
                                   check_same_thread=False, factory=_Connection)
            # SQLite makes the file when there is none; it is made 600 by name. Never open()
            # and close() it here: closing any descriptor of the file drops every POSIX lock
            # this process holds on it, SQLite's too, and another process's last close then
            # checkpoints and deletes the WAL and -shm under this process's other connections
            # ("disk I/O error", a malformed file; one process in 120 that opened a new
            # registry together with others, when a thread saw no file before another made it)
            try:  # a damaged file met here is set aside by `conn` and opened again, new
                os.chmod(self.path, 0o600)
                conn.file = identity(self.path)
                _set_up(conn)
                break
            except sqlite3.OperationalError as exc:
                conn.close()
                # processes that open a new registry together: SQLite answers "database is
                # locked" at once rather than let two of them wait for each other (its busy
                # wait is not used then); it was 1 run in 10 of 4 started at once
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005 + 0.02 * random.random())
            except BaseException:
                conn.close()
                raise
        conn.registry = self  # from now on a damaged file met stops the command
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        return conn

    def _refused(self, exc: OSError | sqlite3.Error) -> RunStateError:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return RunStateError(f"cannot open the account registry in {self.directory}: {why}"
                             f" (set {STATE_ENV} to a writable directory)")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` ... COMMIT: one writer at a time across processes. An SQLite
        error (busy past the 30 s wait, a full disk) leaves as one line naming the registry;
        a damaged file is set aside first (see the module docstring)."""
        try:
            with atomic(self.conn, "BEGIN IMMEDIATE") as conn:
                yield conn
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise self.damaged(exc) from exc
            raise storage_error(exc, self.path) from exc

    def damaged(self, exc: sqlite3.Error) -> RegistryReplaced:
        """The error to stop with after this thread met a damaged registry file in use: the
        file set aside (when no other process has it open) and the connection dropped."""
        conn = getattr(self._local, "conn", None)
        self._drop_conn()
        aside = self._set_aside(exc, conn.file if conn is not None else identity(self.path))
        return RegistryReplaced(f"the account registry {self.path} was damaged ({exc}) and is "
                                f"set aside as {aside.name}: run the same command to resume")

    def _drop_conn(self) -> None:
        """Forget and close this thread's connection (one to a file set aside, say)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    def _set_aside(self, exc: sqlite3.Error, file: tuple[int, int] | None) -> Path:
        """Rename the damaged file (`file`: the one this process found damaged) out of the
        way, its -wal and -shm with it; a StorageError if another process keeps it open for
        `SET_ASIDE_WAIT_S`. This process lets go of its own shared hold meanwhile, so that
        processes that met the damage together do not wait for each other: one sets it aside,
        the others find it gone."""
        fd = _hold(self.directory)
        fcntl.flock(fd, fcntl.LOCK_UN)  # others that met the damage too wait as we do
        alone, deadline = False, time.monotonic() + SET_ASIDE_WAIT_S
        while identity(self.path) == file and time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
                break
            except BlockingIOError:
                time.sleep(0.01)
        try:
            if identity(self.path) != file:  # another process set it aside meanwhile
                return self.directory / "registry.damaged-*.sqlite"
            if not alone:
                raise StorageError(
                    f"the account registry {self.path} is damaged ({exc}), and other batchmove "
                    "processes of this machine have it open: once they have ended, run the same "
                    "command again (it sets the file aside and starts a new registry)")
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            aside = self.directory / f"registry.damaged-{stamp}-{os.getpid()}.sqlite"
            for suffix in ("-wal", "-shm", ""):
                with suppress(FileNotFoundError):
                    os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)
        LOG.warning("batchmove: warning: the account registry %s was damaged (%s); set aside as "
                    "%s, a new one is started (tokens and rates are fetched again)",
                    self.path, exc, aside.name)
        return aside

    def forget(self, account: str, *kinds: str) -> None:
        """Drop everything kept for an account (an embedded sandbox's, when its run ends), the
        lock files of its tokens of `kinds` (and of those stored) included."""
        with self.transaction() as conn:
            kinds += tuple(kind for (kind,) in conn.execute(
                "SELECT kind FROM tokens WHERE account = ?", (account,)))
            for (run_id,) in conn.execute("SELECT id FROM runs WHERE account = ?",
                                          (account,)).fetchall():
                conn.execute(f"DROP TABLE IF EXISTS claims_{int(run_id)}")
            for table in ("tokens", "buckets", "leases", "runs", "run_spent", "spent"):
                conn.execute(f"DELETE FROM {table} WHERE account = ?", (account,))
        for kind in set(kinds):  # nobody else can want the account's tokens now
            with suppress(FileNotFoundError):
                os.unlink(token_lock(self.directory, account, kind))

    def close(self) -> None:
        """Close this thread's connection and end this object's hold on the registry."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()
        if self._held:
            self._held = False
            _release(self.directory)


def _set_up(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(_SCHEMA)
    _migrate(conn)
    for table in _CORE:  # every page of the small tables is read: damage is met here, not
        conn.execute(f"SELECT * FROM {table}").fetchall()  # half-way through a run


class RegistryReplaced(StorageError):
    """A damaged registry file was met in use and set aside (exit 3: the same command goes on
    with a new one). What only tidies the registry may catch it and go on: this thread's next
    use of the registry opens the new file."""


class _Connection(sqlite3.Connection):
    """The registry's connection: a damaged file met by a read outside a transaction stops
    the command as one met inside one does (`Registry.damaged`)."""

    registry: Registry
    file: tuple[int, int] | None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return self.cursor(_Cursor).execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return self.cursor(_Cursor).executemany(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc

    def _damaged(self, exc: sqlite3.DatabaseError) -> BaseException:
        if not is_damage(exc) or self.in_transaction or not hasattr(self, "registry"):
            return exc  # inside a transaction: `Registry.transaction` says it
        return self.registry.damaged(exc)


class _Cursor(sqlite3.Cursor):
    """Rows read past the first (where SQLite may first meet a damaged page) are checked too."""

    def fetchone(self) -> Any:
        return self._checked(super().fetchone)

    def fetchall(self) -> list[Any]:
        return self._checked(super().fetchall)  # type: ignore[no-any-return]

    def __next__(self) -> Any:
        return self._checked(super().__next__)

    def _checked(self, read: Any) -> Any:
        try:
            return read()
        except sqlite3.DatabaseError as exc:
            raise self.connection._damaged(exc) from exc  # type: ignore[attr-defined]


#: per process: the descriptor of each registry's `registry.lock`, held shared (`flock`) while
#: a `Registry` of the directory is in use (counted), closed on exec: a spawned process holds
#: its own. A forked child shares the parent's (one open file, one lock).
_HOLDS: dict[Path, list[int]] = {}  # directory -> [descriptor, Registry objects holding it]
_HOLDS_LOCK = threading.Lock()


def _hold(directory: Path, count: int = 0) -> int:
    """This process's shared hold on the registry in `directory` (made on first use), held
    once more by `count` Registry objects."""
    with _HOLDS_LOCK:
        held = _HOLDS.get(directory)
        if held is None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            held = _HOLDS[directory] = [fd, 0]
        held[1] += count
        return held[0]


def _release(directory: Path) -> None:
    with _HOLDS_LOCK:
        held = _HOLDS.get(directory)
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del _HOLDS[directory]
                os.close(held[0])  # closing the last descriptor releases the flock


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
