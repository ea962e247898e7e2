"""The read-only ledger view the console polls: it never writes, and its figures are the
ledger's own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from batchmove.errors import RunStateError
from batchmove.ledger.reader import LedgerReader
from batchmove.ledger.store import Ledger
from batchmove.models import InputRow


def _ledger(run_dir: Path) -> Ledger:
    rows = [InputRow(i + 2, f"o{i}", "A" if i % 3 else "B", "pending", "", None)
            for i in range(30)]
    rows += [InputRow(40, "", "A", "invalid", "missing openid", None),
             InputRow(41, "o1", "A", "duplicate", "same as row 3", None)]
    ledger = Ledger(run_dir).open()
    ledger.load_rows([rows], lambda _: [])
    return ledger


def test_totals_targets_and_pages(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger, LedgerReader(tmp_path) as reader:
        ledger.record_moved([2, 3, 4], 1)
        totals = reader.totals()
        assert totals["moved"] == 3
        assert totals["pending"] == 27
        assert sum(totals.values()) == 32
        assert reader.by_target()["B"] == {"moved": 1, "pending": 9}
        page = reader.listed(("invalid", "duplicate"), 1, 10)
        assert [(r.row, r.status, r.reason) for r in page] == [
            (41, "duplicate", "same as row 3")]
        assert reader.listed(("nonsense",), 0, 10)[0].reason == "missing openid"


def test_data_version_moves_only_when_the_run_commits(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger, LedgerReader(tmp_path) as reader:
        before = reader.data_version()
        assert reader.data_version() == before
        ledger.record_moved([5], 1)
        assert reader.data_version() != before


def test_the_reader_cannot_write(tmp_path: Path) -> None:
    _ledger(tmp_path).close()
    with LedgerReader(tmp_path) as reader, pytest.raises(sqlite3.OperationalError):
        reader.conn.execute("DELETE FROM rows")


def test_no_ledger_is_a_run_state_error(tmp_path: Path) -> None:
    with pytest.raises(RunStateError), LedgerReader(tmp_path):
        pass
