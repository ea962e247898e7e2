"""The loader: every format, encoding, alias and rejection, with exact rows and messages."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlsxwriter

from batchmove.errors import InputError
from batchmove.intake import loader, rowcheck
from batchmove.intake.loader import LoadedInput, open_input
from batchmove.models import ColumnMap, Credentials, InputRow, JobSpec, RowStatus

P, X, D = RowStatus.PENDING, RowStatus.INVALID, RowStatus.DUPLICATE
A = "oAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # 28 characters, like a real openid
B = "oBBBBBBBBBBBBBBBBBBBBBBBBBBB"
C = "oCCCCCCCCCCCCCCCCCCCCCCCCCCC"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def write_xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    book = xlsxwriter.Workbook(str(path))
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is None:
                    continue
                if isinstance(value, datetime):
                    sheet.write_datetime(r, c, value, book.add_format({"num_format": "yyyy-mm-dd"}))
                else:
                    sheet.write(r, c, value)
    book.close()
    return path


@pytest.fixture(autouse=True, params=["csv", "pandas"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with both CSV readers: the csv module (small files) and pandas (big ones),
    the big files' repeats found with numpy."""
    if request.param == "pandas":
        monkeypatch.setattr(loader, "SMALL_CSV_BYTES", 0)
        monkeypatch.setattr(rowcheck, "NUMPY_REPEATS_AT", 0)
    return str(request.param)


def load(path: Path, chunk_size: int = 100_000, **spec: Any) -> tuple[LoadedInput, list[InputRow]]:
    """Every row as the ledger ends up with it: the chunks, then the settled duplicates."""
    source = open_input(JobSpec(input=path, **spec))
    rows = [row for chunk in source.rows(chunk_size) for row in chunk]
    return source, settled(source, rows)


def settled(source: LoadedInput, rows: list[InputRow]) -> list[InputRow]:
    by_row = {r.row: r for r in rows}
    for number, status, reason in source.settle(
            lambda wanted: [by_row[n][:3] for n in wanted]):
        assert by_row[number].status == "pending"  # only rows yielded pending are amended
        by_row[number] = by_row[number]._replace(status=status, reason=reason)
    return list(by_row.values())


def brief(rows: list[InputRow]) -> list[tuple[int, str, str, str, str]]:
    return [(r.row, r.openid, r.target, r.status, r.reason) for r in rows]


def refused(path: Path, **spec: Any) -> str:
    with pytest.raises(InputError) as info:
        load(path, **spec)
    message = info.value.message
    assert "\n" not in message
    return message


# --- formats and encodings ---------------------------------------------------------------------
@pytest.mark.parametrize(("name", "sep"), [
    ("in.csv", ","), ("in.csv", ";"), ("in.tsv", "\t"), ("in.txt", "\t"), ("in.txt", ","),
])
def test_delimiters(tmp_path: Path, name: str, sep: str) -> None:
    path = write(tmp_path / name, f"openid{sep}group_name{sep}note\n{A}{sep}VIP{sep}hi, there\n"
                 if sep != "," else f'openid,group_name,note\n{A},VIP,"hi, there"\n')
    source, rows = load(path)
    assert (source.format, source.delimiter) == ("csv", sep)
    assert rows == [InputRow(2, A, "VIP", P, "", ("hi, there",))]


@pytest.mark.parametrize(("encoding", "detected"), [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"),
    ("utf-16-be", "utf-16"), ("gb18030", "gb18030"), ("gbk", "gb18030"),
])
def test_encodings(tmp_path: Path, encoding: str, detected: str) -> None:
    text = f"用户openid,目标分组\n{A},新用户\n{B},沉睡用户\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    source, rows = load(path)
    assert source.encoding == detected
    assert source.headers == ["用户openid", "目标分组"]
    assert brief(rows) == [(2, A, "新用户", "pending", ""), (3, B, "沉睡用户", "pending", "")]


