"""report.xlsx written by a forked child process while the parent writes the other files.

Why: the reports are the last thing a run does, and the sheet is most of their time (100,000
rows: ~0.35 s of the ~0.6 s the four files took, one core busy, the other idle since the
moves ended). A child writes the sheet from its own read of the ledger while the parent
writes report.csv and failed.csv from its own; the parent then waits for the child. (Reading
the ledger once before the fork and sharing the rows was tried: the read is then serial and
both processes copy the pages the rows live on as they count references to them: a
100,000-row run took 2.52 s against 2.36 s with a read each, medians of 8 interleaved runs
on 2 cores.)

How: only on Linux, from the main thread, and for sheets of `FORK_ROWS` rows or more (a
fork is then cheap against the sheet; below it the sheet takes a few ms). The child starts
with every module imported; it opens the ledger again (a SQLite connection must not cross a
fork: it never touches the parent's), writes the sheet to the temp file the parent made
(the parent syncs and renames it), and leaves with `os._exit` (no atexit handlers, no
buffer flushed twice). Its SIGINT and SIGTERM are the defaults and the wakeup fd of the
parent's event loop is cleared, so a Ctrl-C of the process group ends it and never reaches
the parent's loop a second time. Threads the parent has at the fork are idle (the loop's
executor) and the child takes none of their locks. The child closes its copy of the run
lock's descriptor and is killed when the parent dies (`PR_SET_PDEATHSIG`): a run killed
while its sheet is written leaves no child working on, and its lock is free at once.

Whatever goes wrong in the child (an exception, a signal, a row count that changed), the
parent writes the sheet itself after its own files: nothing less is written. If the parent
fails first, it kills the child and waits for it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn

from batchmove.engine.signals import die_with_parent
from batchmove.ledger.store import Ledger

FORK_ROWS = 20_000

#: writes the sheet at the path from the ledger given (the parent's, or the child's own)
SheetWriter = Callable[[Ledger, Path], None]


def forks(ledger: Ledger, rows: int) -> bool:
    """Whether a sheet of `rows` rows is written by a child process: not when the ledger's
    path no longer names the file the run writes (deleted or replaced under it)."""
    return (rows >= FORK_ROWS and not ledger.storage.lost and ledger.storage.trouble is None
            and sys.platform.startswith("linux") and hasattr(os, "fork")
            and threading.current_thread() is threading.main_thread())


@contextmanager
def sheet_meanwhile(ledger: Ledger, path: Path, write: SheetWriter) -> Iterator[None]:
    """The sheet written at `path` (a temp file) by a child while the block runs; by this
    process after the block if the child could not be started or did not succeed."""
    pid = _fork(ledger, path, write)
    try:
        yield
    except BaseException:
        if pid is not None:
            _kill(pid)
        raise
    if pid is None or not _succeeded(pid):
        write(ledger, path)


def _fork(ledger: Ledger, path: Path, write: SheetWriter) -> int | None:
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is the child's to write
        with suppress(Exception):
            stream.flush()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of forking with threads: the
            warnings.simplefilter("ignore", DeprecationWarning)  # child needs none of them
            pid = os.fork()
    except OSError:  # no memory for another process, say: the parent writes the sheet
        return None
    if pid == 0:
        _child(ledger, parent, path, write)
    return pid


def _child(ledger: Ledger, parent: int, path: Path, write: SheetWriter) -> NoReturn:
    status = 1  # any failure, an exception included: the parent writes the sheet
    try:
        ledger.drop_inherited_lock()  # the run's lock ends with the parent, not with us
        die_with_parent(signal.SIGKILL, parent)  # a parent killed: nobody wants the sheet
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        source = Ledger(ledger.run_dir)  # read-only: never creates a ledger that went away
        source.db = sqlite3.connect(f"{source.path.absolute().as_uri()}?mode=ro", uri=True)
        write(source, path)
        status = 0
    finally:
        os._exit(status)


def _succeeded(pid: int) -> bool:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else: its outcome is unknown
        return False
    return os.waitstatus_to_exitcode(status) == 0


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)
