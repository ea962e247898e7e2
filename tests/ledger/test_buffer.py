"""Group commit of results, and the WAL checkpoints taken off the event loop."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.ledger.buffer import Checkpointer, ResultBuffer
from batchmove.ledger.store import Ledger
from batchmove.models import InputRow, RowFailure, RowStatus

ROWS = [InputRow(n, f"o{n}", "101", RowStatus.PENDING, "", None) for n in range(2, 2_002)]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "run").open() as opened:
        opened.load_rows([ROWS], lambda _: [])
        opened.assign_groups({"101": 101}, {})
        yield opened


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_results_are_written_when_due_and_counted_once_written(ledger: Ledger) -> None:
    clock = Clock()
    buffer = ResultBuffer(ledger, max_rows=3, max_delay=0.2, clock=clock)
    buffer.moved([2, 3], 1)
    assert not buffer.due()
    clock.now = 0.2
    assert buffer.due()  # the oldest answer waited max_delay
    buffer.failed([RowFailure(4, 40003, "invalid openid", 1)])
    buffer.moved([5], 2)
    assert buffer.flush() == (3, 1)
    assert not buffer.due()
    assert buffer.flush() == (0, 0)
    got = {r.row: (r.status, r.attempts) for r in ledger.rows() if r.row < 7}
    assert got == {2: ("moved", 1), 3: ("moved", 1), 4: ("failed", 1), 5: ("moved", 2),
                   6: ("pending", 0)}


def _moved_in_database_file(path: Path) -> int:
    """Moved rows in the database file itself, not counting what only the WAL holds
    (`immutable` makes SQLite ignore the WAL, and its locks: a read that meets a checkpoint
    copying pages in can see a torn file, which counts as "not yet", -1)."""
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM rows WHERE status = 'moved'").fetchone()[0])
    except sqlite3.DatabaseError:  # "database disk image is malformed" mid-copy
        return -1
    finally:
        db.close()


def test_checkpointer_copies_the_wal_while_the_writer_goes_on(ledger: Ledger) -> None:
    ledger.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the load, in the file
    assert _moved_in_database_file(ledger.path) == 0
    with Checkpointer(ledger.path, interval=0.005) as checkpointer:
        for start in range(2, 2_002, 100):
            ledger.record_moved(list(range(start, start + 100)), 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _moved_in_database_file(ledger.path) < 2_000:
            time.sleep(0.01)
        # ~60 WAL pages: SQLite alone would wait for 1,000 before copying them
        assert _moved_in_database_file(ledger.path) == 2_000
    assert checkpointer._thread is None  # joined on leaving the block
    assert ledger.counts()["moved"] == 2_000