def test_encoding_override(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"openid,分组\n{A},新用户\n", "gb18030")
    source, rows = load(path, encoding="gb18030")
    assert source.encoding == "gb18030"
    assert rows[0].target == "新用户"
    assert refused(path, encoding="utf-8").endswith(
        "cannot decode the file as utf-8: set `encoding` in the job file (or --encoding) "
        "to the file's encoding")


def test_undecodable_names_encodings_tried(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"openid,group\n" + A.encode() + b",\x81\x20\xff\n")
    assert refused(path) == (f"{path}: cannot decode the file as utf-8, gb18030: set `encoding` "
                             "in the job file (or --encoding) to the file's encoding")


def test_xlsx_numbers_dates_and_blank_rows(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "in.xlsx", {"名单": [
        [None], ["OpenID", "分组ID", "when", "n"],
        [A, 108, datetime(2026, 11, 2), 7],
        [], [B, 108.0, None, 1.5],
        [C, 1.5, True, "007"],
    ]})
    source, rows = load(path)
    assert (source.format, source.sheet, source.target_kind) == ("xlsx", "名单", "id")
    assert source.headers == ["OpenID", "分组ID", "when", "n"]
    assert rows == [
        InputRow(3, A, "108", P, "", ("2026-11-02", "7")),
        InputRow(5, B, "108", P, "", ("", "1.5")),
        InputRow(6, C, "1.5", X, "group id must be a whole number >= 0", ("TRUE", "007")),
    ]
    assert source.stats.blank == 1


def test_xlsx_via_openpyxl_text_ids_and_sheet_choice(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.title = "说明"
    first.append(["这是说明"])
    data = book.create_sheet("data")
    data.append(["open_id", "group_id", "分组"])
    data.append([A, "0108", "VIP"])
    data.append([B, 108.0, "VIP"])
    book.save(tmp_path / "in.xlsm")
    source, rows = load(tmp_path / "in.xlsm")
    assert source.sheet == "data"
    assert source.target_column == "group_id"
    assert brief(rows) == [(2, A, "108", "pending", ""), (3, B, "108", "pending", "")]
    _, by_name = load(tmp_path / "in.xlsm", target="name")
    assert [r.target for r in by_name] == ["VIP", "VIP"]
    assert [r.extra for r in by_name] == [("0108",), ("108",)]


@pytest.mark.parametrize(("sheet", "expected"), [("data", "data"), ("DATA ", "data"), (1, "data")])
def test_sheet_by_name_or_index(tmp_path: Path, sheet: str | int, expected: str) -> None:
    path = write_xlsx(tmp_path / "in.xlsx", {"a": [["openid", "group"], [A, "x"]],
                                             "data": [["openid", "group"], [B, "y"]]})
    source, rows = load(path, sheet=sheet)
    assert source.sheet == expected
    assert rows[0].openid == B


@pytest.mark.parametrize(("sheet", "message"), [
    ("nope", "there is no sheet named 'nope'; sheets: 0: 'a', 1: 'b'"),
    (5, "there is no sheet number 5 (counted from 0); sheets: 0: 'a', 1: 'b'"),
])
def test_missing_sheet(tmp_path: Path, sheet: str | int, message: str) -> None:
    path = write_xlsx(tmp_path / "in.xlsx", {"a": [["x"]], "b": [["y"]]})
    assert refused(path, sheet=sheet) == f"{path}: {message}"


def test_no_sheet_fits_lists_sheets_and_headers(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "in.xlsx", {"a": [["name", "phone"]], "b": [["openid"]]})
    assert refused(path) == (
        f"{path}: no sheet has an openid column and a target group column; sheets and their "
        "headers: 'a': ['name', 'phone']; 'b': ['openid']; pick one with `sheet` and name the "
        "columns under [columns]")


# --- columns -----------------------------------------------------------------------------------
@pytest.mark.parametrize("openid", ["openid", "OpenID", " open_id ", "Open ID", "用户openid",
                                    "用户OpenID", "openid列表", "粉丝OpenID"])
@pytest.mark.parametrize(("target", "kind"), [
    ("to_groupid", "id"), ("groupid", "id"), ("Group_ID", "id"), ("分组id", "id"),
    ("分组ID", "id"), ("目标分组id", "id"), ("group_name", "name"), ("group", "name"),
    ("GroupName", "name"), ("分组", "name"), ("目标分组", "name"), ("分组名称", "name"),
    ("分组名", "name"),
])
def test_aliases(tmp_path: Path, openid: str, target: str, kind: str) -> None:
    path = write(tmp_path / "in.csv", f"{openid},{target}\n{A},108\n")
    source, rows = load(path)
    assert (source.openid_column, source.target_column) == (openid.strip(), target)
    assert source.target_kind == kind
    assert rows[0].target == "108"


def test_id_column_wins_unless_target_name(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"group_name,openid,groupid\nVIP,{A},108\n")
    source, rows = load(path)
    assert source.target_kind == "id"
    assert rows == [InputRow(2, A, "108", P, "", ("VIP",))]
    source, rows = load(path, target="name")
    assert source.target_kind == "name"
    assert rows == [InputRow(2, A, "VIP", P, "", ("108",))]


def test_explicit_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"粉丝,去向,备注\n{A},VIP,x\n")
    source, rows = load(path, columns=ColumnMap(openid="粉丝", group_name="去向"))
    assert source.target_kind == "name"
    assert rows == [InputRow(2, A, "VIP", P, "", ("x",))]


