"""The SQLite checkpoint: loading, results, resets, the creation journal, lock and durability."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.errors import LedgerDamagedError, RunLockedError, RunStateError
from batchmove.ledger.loading import CASE_TARGETS
from batchmove.ledger.lock import LOCK_NAME
from batchmove.ledger.rows import LedgerRow
from batchmove.ledger.store import LEDGER_NAME, Ledger, RowLookup
from batchmove.models import InputRow, Move, RowFailure, RowStatus


def row(n: int, openid: str, target: str, status: RowStatus = RowStatus.PENDING,
        reason: str = "", extra: tuple[str, ...] | None = None) -> InputRow:
    return InputRow(n, openid, target, status, reason, extra)


ROWS = [
    row(2, "oA", "101", extra=("Ann", "北京")),
    row(3, "oB", "102"),
    row(4, "oC", "101"),
    row(5, "", "101", RowStatus.INVALID, "openid is empty"),
    row(6, "oD", "999"),
    row(7, "oE", "102"),
]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "run").open() as opened:
        yield opened


@pytest.fixture
def loaded(ledger: Ledger) -> Ledger:
    ledger.load_rows([ROWS[:3], ROWS[3:]], lambda _: [])
    return ledger


def statuses(ledger: Ledger) -> dict[int, str]:
    return {r.row: r.status for r in ledger.rows()}


# --- loading -----------------------------------------------------------------------------------
def test_load_rows_from_chunks_with_amendments(ledger: Ledger) -> None:
    read: list[str] = []

    def chunks() -> Iterator[list[InputRow]]:
        read.append("chunk")
        yield ROWS[:2]
        read.append("chunk")
        yield ROWS[2:]

    def amendments(lookup: RowLookup) -> list[tuple[int, RowStatus, str]]:
        read.append("amendments")  # read only after every chunk, which it can read back
        assert list(lookup([3, 7])) == [(3, "oB", "102"), (7, "oE", "102")]
        return [(7, RowStatus.DUPLICATE, "same openid and target as row 3")]

    assert ledger.load_rows(chunks(), amendments) == 6
    assert read == ["chunk", "chunk", "amendments"]
    got = list(ledger.rows())
    assert got[0] == LedgerRow(2, "oA", "101", "pending", "", None, None, None, None, 0,
                               '["Ann", "北京"]', None)
    assert got[-1] == LedgerRow(7, "oE", "102", "duplicate", "same openid and target as row 3",
                                None, None, None, None, 0, None, None)
    assert ledger.counts() == Counter(pending=4, invalid=1, duplicate=1)
    assert ledger.pending_targets() == Counter({"101": 2, "102": 1, "999": 1})


def test_load_rows_replaces_what_was_loaded_before(loaded: Ledger) -> None:
    assert loaded.load_rows([[row(10, "oZ", "5")]], lambda _: []) == 1
    assert [r.row for r in loaded.rows()] == [10]


def test_load_rows_rolls_back_when_the_chunks_fail_midway(ledger: Ledger) -> None:
    def broken() -> Iterator[list[InputRow]]:
        yield ROWS[:3]
        raise ValueError("the spreadsheet went away")

    with pytest.raises(ValueError, match="went away"):
        ledger.load_rows(broken(), lambda _: [])
    assert ledger.is_empty()
    assert ledger.counts() == Counter()


def test_load_rows_rollback_keeps_the_previous_rows(loaded: Ledger) -> None:
    def broken() -> Iterator[list[InputRow]]:
        yield [row(10, "oZ", "5")]
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        loaded.load_rows(broken(), lambda _: [])
    assert [r.row for r in loaded.rows()] == [2, 3, 4, 5, 6, 7]


def test_load_rows_rolls_back_when_amendments_fail(ledger: Ledger) -> None:
    def amendments(_: RowLookup) -> list[tuple[int, RowStatus, str]]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ledger.load_rows([ROWS], amendments)
    assert ledger.is_empty()


# --- results -----------------------------------------------------------------------------------
def test_assign_groups_resolves_and_fails_pending_rows_only(loaded: Ledger) -> None:
    loaded.assign_groups({"101": 101, "102": 102},
                         {"999": (40050, "group id 999 does not exist on this account")})
    got = {r.row: (r.status, r.group_id, r.errcode, r.errmsg) for r in loaded.rows()}
    assert got == {
        2: ("pending", 101, None, None),
        3: ("pending", 102, None, None),
        4: ("pending", 101, None, None),
        5: ("invalid", None, None, None),  # target 101 too, but invalid rows are never touched
        6: ("failed", None, 40050, "group id 999 does not exist on this account"),
        7: ("pending", 102, None, None),
    }


def test_group_ids_known_at_load_are_written_with_the_rows(ledger: Ledger) -> None:
    """A run whose listing came while its input loaded: pending rows get their group id with
    the insert (rows with extra cells too); an invalid row and a duplicate settled after the
    load get none; `assign_groups` then rewrites no row of a target every row of which got
    the id it resolves to, and still fails the targets that do not resolve."""
    asked: list[set[str]] = []

    def group_ids(targets: set[str]) -> dict[str, int]:
        asked.append(targets)
        return {t: int(t) for t in targets if t != "999"}

    ledger.load_rows([ROWS[:3], ROWS[3:]], lambda _: [(7, RowStatus.DUPLICATE, "repeats 3")],
                     group_ids)
    assert asked == [{"101", "102"}, {"999", "102"}]  # pending rows' targets, per chunk
    got = {r.row: (r.status, r.group_id) for r in ledger.rows()}
    assert got == {2: ("pending", 101), 3: ("pending", 102), 4: ("pending", 101),
                   5: ("invalid", None), 6: ("pending", None), 7: ("duplicate", None)}
    before = ledger.conn.total_changes
    ledger.assign_groups({"101": 101, "102": 102},
                         {"999": (40050, "group id 999 does not exist on this account")})
    assert ledger.conn.total_changes - before == 1  # row 6 failed; nothing else written
    assert {r.row: (r.status, r.group_id) for r in ledger.rows()}[6] == ("failed", None)


def test_group_ids_missing_for_a_chunk_leave_the_target_to_assign_groups(
        ledger: Ledger) -> None:
    """The listing came after the first chunk was written (or resolves a target to another
    id later): `assign_groups` writes every pending row of that target, as without ids."""
    answers = iter([None, {"101": 101, "102": 102}])
    ledger.load_rows([ROWS[:3], ROWS[3:]], lambda _: [], lambda targets: next(answers))
    assert [r.group_id for r in ledger.rows()] == [None, None, None, None, None, 102]
    ledger.assign_groups({"101": 101, "102": 202}, {})
    got = {r.row: r.group_id for r in ledger.rows() if r.status == "pending"}
    assert got == {2: 101, 3: 202, 4: 101, 6: None, 7: 202}


@pytest.mark.parametrize("targets", [3, CASE_TARGETS + 5])  # a CASE, then a lookup table
def test_group_ids_written_for_any_target_name(ledger: Ledger, targets: int) -> None:
    """Names with quotes, spaces, SQL and non-ASCII text get their ids, however many."""
    names = [f"O'Brien {i} 分组 '; DROP TABLE rows; --" for i in range(targets)]
    rows = [row(n, f"o{n}", names[n % targets]) for n in range(2, 2 + 3 * targets)]
    ledger.load_rows([rows], lambda _: [], lambda found: {t: 500 + names.index(t) for t in found})
    assert {(r.target, r.group_id) for r in ledger.rows()} == {
        (name, 500 + i) for i, name in enumerate(names)}


def test_pending_moves_in_input_order(loaded: Ledger) -> None:
    loaded.assign_groups({"101": 101, "102": 2}, {})
    loaded.record_moved([3], 1)
    assert list(loaded.pending_moves()) == [
        (101, 2, "oA"), (101, 4, "oC"), (2, 7, "oE")]  # 6 has no group


def test_record_snapshot_marks_users_already_in_their_target(loaded: Ledger) -> None:
    loaded.assign_groups({"101": 101, "102": 102, "999": 999}, {})
    assert {m.row for m in loaded.snapshots.missing()} == {2, 3, 4, 6, 7}
    already = loaded.snapshots.record_groups({2: 101, 3: 0, 4: 102, 7: 102})
    assert already == 2
    got = {r.row: (r.status, r.prev_group) for r in loaded.rows()}
    assert got == {2: ("already", 101), 3: ("pending", 0), 4: ("pending", 102),
                   5: ("invalid", None), 6: ("pending", None), 7: ("already", 102)}
    assert loaded.snapshots.missing() == [Move(6, "oD")]
    assert list(loaded.pending_moves()) == [(102, 3, "oB"), (101, 4, "oC"), (999, 6, "oD")]


def test_record_previous_groups_touches_only_the_rows_given(loaded: Ledger) -> None:
    loaded.assign_groups({"101": 101, "102": 102, "999": 999}, {})
    loaded.record_moved([7], 1)
    loaded.snapshots.record_previous({0: [3], 102: [4, 7], 101: [2]}, [2, 7])
    got = {r.row: (r.status, r.prev_group) for r in loaded.rows()}
    assert got == {2: ("already", 101), 3: ("pending", 0), 4: ("pending", 102),
                   5: ("invalid", None), 6: ("pending", None), 7: ("moved", 102)}
    loaded.snapshots.record_previous({}, [])  # nothing read back: nothing written
    assert [(r.row, r.previous, r.status) for r in loaded.review.rollback_rows()] == [
        (3, 0, "pending"), (4, 102, "pending"), (7, 102, "moved")]


def test_record_results_moves_each_attempt_count_once(loaded: Ledger) -> None:
    loaded.assign_groups({"101": 101, "102": 102}, {})
    loaded.record_results({1: [2, 4], 3: [7]}, [RowFailure(3, 40003, "invalid openid", 1)])
    got = {r.row: (r.status, r.attempts) for r in loaded.rows()}
    assert got == {2: ("moved", 1), 3: ("failed", 1), 4: ("moved", 1), 5: ("invalid", 0),
                   6: ("pending", 0), 7: ("moved", 3)}


def test_record_moved_and_failed_count_attempts(loaded: Ledger) -> None:
    loaded.assign_groups({"101": 101, "102": 102}, {})
    loaded.record_failed([RowFailure(2, -1, "gave up after 6 attempts: system error", 6),
                          RowFailure(3, 40003, "invalid openid", 1)])
    loaded.record_moved([4, 7], 2)
    got = {r.row: (r.status, r.errcode, r.errmsg, r.attempts) for r in loaded.rows()}
    assert got[2] == ("failed", -1, "gave up after 6 attempts: system error", 6)
    assert got[3] == ("failed", 40003, "invalid openid", 1)
    assert got[4] == got[7] == ("moved", None, None, 2)
    # a retried row adds its attempts and loses its old error once moved
    assert loaded.reset_failed([-1]) == 1
    loaded.assign_groups({"101": 101}, {})
    loaded.record_moved([2], 1)
    assert loaded.row(2)[3:] == (
        "moved", "", 101, None, None, None, 7, '["Ann", "北京"]', None)
    assert loaded.counts() == Counter(moved=3, failed=1, invalid=1, pending=1)


@pytest.mark.parametrize(("codes", "reset"), [
    ([], set()),
    ([None], {2}),
    ([-1], {3}),
    ([-1, 45009], {3, 4}),
    ([None, -1, 45009, 45011], {2, 3, 4}),
    ([40003], {6}),
])
def test_reset_failed_only_the_listed_errcodes(loaded: Ledger, codes: list[int | None],
                                               reset: set[int]) -> None:
    loaded.assign_groups({"101": 101, "102": 102, "999": 999}, {})
    loaded.record_failed([RowFailure(2, None, "no answer within 15s", 6),
                          RowFailure(3, -1, "system error", 6),
                          RowFailure(4, 45009, "reach max api daily quota limit", 1),
                          RowFailure(6, 40003, "invalid openid", 1)])
    loaded.record_moved([7], 1)
    assert loaded.reset_failed(codes) == len(reset)
    got = {r.row: (r.status, r.group_id) for r in loaded.rows()}
    before = {2: ("failed", 101), 3: ("failed", 102), 4: ("failed", 101), 6: ("failed", 999),
              5: ("invalid", None), 7: ("moved", 102)}
    assert got == {n: ("pending", None) if n in reset else was for n, was in before.items()}


def test_calls_accumulate(ledger: Ledger) -> None:
    ledger.add_calls(Counter({"groups/get": 1, "groups/members/batchupdate": 3}))
    ledger.add_calls(Counter({"groups/members/batchupdate": 2}))
    assert ledger.calls() == {"groups/get": 1, "groups/members/batchupdate": 5}


def test_meta_round_trips_json(ledger: Ledger) -> None:
    ledger.set_meta(fingerprint="abc", headers=["openid", "分组"], finished_at=None)
    ledger.set_meta(finished_at="2026-01-01T00:00:00+00:00")
    assert ledger.meta() == {"schema": "2", "fingerprint": "abc", "headers": ["openid", "分组"],
                             "finished_at": "2026-01-01T00:00:00+00:00"}


# --- creation journal --------------------------------------------------------------------------
def test_creation_journal_states(ledger: Ledger) -> None:
    assert ledger.creations.get("新组") is None
    ledger.creations.started("新组")
    assert ledger.creations.get("新组") == ("creating", None)
    ledger.creations.finished("新组", 108)
    assert ledger.creations.get("新组") == ("created", 108)
    ledger.creations.started("满")
    ledger.creations.failed("满", 45018, "分组数量超过上限")
    assert ledger.creations.get("满") == ("failed", None)
    ledger.creations.started("满")  # a later run tries again
    assert ledger.creations.get("满") == ("creating", None)
    assert ledger.creations.created() == [{"name": "新组", "id": 108}]


# --- lifecycle, lock, files --------------------------------------------------------------------
def test_second_open_on_the_same_dir_is_locked_out(tmp_path: Path) -> None:
    first = Ledger(tmp_path / "run").open()
    with pytest.raises(RunLockedError, match="another batchmove process is running this job"):
        Ledger(tmp_path / "run").open()
    with Ledger(tmp_path / "run").open(lock=False) as reader:  # reading without the lock is fine
        assert reader.meta() == {"schema": "2"}
    first.close()
    with Ledger(tmp_path / "run").open() as again:
        assert again.meta() == {"schema": "2"}


def test_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with Ledger(tmp_path / "runs" / "job").open() as ledger:
            ledger.load_rows([ROWS], lambda _: [])
            run_dir = ledger.run_dir
            names = {p.name for p in run_dir.iterdir()}
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()}
    finally:
        os.umask(old)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert {LEDGER_NAME, LOCK_NAME} <= names
    assert modes == dict.fromkeys(names, 0o600)


def test_garbage_ledger_is_refused_and_releases_the_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LEDGER_NAME).write_bytes(b"this is not sqlite\n" * 64)
    with pytest.raises(RunStateError, match="is not a batchmove ledger") as caught:
        Ledger(run_dir).open()
    assert type(caught.value) is LedgerDamagedError
    (run_dir / LEDGER_NAME).unlink()
    with Ledger(run_dir).open() as ledger:  # the failed open did not keep the lock
        assert ledger.is_empty()


def test_unusable_run_dir_is_a_run_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunStateError, match="cannot use run directory"):
        Ledger(tmp_path / "file" / "run").open()


def test_closed_ledger_refuses_use(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "run").open()
    ledger.close()
    ledger.close()  # closing twice is harmless
    with pytest.raises(RunStateError, match="the ledger is closed"):
        ledger.counts()


def test_committed_results_are_visible_to_another_connection(loaded: Ledger) -> None:
    loaded.assign_groups({"101": 101}, {})
    loaded.record_moved([2, 4], 1)
    loaded.record_failed([RowFailure(3, 40003, "invalid openid", 1)])
    loaded.creations.started("新组")
    other = sqlite3.connect(loaded.path)  # the first connection stays open (WAL)
    try:
        got = dict(other.execute("SELECT row, status FROM rows WHERE row IN (2, 3, 4)"))
        journal = other.execute("SELECT state FROM created_groups WHERE name = '新组'").fetchall()
        mode = other.execute("PRAGMA journal_mode").fetchone()
    finally:
        other.close()
    assert got == {2: "moved", 3: "failed", 4: "moved"}
    assert journal == [("creating",)]
    assert mode == ("wal",)
