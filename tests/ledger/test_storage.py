"""The ledger's storage: errors as one line with the right exit code, the reserve that lets a
full disk's last answers be committed, and a ledger deleted under the run saved beside it.

A full disk is SQLite's own SQLITE_FULL, reached with `PRAGMA max_page_count` (the real tmpfs
cases, which need root, are in tests/reliability/test_storage.py).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.errors import (
    EXIT_STOPPED,
    EXIT_USAGE,
    LedgerDamagedError,
    RunStateError,
    StorageError,
)
from batchmove.ledger.storage import (
    RESERVE_BYTES,
    RESERVE_NAME,
    SAVED_NAME,
    refusal,
    storage_error,
)
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import InputRow, RowStatus

PATH = Path("/runs/nightly/ledger.sqlite")


def _sqlite_error(name: str, text: str) -> sqlite3.Error:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorname = name  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("exc", "kind", "words"), [
    (_sqlite_error("SQLITE_FULL", "database or disk is full"), StorageError, "is full"),
    (OSError(errno.ENOSPC, "No space left on device"), StorageError, "is full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), StorageError, "is full"),
    (_sqlite_error("SQLITE_READONLY", "attempt to write a readonly database"), StorageError,
     "read-only"),
    (OSError(errno.EROFS, "Read-only file system"), StorageError, "read-only"),
    (_sqlite_error("SQLITE_IOERR_WRITE", "disk I/O error"), StorageError, "I/O error"),
    (OSError(errno.EIO, "Input/output error"), StorageError, "I/O error"),
    (_sqlite_error("SQLITE_CORRUPT", "database disk image is malformed"), LedgerDamagedError,
     "is damaged"),
    (_sqlite_error("SQLITE_NOTADB", "file is not a database"), LedgerDamagedError,
     "is not a batchmove ledger"),
    (sqlite3.OperationalError("Could not decode to UTF-8 column 'status' with text 'x'"),
     LedgerDamagedError, "is damaged"),
    (_sqlite_error("SQLITE_CANTOPEN", "unable to open database file"), StorageError,
     "cannot use"),
    (_sqlite_error("SQLITE_BUSY", "database is locked"), StorageError, "is busy"),
])
def test_errors_are_one_line_naming_the_file(exc: BaseException, kind: type, words: str) -> None:
    error = storage_error(exc, PATH)
    assert type(error) is kind
    assert str(PATH) in error.message
    assert words in error.message
    assert "\n" not in error.message
    assert error.exit_code == (EXIT_USAGE if kind is LedgerDamagedError else EXIT_STOPPED)
    if kind is StorageError:
        assert error.message.endswith(("run the same command to resume",
                                       "(the ledger is checked when it resumes)"))


def test_refusal_to_open_a_new_run_is_exit_2_but_a_run_to_resume_is_exit_3(
        tmp_path: Path) -> None:
    new = refusal(OSError(errno.EROFS, "Read-only file system"), tmp_path / LEDGER_NAME)
    assert type(new) is RunStateError
    assert new.message.startswith(f"cannot use run directory {tmp_path}")
    (tmp_path / LEDGER_NAME).write_bytes(b"")
    again = refusal(OSError(errno.EROFS, "Read-only file system"), tmp_path / LEDGER_NAME)
    assert type(again) is StorageError


ROWS = [InputRow(n, f"o{n:09d}", "101", RowStatus.PENDING.value, "", None)
        for n in range(2, 2_002)]


@pytest.fixture
def run_ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A run's ledger, its reserve taken, every row loaded and its group resolved."""
    with Ledger(tmp_path / "run").open(reserve=True) as ledger:
        ledger.load_rows([ROWS], lambda _: [])
        ledger.assign_groups({"101": 101}, {})
        yield ledger


def _fill(ledger: Ledger) -> None:
    """The database may not grow by a single page any more: SQLITE_FULL on the next write
    that needs one."""
    pages = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
    ledger.conn.execute(f"PRAGMA max_page_count = {pages}")


def test_the_reserve_is_taken_and_given_back(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with Ledger(run_dir).open(reserve=True):
        reserve = run_dir / RESERVE_NAME
        assert reserve.stat().st_size == RESERVE_BYTES
        assert reserve.stat().st_blocks * 512 >= RESERVE_BYTES  # real blocks, not a hole
        assert oct(reserve.stat().st_mode & 0o777) == "0o600"
    assert not reserve.exists()


def test_a_full_disk_frees_the_reserve_commits_and_stops_the_run(run_ledger: Ledger) -> None:
    stops: list[str] = []

    def room_freed() -> None:  # what deleting the reserve does on a real disk
        stops.append("stop")
        run_ledger.conn.execute("PRAGMA max_page_count = 1000000")

    run_ledger.on_trouble(room_freed)
    _fill(run_ledger)
    # longer records: new pages, which SQLite may not take
    run_ledger.snapshots.record_previous({123_456_789: [r.row for r in ROWS]}, [])
    assert stops == ["stop"]
    assert not (run_ledger.run_dir / RESERVE_NAME).exists()
    assert run_ledger.storage.trouble is not None
    assert "is full" in run_ledger.storage.trouble.message
    assert run_ledger.row(2) is not None
    assert run_ledger.row(2).prev_group == 123_456_789  # type: ignore[union-attr]


def test_a_full_disk_without_a_reserve_left_is_a_storage_error(run_ledger: Ledger) -> None:
    run_ledger.on_trouble(lambda: None)  # the room freed was not enough
    _fill(run_ledger)
    with pytest.raises(StorageError, match="is full"):
        run_ledger.snapshots.record_previous({123_456_789: [r.row for r in ROWS]}, [])
    assert run_ledger.row(2).prev_group is None  # type: ignore[union-attr]  # rolled back
    with pytest.raises(StorageError, match="is full"):  # and again, once the reserve is gone
        run_ledger.snapshots.record_previous({123_456_789: [r.row for r in ROWS]}, [])
    assert run_ledger.counts() == {"pending": len(ROWS)}


def test_a_deleted_ledger_is_saved_beside_it_and_put_back(run_ledger: Ledger) -> None:
    stops: list[str] = []
    run_ledger.on_trouble(lambda: stops.append("stop"))
    run_dir = run_ledger.run_dir
    os.unlink(run_ledger.path)
    run_ledger.record_moved([2, 3], 1)
    assert stops == ["stop"]
    assert "was deleted or replaced" in run_ledger.storage.trouble.message  # type: ignore[union-attr]
    run_ledger.record_moved([4], 1)  # still recorded: the copy is made again at close
    run_ledger.close()
    assert (run_dir / SAVED_NAME).exists()
    assert not (run_dir / LEDGER_NAME).exists()
    with Ledger(run_dir).open() as again:
        assert again.restored
        assert again.counts() == {"moved": 3, "pending": len(ROWS) - 3}
    assert not (run_dir / SAVED_NAME).exists()


def test_a_replaced_ledger_and_its_saved_copy_are_not_guessed_between(run_ledger: Ledger,
                                                                      tmp_path: Path) -> None:
    run_dir = run_ledger.run_dir
    with Ledger(tmp_path / "other").open() as other:
        other.set_meta(job="another")
    os.replace(tmp_path / "other" / LEDGER_NAME, run_ledger.path)
    run_ledger.record_moved([2], 1)
    run_ledger.close()
    with pytest.raises(RunStateError, match=f"holds both {LEDGER_NAME} and {SAVED_NAME}"):
        Ledger(run_dir).open()
    Ledger(run_dir).open(lock=False).close()  # readers are not in the way