@pytest.mark.parametrize(("header", "spec", "message"), [
    ("name,phone", {}, "no matching columns: need an openid column and a group id column or a "
     "group name column; found ['name', 'phone']; name them under [columns] in the job file"),
    ("openid,groupid", {"target": "name"}, "no matching columns: need an openid column and a "
     "group name column; found ['openid', 'groupid']; name them under [columns] in the job file"),
    ("openid,x", {"columns": ColumnMap(group_id="gid")}, "no matching columns: need an openid "
     "column and group id ('gid') or a group name column; found ['openid', 'x']; name them "
     "under [columns] in the job file"),
    ("openid,group,group", {}, "duplicate column name 'group' (columns 2 and 3); rename one"),
    ("openid,open_id,group", {}, "both 'openid' and 'open_id' could be the openid column; name "
     "one with `openid = ...` under [columns] in the job file"),
])
def test_column_errors(tmp_path: Path, header: str, spec: dict[str, Any], message: str) -> None:
    path = write(tmp_path / "in.csv", f"{header}\n{A},1,2\n")
    assert refused(path, **spec) == f"{path}: {message}"


# --- cells -------------------------------------------------------------------------------------
def test_cells_are_text_as_typed(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "openid,group,note\n"
                 f"{A},NA,null\n{B},None,NaN\n{C},007,\n"
                 f"\u3000oDDDDDDDDDDDDD\xa0, 1.0 ,  x  \n")
    _, rows = load(path)
    assert brief(rows) == [(2, A, "NA", "pending", ""), (3, B, "None", "pending", ""),
                           (4, C, "007", "pending", ""),
                           (5, "oDDDDDDDDDDDDD", "1.0", "pending", "")]
    assert [r.extra for r in rows] == [("null",), ("NaN",), ("",), ("x",)]


def test_no_other_columns_means_extra_none(tmp_path: Path) -> None:
    _, rows = load(write(tmp_path / "in.csv", f"openid,groupid\n{A},7\n"))
    assert rows[0].extra is None


