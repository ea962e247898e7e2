"""The report writers, on real ledgers: exact CSV bytes, XLSX read back, failed.csv fed back."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from batchmove.errors import RunStateError
from batchmove.intake.loader import open_input
from batchmove.ledger.lock import is_locked
from batchmove.ledger.rundir import read_summary
from batchmove.ledger.store import Ledger
from batchmove.models import InputRow, JobSpec, RowFailure, RowStatus
from batchmove.output import report, sheetfork
from batchmove.output.report import neutralize, unique_names, write_reports
from tests.support.sandboxes import REPO_ROOT

P, X, D = RowStatus.PENDING, RowStatus.INVALID, RowStatus.DUPLICATE
A = "oAAAAAAAAAAAAAAAAAAAAAAAAAAA"
B = "oBBBBBBBBBBBBBBBBBBBBBBBBBBB"
C = "oCCCCCCCCCCCCCCCCCCCCCCCCCCC"
E = "oEEEEEEEEEEEEEEEEEEEEEEEEEEE"
HEADERS = ["姓名", "openid", "备注", "分组名称"]
BOM = "\ufeff"
OURS = ["row", "status", "group_id", "errcode", "errmsg", "attempts"]


def make_ledger(run_dir: Path, headers: Sequence[str], openid_column: str, target_column: str,
                rows: Sequence[InputRow]) -> Ledger:
    ledger = Ledger(run_dir).open()
    ledger.set_meta(headers=list(headers), openid_column=openid_column,
                    target_column=target_column, input="in.csv", run_id="r1")
    ledger.load_rows([list(rows)], lambda _: [])
    return ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """Six rows, one per status, the way a run leaves them."""
    rows = [
        InputRow(2, A, "市场部", P, "", ("张三", "VIP")),
        InputRow(3, B, "市场部", P, "", ("李四", "")),
        InputRow(4, C, "销售, 北区", P, "", ("王五", 'says "hi"')),
        InputRow(5, "bad", "市场部", X, "openid is shorter than 10 characters", ("赵六", "")),
        InputRow(6, A, "市场部", D, "duplicate of row 2", ("张三", "again")),
        InputRow(7, E, "市场部", P, "", ("钱七", "later")),
    ]
    led = make_ledger(tmp_path, HEADERS, "openid", "分组名称", rows)
    led.assign_groups({"市场部": 101}, {"销售, 北区": (None, "no such group")})
    led.snapshots.record_groups({2: 0, 3: 101, 7: 0})
    led.record_moved([2], 1)
    led.add_calls(Counter({"groups/members/batchupdate": 1, "user/info/batchget": 1}))
    led.creations.started("市场部")
    led.creations.finished("市场部", 101)
    yield led
    led.close()


def read_text(path: Path) -> str:
    data = path.read_bytes()
    assert data.startswith(BOM.encode())
    return data.decode("utf-8-sig")


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(read_text(path), newline="")))


def test_report_csv_is_every_row_in_input_order(ledger: Ledger, tmp_path: Path) -> None:
    write_reports(ledger, tmp_path, {})
    assert read_text(tmp_path / "report.csv") == (
        "姓名,openid,备注,分组名称,row,status,group_id,errcode,errmsg,attempts\r\n"
        f"张三,{A},VIP,市场部,2,moved,101,,,1\r\n"
        f"李四,{B},,市场部,3,already,101,,,0\r\n"
        f'王五,{C},"says ""hi""","销售, 北区",4,failed,,,no such group,0\r\n'
        "赵六,bad,,市场部,5,invalid,,,openid is shorter than 10 characters,0\r\n"
        f"张三,{A},again,市场部,6,duplicate,,,duplicate of row 2,0\r\n"
        f"钱七,{E},later,市场部,7,pending,101,,,0\r\n"
    )


def test_failed_csv_holds_failed_and_invalid_rows_with_original_headers(
        ledger: Ledger, tmp_path: Path) -> None:
    ledger.record_failed([RowFailure(7, 40003, "invalid openid", 2)])
    write_reports(ledger, tmp_path, {})
    assert read_text(tmp_path / "failed.csv") == (
        "姓名,openid,备注,分组名称,source_row,reason\r\n"
        f'王五,{C},"says ""hi""","销售, 北区",4,no such group\r\n'
        "赵六,bad,,市场部,5,openid is shorter than 10 characters\r\n"
        f"钱七,{E},later,市场部,7,errcode 40003: invalid openid\r\n"
    )


