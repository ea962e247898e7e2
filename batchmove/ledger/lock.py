"""The one lock of a directory batchmove writes: a run directory, or an export's checkpoint.

An exclusive `flock` on `DIR/.lock`, held for as long as the process works there, so a second
`batchmove run` of the same job (or a second export to the same file) refuses at once (exit 2)
instead of writing the same ledger. The kernel drops the lock when the process dies, `kill -9`
included: a stale lock file never blocks anyone. Watchers (the console) ask `is_locked`.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from batchmove.errors import RunLockedError

LOCK_NAME = ".lock"


class DirectoryLock:
    """`DirectoryLock(dir, busy).acquire()`: the exclusive lock of `dir`, or RunLockedError
    saying `busy`; `release()` gives it back."""

    def __init__(self, directory: Path, busy: str) -> None:
        self.path = directory / LOCK_NAME
        self.busy = busy
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(self.busy) from None
        self._fd = fd

    def drop_inherited(self) -> None:
        """In a forked child: close the child's copy of the descriptor. The parent keeps the
        lock, and it no longer outlives the parent while the child works."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def is_locked(directory: Path) -> bool:
    """Is some process holding `directory`'s lock right now (a run from the CLI, say)? Takes
    a shared lock for an instant, so it never blocks the holder nor waits for it."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our shared lock at once
    return False