@pytest.mark.parametrize(("openid", "target", "reason"), [
    ("", "VIP", "missing openid"),
    ("=HYPERLINK(\"x\")", "VIP", "openid looks like a formula"),
    ("https://mp.weixin.qq.com/x", "VIP", "openid looks like a URL"),
    ("o" * 65, "VIP", "openid is longer than 64 characters"),
    ("o12345678", "VIP", "openid is shorter than 10 characters"),
    ("o1234567890中文", "VIP", "openid may contain only letters, digits, '_' and '-'"),
    ("o123 4567890", "VIP", "openid may contain only letters, digits, '_' and '-'"),
    (A, "", "missing group name"),
    (A, "=1+1", "group name looks like a formula"),
    (A, "名" * 31, "group name is longer than 30 characters"),
    (A, "名" * 30, ""),
    ("o_-1234567", "a", ""),
])
def test_rejections_by_name(tmp_path: Path, openid: str, target: str, reason: str) -> None:
    quoted = openid.replace('"', '""')
    path = write(tmp_path / "in.csv", f'openid,group_name,n\n"{quoted}",{target},1\n')
    _, rows = load(path)
    assert (rows[0].status, rows[0].reason) == ((X, reason) if reason else (P, ""))


@pytest.mark.parametrize(("cell", "target", "reason"), [
    ("108", "108", ""), ("108.0", "108", ""), ("0108", "108", ""), ("0", "0", ""),
    ("000", "0", ""), ("108.00", "108", ""),
    ("", "", "missing group id"), ("-3", "-3", "group id must be a whole number >= 0"),
    ("1.5", "1.5", "group id must be a whole number >= 0"),
    ("abc", "abc", "group id must be a whole number >= 0"),
    ("1e3", "1e3", "group id must be a whole number >= 0"),
    ("１０８", "１０８", "group id must be a whole number >= 0"),
    ("9" * 19, "9" * 19, "group id is too large"),
])
def test_group_ids(tmp_path: Path, cell: str, target: str, reason: str) -> None:
    _, rows = load(write(tmp_path / "in.csv", f"openid,to_groupid\n{A},{cell}\n"))
    assert (rows[0].target, rows[0].reason) == (target, reason)


def test_giant_cells_are_capped(tmp_path: Path) -> None:
    giant = "x" * 5_000_000
    path = write(tmp_path / "in.csv", f"openid,group,note\n{giant},VIP,{giant}\n{A},VIP,ok\n")
    _, rows = load(path)
    assert rows[0].reason == "openid is longer than 64 characters"
    assert rows[0].openid == "x" * 1000 + "…[truncated]"
    assert rows[0].extra == ("x" * 1000 + "…[truncated]",)
    assert rows[1].status == P


def test_row_numbers_skip_blank_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"\n,,\nopenid,group,note\n{A},x,\n\n , ,\u3000\n"
                 f'{B},"multi\nline",\n,,\n{C},y,z\n')
    source, rows = load(path)
    assert [r.row for r in rows] == [4, 7, 9]
    # a newline inside quotes is one Excel row (and no part of a group name)
    assert rows[1].reason == "group name contains control characters"
    assert (source.stats.rows, source.stats.blank) == (3, 3)


def test_ragged_row_is_a_row_verdict(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"openid,group\n{A},x\n{B},y,extra,more\n{C},z\n")
    source, rows = load(path)
    assert brief(rows) == [(2, A, "x", "pending", ""),
                           (3, B, "y", "invalid", "row has 4 cells, the header has 2"),
                           (4, C, "z", "pending", "")]
    assert (source.stats.valid, source.stats.invalid, source.stats.unreadable) == (2, 1, 1)
    assert source.stats.invalid_by_reason == {"row has 4 cells, the header has 2": 1}


@pytest.mark.parametrize("chunk_size", [1, 2, 100])
def test_ragged_rows_after_blank_lines_and_in_later_chunks(tmp_path: Path,
                                                           chunk_size: int) -> None:
    path = write(tmp_path / "in.csv", f"\nopenid,group\n{A},x\n{B},y\n{C},x,extra\n,,,\n"
                 f"{A}1,w\n")
    _, rows = load(path, chunk_size)
    assert brief(rows) == [(3, A, "x", "pending", ""), (4, B, "y", "pending", ""),
                           (5, C, "x", "invalid", "row has 3 cells, the header has 2"),
                           (7, f"{A}1", "w", "pending", "")]