def test_failed_csv_loads_back_as_input(ledger: Ledger, tmp_path: Path) -> None:
    write_reports(ledger, tmp_path, {})
    source = open_input(JobSpec(input=tmp_path / "failed.csv"))
    assert source.headers == [*HEADERS, "source_row", "reason"]
    assert (source.openid_column, source.target_column) == ("openid", "分组名称")
    rows = [(r.row, r.openid, r.target, r.extra) for chunk in source.rows() for r in chunk]
    assert rows == [
        (2, C, "销售, 北区", ("王五", 'says "hi"', "4", "no such group")),
        (3, "bad", "市场部", ("赵六", "", "5", "openid is shorter than 10 characters")),
    ]


def test_neutralised_target_loads_back_unchanged(tmp_path: Path) -> None:
    rows = [InputRow(2, A, "@市场部", P, "", None)]
    with make_ledger(tmp_path, ["openid", "分组名称"], "openid", "分组名称", rows) as led:
        led.assign_groups({}, {"@市场部": (None, "no such group")})
        write_reports(led, tmp_path, {})
    source = open_input(JobSpec(input=tmp_path / "failed.csv"))
    assert [r.target for chunk in source.rows() for r in chunk] == ["@市场部"]


def test_header_only_failed_csv_when_nothing_failed(tmp_path: Path) -> None:
    with make_ledger(tmp_path, ["openid", "group_id"], "openid", "group_id",
                     [InputRow(2, A, "101", P, "", None)]) as led:
        write_reports(led, tmp_path, {})
    assert read_text(tmp_path / "failed.csv") == "openid,group_id,source_row,reason\r\n"


@pytest.mark.parametrize(("headers", "openid_column", "target_column", "extra", "cells"), [
    (["openid", "分组"], "openid", "分组", None, [A, "g"]),
    (["分组", "openid"], "openid", "分组", None, ["g", A]),
    (["x", "openid", "y", "分组", "z"], "openid", "分组", ("1", "2", "3"), ["1", A, "2", "g", "3"]),
    (["分组", "x", "y", "openid"], "openid", "分组", ("1", "2"), ["g", "1", "2", A]),
    (["openid", "分组", "x"], "openid", "分组", ('a "q", b\\c\nd',), [A, "g", 'a "q", b\\c\nd']),
    (["openid", "分组", "x", "y"], "openid", "分组", ("", ""), [A, "g", "", ""]),
    (["openid", "分组", "x", "y"], "openid", "分组", ("short",), [A, "g", "short", ""]),
])
def test_cells_go_back_to_their_header_positions(
        tmp_path: Path, headers: list[str], openid_column: str, target_column: str,
        extra: tuple[str, ...] | None, cells: list[str]) -> None:
    rows = [InputRow(2, A, "g", P, "", extra)]
    with make_ledger(tmp_path, headers, openid_column, target_column, rows) as led:
        write_reports(led, tmp_path, {})
    header, row = read_csv(tmp_path / "report.csv")
    assert header == [*headers, *OURS]
    assert row == [*cells, "2", "pending", "", "", "", "0"]


