"""The read-only ledger view the console polls: it never writes, and its figures are the
ledger's own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from batchmove.errors import RunStateError
from batchmove.ledger.lock import is_locked
from batchmove.ledger.reader import LedgerReader, ledger_changed_at
from batchmove.ledger.store import Ledger
from batchmove.models import InputRow
from batchmove.results import counts_of


def _ledger(run_dir: Path) -> Ledger:
    rows = [InputRow(i + 2, f"o{i}", "A" if i % 3 else "B", "pending", "", None)
            for i in range(30)]
    rows += [InputRow(40, "", "", "invalid", "missing openid", None),
             InputRow(41, "o1", "A", "duplicate", "same as row 3", None)]
    ledger = Ledger(run_dir).open()
    ledger.load_rows([rows], lambda _: [])
    return ledger


def test_totals_targets_and_pages(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger, LedgerReader(tmp_path) as reader:
        ledger.record_moved([2, 3, 4], 1)
        totals = reader.counts()
        assert totals["moved"] == 3
        assert totals["pending"] == 27
        assert sum(totals.values()) == 32
        assert reader.answered() == (27, 0, 32, 0)
        targets = reader.targets()
        assert targets["B"] == counts_of({"moved": 1, "pending": 9})
        assert targets["A"] == counts_of({"moved": 2, "pending": 18})  # no invalid, duplicate
        assert set(targets) == {"A", "B"}  # the invalid row's empty target is nobody's
        page = reader.rows(("invalid", "duplicate"), 1, 10)
        assert [(r.row, r.status, r.reason) for r in page] == [
            (41, "duplicate", "same as row 3")]
        assert reader.rows(("nonsense",), 0, 10)[0].reason == "missing openid"


def test_data_version_moves_only_when_the_run_commits(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger, LedgerReader(tmp_path) as reader:
        before = reader.version()
        assert reader.version() == before
        ledger.record_moved([5], 1)
        assert reader.version() != before


def test_the_reader_cannot_write(tmp_path: Path) -> None:
    _ledger(tmp_path).close()
    with LedgerReader(tmp_path) as reader, pytest.raises(sqlite3.OperationalError):
        reader.conn.execute("DELETE FROM rows")


def test_no_ledger_is_a_run_state_error(tmp_path: Path) -> None:
    with pytest.raises(RunStateError), LedgerReader(tmp_path):
        pass


def test_the_lock_is_seen_while_a_run_holds_it(tmp_path: Path) -> None:
    assert not is_locked(tmp_path)
    assert ledger_changed_at(tmp_path) is None
    with _ledger(tmp_path):
        assert is_locked(tmp_path)
        assert ledger_changed_at(tmp_path) is not None
    assert not is_locked(tmp_path)