@pytest.mark.parametrize("text", [
    f'openid,group\n{A},"x\n{B},y\n{C},z\n',  # closed nowhere: ends the file inside it
    f'openid,group\n{A},"x\n{B},y\n{C},"z"1,2,3\n',  # closed on a later line, badly
    f'openid,group\n{A},"x' + "\nq,r" * 150 + f"\n{B},y\n{C},z\n",  # closed too far away
])
def test_unclosed_quote_costs_its_own_line_only(tmp_path: Path, text: str) -> None:
    _, rows = load(write(tmp_path / "in.csv", text))
    assert rows[0][:5] == (2, A, "x", "invalid", "a quoted cell is not closed on its line")
    assert [r.openid for r in rows if r.status == "pending"][:1] == [B]
    assert rows[-1].openid == C


def test_quoted_line_breaks_stay_one_row_beside_ragged_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f'openid,group,note\n{A},x,"two\nlines"\n'
                 f"{B},y,n,extra\n{C},z,n\n")
    _, rows = load(path)
    assert brief(rows) == [(2, A, "x", "pending", ""),
                           (3, B, "y", "invalid", "row has 4 cells, the header has 3"),
                           (4, C, "z", "pending", "")]
    assert rows[0].extra == ("two\nlines",)


def test_file_of_only_ragged_rows_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"openid,group\n{A},x,1\n{B},y,2\n")
    assert refused(path) == (f"{path}: no row could be read: row 2: row has 3 cells, the "
                             "header has 2")


def test_short_rows_are_padded(tmp_path: Path) -> None:
    _, rows = load(write(tmp_path / "in.csv", f"openid,group,note\n{A},x\n{B}\n"))
    assert brief(rows) == [(2, A, "x", "pending", ""), (3, B, "", "invalid", "missing group name")]


# --- duplicates, conflicts, blacklist ----------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_duplicates_and_conflicts_across_chunks(tmp_path: Path, chunk_size: int) -> None:
    path = write(tmp_path / "in.csv", "openid,group\n" + "".join(f"{o},{g}\n" for o, g in [
        (A, "x"), (B, "x"), (A, "x"), (C, "y"), (A, "z"), (B, "x"), (A, "x"), ("bad", "x"),
    ]))
    source, rows = load(path, chunk_size)
    final = {r.row: (r.status, r.reason) for r in rows}
    assert final == {
        2: (X, 'conflict: row 6 asks for group "z"'),
        3: (P, ""),
        4: (X, 'conflict: row 6 asks for group "z"'),
        5: (P, ""),
        6: (X, 'conflict: row 2 asks for group "x"'),
        7: (D, "duplicate of row 3"),
        8: (X, 'conflict: row 6 asks for group "z"'),
        9: (X, "openid is shorter than 10 characters"),
    }
    stats = source.stats
    assert (stats.rows, stats.valid, stats.duplicates, stats.invalid) == (8, 2, 1, 5)
    assert stats.invalid_by_reason == {"conflict": 4, "openid is shorter than 10 characters": 1}


def test_duplicates_are_settled_after_the_last_chunk(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"openid,groupid\n{A},5\n{B},5\n{A},6\n{C},x\n")
    source = open_input(JobSpec(input=path))
    chunks = list(source.rows(2))
    assert [r.status for chunk in chunks for r in chunk] == [P, P, P, X]  # C: bad group id
    asked: list[list[int]] = []

    def lookup(rows: list[int]) -> list[tuple[int, str, str]]:
        asked.append(rows)
        return [(2, A, "5"), (4, A, "6")]

    verdicts = [(2, X, "conflict: row 4 asks for group 6"),
                (4, X, "conflict: row 2 asks for group 5")]
    assert source.settle(lookup) == verdicts
    assert asked == [[2, 4]]  # only the rows whose openid repeats are read back
    assert source.amendments == verdicts
    stats = source.stats
    assert (stats.valid, stats.duplicates, stats.invalid) == (1, 0, 3)


