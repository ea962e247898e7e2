"""When the disk, the file system or the ledger file itself fails: one clear error, and room to
commit what WeChat already answered.

- Every SQLite or OS error leaves the ledger as one `BatchmoveError` naming the file and what to
  do (`storage_error`): a damaged file (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, text that is not
  UTF-8, a meta value that is not JSON) is `LedgerDamagedError`, exit 2; anything else (disk
  full, read-only, I/O error, cannot open) leaves the ledger as SQLite's last commit left it,
  so it is `StorageError`, exit 3: the same command resumes once the cause is gone.
- A run holds a reserve: `RUN_DIR/.reserve`, 8 MB of real blocks taken when the run starts.
  SQLite rolls a failed commit back whole, so when the disk fills up the buffered answers of
  the calls already sent would be lost and sent again on resume. Instead the first write that
  finds the disk full deletes the reserve, writes again into the room it left, and asks the
  run to stop (`on_trouble`): no new call is sent, the calls in flight finish and are committed
  too, and the run ends with exit 3. 8 MB holds several thousand rows' worth of commits.
- The ledger is deleted or replaced while the run holds it open (an `rm`, a restore from a
  backup, a cleanup job): SQLite goes on writing to the open file, which nobody can reach any
  more. After each commit the path is checked against the open file (`st_dev`, `st_ino`, one
  `stat`); once it differs, what the connection holds is copied beside it (`VACUUM INTO
  RUN_DIR/ledger-saved.sqlite`, again when the run closes it) and the run stops (exit 3).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from functools import wraps
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar, cast

from batchmove.errors import BatchmoveError, LedgerDamagedError, RunStateError, StorageError

RESERVE_NAME = ".reserve"
RESERVE_BYTES = 8 << 20
SAVED_NAME = "ledger-saved.sqlite"

P = ParamSpec("P")
T = TypeVar("T")

_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: OS errors that are the disk's or the file system's, whichever file they came from
STORAGE_ERRNOS = _FULL_ERRNOS | _READ_ONLY_ERRNOS | {errno.EIO}


@contextmanager
def atomic(conn: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
    """`begin` ... COMMIT on `conn` (autocommit mode), rolled back whole if anything fails, a
    failed COMMIT included; the rollback's own error never hides the first one. Every SQLite file
    of batchmove (ledger, export checkpoint, registry) writes its transactions through this."""
    conn.execute(begin)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def storage_error(exc: BaseException, path: Path) -> BatchmoveError:
    """One line for an SQLite or OS error met while using the ledger (or another file of the
    run) at `path`: what happened and what to do."""
    if isinstance(exc, BatchmoveError):
        return exc
    name = _errorname(exc)
    code = exc.errno if isinstance(exc, OSError) else None
    if name.startswith(_DAMAGED) or isinstance(exc, ValueError) or _undecodable(exc):
        return damaged(path, _why(exc), "not a batchmove ledger"
                       if name.startswith("SQLITE_NOTADB") else "damaged")
    resume = "then run the same command to resume"
    if name.startswith("SQLITE_FULL") or code in _FULL_ERRNOS:
        return StorageError(f"the disk holding {path} is full: free some space, {resume}")
    if name.startswith("SQLITE_READONLY") or code in _READ_ONLY_ERRNOS:
        return StorageError(f"cannot write {path}: it or its directory is read-only or not "
                            f"ours ({_why(exc)}): make it writable, {resume}")
    if name.startswith(_BUSY):
        return StorageError(f"{path} is busy: another process held it longer than batchmove "
                            f"waits ({_why(exc)}); {resume}")
    if name.startswith("SQLITE_IOERR") or code == errno.EIO:
        return StorageError(f"I/O error on {path} ({_why(exc)}): check the disk, {resume} "
                            "(the ledger is checked when it resumes)")
    return StorageError(f"cannot use {path}: {_why(exc)}; {resume}")


def damaged(path: Path, why: str, what: str = "damaged") -> LedgerDamagedError:
    return LedgerDamagedError(
        f"{path} is {what} ({why}); batchmove will not resume from it: restore it from a "
        f"copy, or move {path.parent} aside to start the job again")


def refusal(exc: sqlite3.Error | OSError, path: Path) -> BatchmoveError:
    """Opening the ledger at `path` failed: a damaged file, a full disk, or a run to resume
    that cannot be written now (read-only, I/O error: exit 3) as `storage_error` says;
    anything else means the run directory cannot be used (exit 2, nothing was sent)."""
    error = storage_error(exc, path)
    if isinstance(error, RunStateError) or disk_full(exc) or path.exists():
        return error
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return RunStateError(f"cannot use run directory {path.parent}: {why}")


def _undecodable(exc: BaseException) -> bool:
    """Text cells that are not UTF-8: bytes of garbage where a row's values were."""
    return isinstance(exc, sqlite3.OperationalError) and "could not decode" in str(exc).lower()


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def foreign(exc: BaseException) -> bool:
    """Was this SQLite error raised by code of another SQLite file than the ledger (the
    account registry), judging by the innermost frame it went through?"""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}registry{os.sep}" in tb.tb_frame.f_code.co_filename