@pytest.mark.parametrize(("cell", "shown"), [
    ("=1+1", "'=1+1"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("\rx", "'\rx"),
    ("-5", "-5"),
    ("+8613800000000", "+8613800000000"),
    ("a=b", "a=b"),
    ("", ""),
])
def test_neutralize(cell: str, shown: str) -> None:
    assert neutralize(cell) == shown


def test_formulas_are_neutralised_everywhere(tmp_path: Path) -> None:
    rows = [InputRow(2, "=HYPERLINK(1)", "+g", X, "-bad openid", ("=1+1", "@x", "ok", "-5"))]
    headers = ["openid", "分组", "a", "b", "c", "=d"]
    with make_ledger(tmp_path, headers, "openid", "分组", rows) as led:
        write_reports(led, tmp_path, {})
    cells = ["'=HYPERLINK(1)", "'+g", "'=1+1", "'@x", "ok", "-5"]
    assert read_csv(tmp_path / "report.csv")[:2] == [
        [*headers[:-1], "'=d", *OURS],
        [*cells, "2", "invalid", "", "", "'-bad openid", "0"]]
    assert read_csv(tmp_path / "failed.csv") == [  # the header too: the loader takes ' off
        [*headers[:-1], "'=d", "source_row", "reason"], [*cells, "2", "'-bad openid"]]
    again = open_input(JobSpec(input=tmp_path / "failed.csv"))
    assert again.headers == [*headers, "source_row", "reason"]
    sheet = openpyxl.load_workbook(tmp_path / "report.xlsx")["report"]
    assert sheet["F1"].value == "'=d"
    values = [c.value for c in sheet[2]]
    assert values == [*cells, 2, "invalid", None, None, "'-bad openid", 0]
    assert all(c.data_type in ("s", "n") for c in sheet[2])


def test_xlsx_types_layout_and_content(ledger: Ledger, tmp_path: Path) -> None:
    ledger.record_failed([RowFailure(7, -1, "system busy", 6)])
    files = write_reports(ledger, tmp_path, {})
    assert files.report_xlsx == tmp_path / "report.xlsx"
    book = openpyxl.load_workbook(tmp_path / "report.xlsx")
    assert book.sheetnames == ["report"]
    sheet = book["report"]
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:J7"
    assert all(c.font.b for c in sheet[1])
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows[0] == [*HEADERS, *OURS]
    assert rows[1] == ["张三", A, "VIP", "市场部", 2, "moved", 101, None, None, 1]
    assert rows[3] == ["王五", C, 'says "hi"', "销售, 北区", 4, "failed", None, None,
                       "no such group", 0]
    assert rows[6] == ["钱七", E, "later", "市场部", 7, "failed", 101, -1, "system busy", 6]
    assert all(isinstance(v, int) for row in rows[1:] for v in (row[4], row[9]))
    assert 10 <= sheet.column_dimensions["B"].width <= 60


def test_rows_counted_wrong_are_read_again(ledger: Ledger, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """report.csv and report.xlsx come from one read of the ledger, the sheet sized from the
    row counts; if rows came or went since they were counted, the sheet is written again."""
    counted = report.layout

    def miscounted(*args: Any, **kwargs: Any) -> report.Layout:
        found = counted(*args, **kwargs)
        return report.Layout(found.files, found.header, found.input_headers, found.cells,
                             {**found.counts, "pending": found.counts["pending"] + 1})

    monkeypatch.setattr(report, "layout", miscounted)
    write_reports(ledger, tmp_path, {})
    sheet = openpyxl.load_workbook(tmp_path / "report.xlsx")["report"]
    assert sheet.auto_filter.ref == "A1:J7"
    assert [c.value for c in sheet["A"]] == ["姓名", "张三", "李四", "王五", "赵六", "张三", "钱七"]
    assert len(read_csv(tmp_path / "report.csv")) == 7
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []


def test_xlsx_cells_are_capped_at_excels_limit(tmp_path: Path) -> None:
    rows = [InputRow(2, A, "g", P, "", ("x" * 40_000,))]
    with make_ledger(tmp_path, ["openid", "分组", "note"], "openid", "分组", rows) as led:
        write_reports(led, tmp_path, {})
    sheet = openpyxl.load_workbook(tmp_path / "report.xlsx")["report"]
    assert sheet["C2"].value == "x" * 32_767
    assert read_csv(tmp_path / "report.csv")[1][2] == "x" * 40_000


@pytest.mark.parametrize(("headers", "report_extra", "failed_extra"), [
    (["openid", "group_id", "status", "Row"],
     ["row_batchmove", "status_batchmove", "group_id_batchmove", "errcode", "errmsg", "attempts"],
     ["source_row", "reason"]),
    (["openid", "分组", "reason", "source_row", "source_row_batchmove"], OURS,
     ["source_row_batchmove2", "reason_batchmove"]),
])
def test_colliding_headers_keep_theirs_and_suffix_ours(
        tmp_path: Path, headers: list[str], report_extra: list[str],
        failed_extra: list[str]) -> None:
    others = ("v",) * (len(headers) - 2)
    rows = [InputRow(2, A, "101", X, "why", others)]
    with make_ledger(tmp_path, headers, "openid", headers[1], rows) as led:
        write_reports(led, tmp_path, {})
    report_header = read_csv(tmp_path / "report.csv")[0]
    assert report_header == [*headers, *report_extra]
    assert read_csv(tmp_path / "failed.csv")[0] == [*headers, *failed_extra]
    assert read_csv(tmp_path / "failed.csv")[1] == [A, "101", *others, "2", "why"]


def test_unique_names_never_repeat() -> None:
    assert unique_names(["status", "status_batchmove"], ["status", "row"]) == [
        "status_batchmove2", "row"]


@pytest.mark.parametrize(("max_rows", "skipped"), [
    (6, None), (5, "6 rows > xlsx_max_rows 5"), (0, "6 rows > xlsx_max_rows 0")])
def test_xlsx_skip_threshold(ledger: Ledger, tmp_path: Path, max_rows: int,
                             skipped: str | None) -> None:
    (tmp_path / "report.xlsx").write_bytes(b"from an earlier run")
    files = write_reports(ledger, tmp_path, {}, xlsx_max_rows=max_rows)
    assert files.xlsx_skipped == skipped
    assert (files.report_xlsx is None) == (skipped is not None)
    assert (tmp_path / "report.xlsx").exists() == (skipped is None)
    summary = read_summary(tmp_path)
    assert summary["report_xlsx_skipped"] == skipped
    assert summary["report_xlsx"] == (None if skipped else "report.xlsx")
    assert ("report.xlsx" in summary["files"]) == (skipped is None)


def test_summary_adds_counts_calls_groups_and_files(ledger: Ledger, tmp_path: Path) -> None:
    files = write_reports(ledger, tmp_path, {"job": "春季活动", "exit_code": 1})
    assert files.summary_json == tmp_path / "summary.json"
    assert "春季活动" in (tmp_path / "summary.json").read_text(encoding="utf-8")
    assert read_summary(tmp_path) == {
        "job": "春季活动", "exit_code": 1,
        "counts": {"pending": 1, "moved": 1, "already": 1, "failed": 1, "invalid": 1,
                   "duplicate": 1, "unknown": 0},
        "rows": 6,
        "calls": {"groups/members/batchupdate": 1, "user/info/batchget": 1},
        "groups_created": [{"name": "市场部", "id": 101}],
        "report_xlsx": "report.xlsx", "report_xlsx_skipped": None,
        "files": ["report.csv", "report.xlsx", "failed.csv", "summary.json"],
    }


def test_empty_ledger_writes_headers_and_zero_counts(tmp_path: Path) -> None:
    with make_ledger(tmp_path, ["openid", "分组"], "openid", "分组", []) as led:
        write_reports(led, tmp_path, {})
    assert read_text(tmp_path / "report.csv") == f"openid,分组,{','.join(OURS)}\r\n"
    assert set(read_summary(tmp_path)["counts"].values()) == {0}
    assert [c.value for c in openpyxl.load_workbook(tmp_path / "report.xlsx")["report"]["A"]] \
        == ["openid"]


def test_files_are_private_and_no_temp_files_remain(ledger: Ledger, tmp_path: Path) -> None:
    stale = tmp_path / ".report.csv.k1ll3d.tmp"
    stale.write_text("half a file from a killed run")
    (tmp_path / "report.csv").write_text("old")
    (tmp_path / "report.csv").chmod(0o644)
    write_reports(ledger, tmp_path, {})
    for name in ("report.csv", "report.xlsx", "failed.csv", "summary.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
        ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "failed.csv").write_text("old")

    write_csv = report.write_csv

    def disk_full_in_failed(out: Any, header: list[str], rows: Any) -> None:
        if "reason" not in header:
            return write_csv(out, header, rows)
        out.write("source_row,half a line")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_csv", disk_full_in_failed)
    with pytest.raises(RunStateError, match="No space left on device"):
        write_reports(ledger, tmp_path, {})
    assert (tmp_path / "failed.csv").read_text() == "old"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["missing", "a file", "read-only"])
def test_unwritable_run_dir_is_a_one_line_run_state_error(
        ledger: Ledger, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out"
    if kind == "a file":
        target.write_text("")
    elif kind == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        target.mkdir(mode=0o500)
    with pytest.raises(RunStateError) as info:
        write_reports(ledger, target, {})
    assert str(target) in info.value.message
    assert "\n" not in info.value.message


def test_ledger_without_headers_is_a_run_state_error(tmp_path: Path) -> None:
    with Ledger(tmp_path).open() as led, pytest.raises(RunStateError, match="headers"):
        write_reports(led, tmp_path, {})


@pytest.mark.parametrize(("content", "match"), [
    (None, "does not exist"), ("{not json", "cannot read"), ("[1]", "not a batchmove summary")])
def test_read_summary_refuses_what_is_not_a_summary(tmp_path: Path, content: str | None,
                                                    match: str) -> None:
    if content is not None:
        (tmp_path / "summary.json").write_text(content)
    with pytest.raises(RunStateError, match=match):
        read_summary(tmp_path)


def test_extra_cells_with_escapes_survive_exactly(tmp_path: Path) -> None:
    """The split fast path must agree with json.loads on every kind of cell."""
    odd = ('"', "\\", "a, b", "line\nbreak", "tab\tin", "ünï 中文", '", "', "[", "]")
    rows = [InputRow(2 + i, A, "g", P, "", (cell, "z")) for i, cell in enumerate(odd)]
    with make_ledger(tmp_path, ["openid", "分组", "x", "y"], "openid", "分组", rows) as led:
        stored = [json.loads(r.extra or "") for r in led.rows()]
        write_reports(led, tmp_path, {})
    assert [row[2:4] for row in read_csv(tmp_path / "report.csv")[1:]] == stored


# --- report.xlsx from a child process (large sheets, Linux) -----------------------------------
def sheet_xml(path: Path) -> bytes:
    with zipfile.ZipFile(path) as book:
        return book.read("xl/worksheets/sheet1.xml")


def forked_pids(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """Every sheet of any size goes to a child; the pids `_fork` returned."""
    pids: list[int | None] = []
    fork = sheetfork._fork

    def spy(*args: Any) -> int | None:
        pids.append(fork(*args))
        return pids[-1]

    monkeypatch.setattr(sheetfork, "FORK_ROWS", 0)
    monkeypatch.setattr(sheetfork, "_fork", spy)
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux")
def test_a_child_writes_the_same_sheet_while_the_parent_writes_the_csvs(
        ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    write_reports(ledger, here, {})
    pids = forked_pids(monkeypatch)
    write_reports(ledger, tmp_path, {})
    assert len(pids) == 1
    assert pids[0] is not None
    assert sheet_xml(tmp_path / "report.xlsx") == sheet_xml(here / "report.xlsx")
    assert (tmp_path / "report.csv").read_bytes() == (here / "report.csv").read_bytes()
    assert stat.S_IMODE((tmp_path / "report.xlsx").stat().st_mode) == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux")
def test_a_child_that_fails_leaves_the_sheet_to_the_parent(
        ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent, written = os.getpid(), []
    write_at = report.write_xlsx_at

    def fails_in_the_child(path: Path, *args: Any, **kwargs: Any) -> None:
        if os.getpid() != parent:
            raise OSError(28, "No space left on device")
        written.append(path)
        write_at(path, *args, **kwargs)

    monkeypatch.setattr(report, "write_xlsx_at", fails_in_the_child)
    pids = forked_pids(monkeypatch)
    write_reports(ledger, tmp_path, {})
    assert pids[0] is not None
    assert len(written) == 1
    rows = list(openpyxl.load_workbook(tmp_path / "report.xlsx")["report"].values)
    assert [r[4] for r in rows[1:]] == [2, 3, 4, 5, 6, 7]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux")
def test_a_parent_that_fails_stops_its_child_and_leaves_no_temp(
        ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()
    write_at = report.write_xlsx_at

    def hangs_in_the_child(*args: Any, **kwargs: Any) -> None:
        if os.getpid() != parent:
            threading.Event().wait(60)  # killed long before
        write_at(*args, **kwargs)

    def disk_full(out: Any, header: list[str], rows: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_xlsx_at", hangs_in_the_child)
    monkeypatch.setattr(report, "write_csv", disk_full)
    pids = forked_pids(monkeypatch)
    with pytest.raises(RunStateError, match="No space left on device"):
        write_reports(ledger, tmp_path, {})
    pid = pids[0]
    assert pid is not None
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(pid, os.WNOHANG)
    assert not (tmp_path / "report.xlsx").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


_KILLED_PARENT = """
import os, signal, sys, threading, time
from pathlib import Path
from batchmove.ledger.store import Ledger
from batchmove.output import sheetfork

run_dir, marker = Path(sys.argv[1]), Path(sys.argv[2])
ledger = Ledger(run_dir).open()

def slow(source, path):  # the child: says its pid, then works for a while
    marker.write_text(str(os.getpid()))
    threading.Event().wait(30)

with sheetfork.sheet_meanwhile(ledger, run_dir / "sheet.tmp", slow):
    while not marker.exists():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)  # the run killed while its sheet is written
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux")
def test_a_killed_parent_takes_its_child_and_the_run_lock_with_it(tmp_path: Path) -> None:
    """`kill -9` of a run while its child writes report.xlsx: the child dies too, and the
    run's lock is free at once (the same command resumes; the child held a copy of the lock's
    descriptor, which kept the lock for as long as it worked)."""
    run_dir, marker = tmp_path / "run", tmp_path / "child.pid"
    run_dir.mkdir()
    done = subprocess.run([sys.executable, "-c", _KILLED_PARENT, str(run_dir), str(marker)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=20,
                          check=False)  # a child alive keeps the pipes open: the timeout
    assert done.returncode == -signal.SIGKILL, done.stderr
    child = int(marker.read_text())
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.02)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)
    assert not is_locked(run_dir)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