def test_blacklist_refused_after_last_chunk(tmp_path: Path) -> None:
    lines = "".join(f"o{i:027d},{1 if i % 2 else 3}\n" for i in range(20))
    path = write(tmp_path / "in.csv", "openid,groupid\n" + lines)
    source = open_input(JobSpec(input=path))
    chunks = source.rows(7)
    seen = [*next(chunks), *next(chunks), *next(chunks)]
    assert len(seen) == 20
    with pytest.raises(InputError) as info:
        next(chunks)
    assert info.value.message == (
        f"{path}: 10 row(s) would move users into group 1 (黑名单, the blacklist), e.g. row(s) "
        "3, 5, 7, 9, 11, ...; nothing was sent: pass --allow-blacklist (allow_blacklist = true) "
        "if that is really meant")
    _, rows = load(path, allow_blacklist=True)
    assert len(rows) == 20


def test_blacklist_by_name_is_left_to_the_engine(tmp_path: Path) -> None:
    _, rows = load(write(tmp_path / "in.csv", f"openid,group\n{A},1\n{B},黑名单\n"))
    assert [r.status for r in rows] == [P, P]


# --- refused files -----------------------------------------------------------------------------
def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(("name", "data", "message"), [
    ("in.csv", b"", "the file is empty"),
    ("in.xlsx", b"", "the file is empty"),
    ("in.csv", b"\n\n , \n", "the file has no header row (it is blank)"),
    ("in.csv", b"openid\x00,group\n",
     "this is a binary file (it contains NUL bytes), not CSV text"),
    ("in.csv", b"\x89PNG\r\n\x1a\nxxxx", "this is a PNG image, not a spreadsheet"),
    ("in.xlsx", b"\xff\xd8\xff\xe0JFIF", "this is a JPEG image, not a spreadsheet"),
    ("in.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1", "this is an old Excel 97-2003 (.xls) or "
     "password-protected workbook: save it as .xlsx (without a password) or .csv, "
     "not a spreadsheet"),
    ("in.xlsx", f"openid,group\n{A},x\n".encode(), "this is a text (CSV) file, not an Excel "
     "workbook: rename it to .csv"),
    ("in.csv", b"openid,group\x01\x02\n", "this looks like a binary file (control characters), "
     "not CSV text"),
    ("in.xls", b"whatever", "old Excel 97-2003 (.xls) files are not supported: save it as "
     ".xlsx or .csv"),
    ("in.json", b"{}", "unsupported file type '.json': use .csv, .tsv, .txt, .xlsx or .xlsm"),
    ("in.xlsx", b"PK\x03\x04garbage",
     "this is not a readable Excel workbook: File is not a zip file"),
])
def test_refused_files(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert refused(path) == f"{path}: {message}"


def test_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "in.xlsx", {"readme.txt": b"hello"})
    assert refused(path) == (f"{path}: this is a zip archive but not an Excel workbook "
                             "(no xl/workbook.xml)")
    xlsx = write_xlsx(tmp_path / "real.xlsx", {"a": [["openid", "group"], [A, "x"]]})
    renamed = tmp_path / "in.csv"
    renamed.write_bytes(xlsx.read_bytes())
    assert refused(renamed) == (f"{renamed}: this is a zip archive (an Excel workbook?), not CSV "
                                "text: rename it to .xlsx if it is a workbook")