def _errorname(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def is_damage(exc: BaseException) -> bool:
    """Whether an SQLite error says the file itself is damaged (malformed, not a database)."""
    return _errorname(exc).startswith(_DAMAGED)


def is_busy(exc: BaseException) -> bool:
    """Whether an SQLite error says another connection holds the lock it needed."""
    return _errorname(exc).startswith(_BUSY)


def disk_full(exc: BaseException) -> bool:
    return _errorname(exc).startswith("SQLITE_FULL") or (
        isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS)


def identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path`; None when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class Storage:
    """The ledger file's life on disk during a run: its reserve, its identity, and the first
    trouble met (which stops the run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reserve = path.parent / RESERVE_NAME
        self.saved = path.parent / SAVED_NAME
        self.trouble: StorageError | None = None
        self.on_trouble: Callable[[], None] | None = None
        self.lost = False  # the path no longer names the file the connection writes
        self._identity: tuple[int, int] | None = None
        self._reserved = False

    # --- the reserve ------------------------------------------------------------------------
    def take_reserve(self) -> None:
        """Set aside RESERVE_BYTES of real blocks; a disk without them refuses the run."""
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            self._drop_reserve()
            if disk_full(exc):
                raise StorageError(
                    f"the disk holding {self.path.parent} has less than "
                    f"{RESERVE_BYTES >> 20} MB free, the room a run keeps to record what it "
                    "sends: free some space, then run the same command") from None
            raise storage_error(exc, self.reserve) from None
        self._reserved = True

    def release_reserve(self) -> None:
        """The run is over: the reserve goes (it is only a run's)."""
        self._drop_reserve()
        self._reserved = False

    def _drop_reserve(self) -> None:
        with suppress(OSError):
            self.reserve.unlink()

    def make_room(self, exc: BaseException) -> bool:
        """After a write found the disk full: free the reserve and stop the run. True when
        there is new room to write again."""
        if not disk_full(exc) or not self._reserved:
            return False
        self.release_reserve()
        self.report(storage_error(exc, self.path))
        return True

    def report(self, error: BatchmoveError) -> None:
        """The first trouble wins; it asks the run to stop."""
        if self.trouble is None and isinstance(error, StorageError):
            self.trouble = error
            if self.on_trouble is not None:
                self.on_trouble()

    def restore_saved(self) -> bool:
        """The copy a run saved when its ledger was deleted under it becomes the ledger
        again, if nothing took its place (True); if something did, which is meant is asked."""
        if not self.saved.exists():
            return False
        if self.path.exists():
            raise RunStateError(
                f"{self.path.parent} holds both {self.path.name} and {SAVED_NAME} (saved when "
                "the ledger was deleted or replaced during a run): keep the one to resume from "
                f"as {self.path.name} and move the other out of the run directory")
        for suffix in ("-wal", "-shm"):  # the deleted file's: never replayed into the copy
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        os.replace(self.saved, self.path)
        return True

    # --- identity ---------------------------------------------------------------------------
    def remember(self) -> None:
        self._identity = identity(self.path)

    def check(self, conn: sqlite3.Connection) -> None:
        """After a commit: is the path still the file the connection writes? If not, save
        what the connection holds beside it and stop the run."""
        if self.lost or self._identity is None or identity(self.path) == self._identity:
            return
        self.lost = True
        self.report(StorageError(
            f"{self.path} was deleted or replaced while the run was using it; what the run "
            f"had recorded is saved in {self.saved}: run the same command to resume from it "
            f"(it is put back as {self.path.name} when {self.path.name} is gone)"))
        self.save(conn)

    def save(self, conn: sqlite3.Connection) -> None:
        """`VACUUM INTO` a temp file beside the ledger, then renamed: never half a copy."""
        tmp = self.saved.with_name(f".{self.saved.name}.tmp")
        old_umask = os.umask(0o077)
        try:
            self.saved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.unlink(missing_ok=True)
            conn.execute("VACUUM INTO ?", (str(tmp),))
            os.replace(tmp, self.saved)
        except (OSError, sqlite3.Error):
            tmp.unlink(missing_ok=True)
        finally:
            os.umask(old_umask)


class Stored(Protocol):
    """What `writes` needs of the object whose method it wraps."""

    @property
    def storage(self) -> Storage: ...


class LedgerConnection(Stored, Protocol):
    """What a part of the ledger (snapshots, creations, a tag listing) uses of the `Ledger`
    that owns it: its one connection, its transactions, its storage."""

    @property
    def conn(self) -> sqlite3.Connection: ...
    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...


class Part:
    """A part of the `Ledger` (`ledger.snapshots`, ...): it works through the ledger's one
    connection and transactions, and its writes (`@writes`) share the ledger's storage."""

    def __init__(self, ledger: LedgerConnection) -> None:
        self.ledger = ledger

    @property
    def storage(self) -> Storage:
        return self.ledger.storage


S = TypeVar("S", bound=Stored)


def writes(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """A ledger write (one transaction, or one statement): when it finds the disk full, the
    reserve is freed and the write made once more; any failure leaves as one BatchmoveError.
    Only for writes whose arguments can be used twice (lists and dicts, not iterators)."""

    @wraps(method)
    def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                if not self.storage.make_room(exc):
                    raise
                return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.storage.path) from exc

    return cast(Callable[Concatenate[S, P], T], wrapper)
