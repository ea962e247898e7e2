"""The ledger's schema: statuses constrained to `RowStatus`, a ledger of batchmove 0.2 (schema
"1", no constraint) brought up to date, and the check a ledger passes before a resume."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from batchmove.errors import LedgerDamagedError
from batchmove.ledger.schema import SCHEMA_VERSION, STATUS_CHECK
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import RowStatus

#: the ledger as batchmove 0.2 wrote it (no CHECK on `status`, the old status index)
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rows (
    row INTEGER PRIMARY KEY, openid TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', group_id INTEGER, prev_group INTEGER, errcode INTEGER,
    errmsg TEXT, attempts INTEGER NOT NULL DEFAULT 0, updated_at REAL, extra TEXT,
    prev_tags TEXT, verified TEXT);
CREATE INDEX rows_by_state ON rows (status);
CREATE TABLE created_groups (name TEXT PRIMARY KEY, state TEXT NOT NULL, group_id INTEGER,
    errcode INTEGER, errmsg TEXT, updated_at REAL NOT NULL);
CREATE TABLE calls (endpoint TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema', '"1"'), ('fingerprint', '"abc"'), ('rows', '4');
INSERT INTO rows (row, openid, target, status, group_id, prev_group) VALUES
    (2, 'oA', '101', 'moved', 101, 0), (3, 'oB', '101', 'pending', 101, 0),
    (4, 'oC', '101', 'pending', NULL, NULL), (5, 'bad', '101', 'invalid', NULL, NULL);
"""


def _v1_ledger(run_dir: Path, *extra: str) -> Path:
    run_dir.mkdir()
    db = sqlite3.connect(run_dir / LEDGER_NAME)
    db.executescript(V1_SCHEMA + ";".join(extra))
    db.close()
    return run_dir


def _rows_sql(run_dir: Path) -> str:
    db = sqlite3.connect(run_dir / LEDGER_NAME)
    try:
        return str(db.execute("SELECT sql FROM sqlite_master WHERE name = 'rows'").fetchone()[0])
    finally:
        db.close()


def test_every_status_is_allowed(tmp_path: Path) -> None:
    with Ledger(tmp_path / "run").open() as ledger:
        ledger.conn.executemany("INSERT INTO rows (row, openid, target, status) "
                                "VALUES (?, 'oA', '101', ?)", enumerate(RowStatus, 2))
        assert set(ledger.counts()) == set(RowStatus)
        ledger.check()


def test_a_status_nothing_counts_is_refused_by_sqlite(tmp_path: Path) -> None:
    with Ledger(tmp_path / "run").open() as ledger:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            ledger.conn.execute("INSERT INTO rows (row, openid, target, status) "
                                "VALUES (2, 'oA', '101', 'zubtb')")
        assert STATUS_CHECK in _rows_sql(ledger.run_dir)


def test_a_version_1_ledger_is_migrated_and_resumes(tmp_path: Path) -> None:
    run_dir = _v1_ledger(tmp_path / "run")
    with Ledger(run_dir).open() as ledger:
        assert ledger.meta()["schema"] == SCHEMA_VERSION
        ledger.check()
        assert ledger.counts() == {"moved": 1, "pending": 2, "invalid": 1}
        assert [(r.row, r.status, r.prev_group) for r in ledger.rows()][:2] == [
            (2, "moved", 0), (3, "pending", 0)]
        ledger.record_moved([3], 1)
    assert STATUS_CHECK in _rows_sql(run_dir)
    with Ledger(run_dir).open(lock=False) as reader:
        assert reader.counts() == {"moved": 2, "pending": 1, "invalid": 1}


def test_a_version_1_ledger_with_a_foreign_status_is_left_as_it_was(tmp_path: Path) -> None:
    run_dir = _v1_ledger(tmp_path / "run", "UPDATE rows SET status = 'zubtb' WHERE row = 3")
    with pytest.raises(LedgerDamagedError, match=r"1 rows have a status batchmove never writes "
                                                 r"\(row 3: 'zubtb'\)"):
        Ledger(run_dir).open()
    assert STATUS_CHECK not in _rows_sql(run_dir)  # untouched: a copy may still be wanted


@pytest.mark.parametrize(("damage", "why"), [
    ("DELETE FROM rows WHERE row = 4", "it holds 3 rows but the run loaded 4"),
    ("INSERT INTO rows (row, openid, target, status) VALUES (9, 'oX', '1', 'moved')",
     "it holds 5 rows but the run loaded 4"),
    ("PRAGMA ignore_check_constraints = 1; UPDATE rows SET status = 'zubtb' WHERE row > 2",
     "3 rows have a status batchmove never writes (row 3: 'zubtb')"),
])
def test_resume_refuses_a_ledger_that_does_not_add_up(tmp_path: Path, damage: str,
                                                      why: str) -> None:
    run_dir = _v1_ledger(tmp_path / "run")
    Ledger(run_dir).open().close()  # migrated: today's schema
    db = sqlite3.connect(run_dir / LEDGER_NAME)
    db.executescript(damage)
    db.close()
    with Ledger(run_dir).open(lock=False) as ledger, \
            pytest.raises(LedgerDamagedError) as caught:
        ledger.check()
    assert caught.value.message.startswith(f"{run_dir / LEDGER_NAME} is damaged (")
    assert why in caught.value.message
    assert caught.value.exit_code == 2


def test_meta_that_is_not_json_is_damage(tmp_path: Path) -> None:
    run_dir = _v1_ledger(tmp_path / "run", "UPDATE meta SET value = '{zub' WHERE key = 'rows'")
    with Ledger(run_dir).open(lock=False) as ledger, \
            pytest.raises(LedgerDamagedError, match="its meta value 'rows' is not JSON"):
        ledger.meta()