def test_zip_bomb_is_refused_before_parsing(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "in.xlsx", {"xl/workbook.xml": b"<workbook/>",
                                           "xl/worksheets/sheet1.xml": b"\0" * (64 << 20)})
    info = zipfile.ZipFile(path).getinfo("xl/worksheets/sheet1.xml")
    ratio = info.file_size / info.compress_size
    assert refused(path) == (f"{path}: xl/worksheets/sheet1.xml is compressed {ratio:.0f}:1 "
                             "(a zip bomb?); refusing it")


def test_absurd_dimension_is_refused(tmp_path: Path) -> None:
    sheet = b'<worksheet><dimension ref="A1:XFD1048576"/><sheetData/></worksheet>'
    path = make_zip(tmp_path / "in.xlsx", {"xl/workbook.xml": b"<workbook/>",
                                           "xl/worksheets/sheet1.xml": sheet})
    assert refused(path) == (f"{path}: xl/worksheets/sheet1.xml spans 16384 columns; "
                             "at most 1000 are supported")


def test_too_many_csv_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "openid,group" + ",x" * 1000 + "\n")
    assert refused(path) == (f"{path}: the header row has 1002 columns; at most 1000 are "
                             "supported")


@pytest.mark.parametrize("name", ["missing.csv", "dir.csv"])
def test_missing_or_not_a_file(tmp_path: Path, name: str) -> None:
    (tmp_path / "dir.csv").mkdir()
    path = tmp_path / name
    what = "does not exist" if name == "missing.csv" else "is not a file"
    assert refused(path) == f"{path}: {what}"


def test_fingerprint_and_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "openid,group\n")
    source = open_input(JobSpec(input=path))
    assert source.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InputError) as info:  # nothing to move: exit 2, one line
        load(path)
    assert info.value.message == f"{path}: no data rows (a header only): nothing to move"
    blank = write(tmp_path / "blank.csv", "openid,group\n\n , \n")
    with pytest.raises(InputError, match=r"no data rows \(a header and 2 blank rows only\)"):
        load(blank)


def test_rows_can_be_read_twice(tmp_path: Path) -> None:
    source = open_input(JobSpec(input=write(tmp_path / "in.csv", f"openid,group\n{A},1\n{A},2\n")))
    first = [r for chunk in source.rows() for r in chunk]
    again = [r for chunk in source.rows() for r in chunk]
    assert again == first
    assert [r.status for r in settled(source, again)] == ["invalid", "invalid"]
    assert source.stats.invalid == 2



# --- one account's rows of an input with an appid column (a platform job) ----------------------
WX_A, WX_B = "wxauthaaaaaa01", "wxauthbbbbbb02"


def one_account(appid: str = WX_B) -> dict[str, Any]:
    """A run of one account of a platform job (as `run JOB --account APPID` is)."""
    return {"credentials": Credentials(component=True), "account": appid}


@pytest.mark.parametrize("chunk_size", [1, 2, 100])
def test_one_accounts_rows_keep_their_numbers_in_the_file(tmp_path: Path,
                                                          chunk_size: int) -> None:
    path = write(tmp_path / "in.csv", f"appid,openid,group\n{WX_A},{A},x\n{WX_B},{B},y\n,,\n"
                 f"{WX_A},{C},z\n{WX_B},bad!,y\n{WX_B},{C},w,extra\n{WX_B},{A},v\n")
    source, rows = load(path, chunk_size, **one_account())
    assert [(r.row, r.openid, r.status, r.reason) for r in rows] == [
        (3, B, P, ""), (6, "bad!", X, "openid is shorter than 10 characters"),
        (7, C, X, "row has 4 cells, the header has 3"), (8, A, P, "")]  # A: not row 2's
    assert source.headers == ["appid", "openid", "group"]
    assert all(r.extra == (WX_B,) for r in rows)
    _, theirs = load(path, chunk_size, **one_account(WX_A))
    assert [r.row for r in theirs] == [2, 5]


def test_one_accounts_rows_of_a_workbook(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "in.xlsx", {"s": [
        [None], ["AppID", "openid", "group"], [WX_B, A, "x"], [WX_A, B, "y"], [], [WX_B, C, 7]]})
    source, rows = load(path, **one_account())
    assert [(r.row, r.openid, r.target) for r in rows] == [(3, A, "x"), (6, C, "7")]
    assert source.appids() == {WX_A, WX_B}


def test_one_accounts_fingerprint_is_of_its_own_rows(tmp_path: Path) -> None:
    def fingerprint(text: str, appid: str = WX_B) -> str:
        path = write(tmp_path / "in.csv", "appid,openid,group\n" + text)
        return open_input(JobSpec(input=path, **one_account(appid))).fingerprint

    base = fingerprint(f"{WX_A},{A},x\n{WX_B},{B},y\n")
    assert fingerprint(f"{WX_A},{A},CHANGED\n{WX_B},{B},y\n") == base  # another's row
    assert fingerprint(f"{WX_A},{A},x\n{WX_B},{B},z\n") != base  # its own row
    assert fingerprint(f"{WX_A},{A},x\n{WX_A},{C},x\n{WX_B},{B},y\n") != base  # row 3 -> 4
    assert fingerprint(f"{WX_A},{A},x\n{WX_B},{B},y\n", WX_A) != base
    path = write(tmp_path / "in.csv", f"appid,openid,group\n{WX_B},{B},y\n")
    assert open_input(JobSpec(input=path)).fingerprint == hashlib.sha256(
        path.read_bytes()).hexdigest()  # not one account's run: the file's


@pytest.mark.parametrize("kept", [1, 100_000])
def test_one_accounts_rows_are_read_once_when_few(tmp_path: Path, kept: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "OWN_ROWS_KEPT", kept)
    path = write(tmp_path / "in.csv", f"appid,openid,group\n{WX_A},{A},x\n{WX_B},{B},y\n"
                 f"{WX_A},{C},z\n{WX_B},{C},w\n")
    source = open_input(JobSpec(input=path, **one_account()))
    assert source.fingerprint
    if kept > 2:
        path.unlink()  # its two rows were kept from the fingerprint's read of the file
    rows = [r for chunk in source.rows(1) for r in chunk]
    assert [(r.row, r.openid) for r in rows] == [(3, B), (5, C)]


def test_the_appids_an_input_names(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"openid,group, AppId \n{A},x,{WX_A}\n,,\n{B},y,{WX_B}\n")
    assert open_input(JobSpec(input=path)).appids() == {WX_A, WX_B}
    path = write(tmp_path / "in.csv", f"openid,group,appid\n{A},x,{WX_A}\n,,\n{B},y,\n")
    with pytest.raises(InputError, match=f"^{path}: row 4 has no appid$"):
        open_input(JobSpec(input=path)).appids()
    path = write(tmp_path / "in.csv", f"openid,group\n{A},x\n")
    assert open_input(JobSpec(input=path)).appids() is None

# The start-up cost the first API call waits for (issue 15): neither numpy nor pandas is imported
# to read, validate and de-duplicate a small CSV (numpy alone took ~0.08 s).
_LOAD_WITHOUT_NUMPY = """
import sys
from pathlib import Path
import batchmove.cli, batchmove.flows.run
from batchmove.intake.loader import open_input
from batchmove.models import JobSpec
source = open_input(JobSpec(input=Path(sys.argv[1])))
rows = [r for chunk in source.rows() for r in chunk]
verdicts = source.settle(lambda numbers: [r[:3] for r in rows if r.row in numbers])
print(len(rows), verdicts, sorted(m for m in ("numpy", "pandas") if m in sys.modules))
"""


def test_a_small_csv_loads_without_numpy_or_pandas(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"openid,group\n{A},x\n{B},y\n{A},x\n,\n")
    done = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_NUMPY, str(path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0] == (
        "3 [(4, <RowStatus.DUPLICATE: 'duplicate'>, 'duplicate of row 2')] []")
