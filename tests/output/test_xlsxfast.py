"""xlsxfast: the files it writes read back right in openpyxl and calamine, and match xlsxwriter.

Two readers, two views of the same cells:
- calamine decodes Excel's `_xHHHH_` escapes as Excel does, so text reads back exactly, except
  U+FFFE and U+FFFF, which it leaves as the escapes `_xFFFE_` and `_xFFFF_`;
- openpyxl returns inline-string text raw: control characters as their escapes
  ("\\x01" -> "_x0001_") and a literal "_x0041_" as its protected form "_x005F_x0041_", exactly
  as it does for a file xlsxwriter writes in constant_memory mode (test_matches_xlsxwriter), so
  its text is compared after `excel_unescape`, the decoding Excel applies.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import openpyxl
import pytest
import xlsxwriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from python_calamine import CalamineWorkbook

from batchmove.output.xlsxfast import CELL_UNITS, RowCountError, write_sheet

Cell = str | int | None
HEADER = ["openid", "分组名称", "row", "status"]
SPECIAL = [
    "分组", "高价值客户", "emoji 😀 outside the BMP 🧑‍🤝‍🧑", "& < > \" '", "'=SUM(A1)", "=SUM(A1)",
    "00123", "1e5", "-5", " leading", "trailing ", "\nnewlines\n", "tab\tinside", "\ttab",
    "a]]>b", "o_x_y", "_x", "_x004",
]


def write(tmp_path: Path, header: Sequence[str], rows: list[list[Cell]], **kwargs: Any) -> Path:
    path = tmp_path / "out.xlsx"
    widths = kwargs.pop("widths", [12.0] * len(header))
    assert write_sheet(path, header, iter(rows), widths=widths, **kwargs) == len(rows)
    return path


def openpyxl_values(path: Path) -> list[list[Any]]:
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    return [[cell.value for cell in row] for row in sheet.iter_rows()]


def calamine_values(path: Path) -> list[list[Any]]:
    sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
    values: list[list[Any]] = sheet.to_python()
    return values


def excel_unescape(text: str) -> str:
    """What Excel shows for the text of a cell: each `_xHHHH_` is the character HHHH."""
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m[1], 16)), text)


def expected_text(value: Cell) -> Cell:
    """The documented changes: lone surrogates -> U+FFFD, Excel's 32,767 UTF-16 unit limit."""
    if not isinstance(value, str):
        return value
    value = re.sub("[\ud800-\udfff]", "\ufffd", value)
    units = value.encode("utf-16-le")[:2 * CELL_UNITS]
    return units.decode("utf-16-le", "ignore")  # a surrogate pair cut in half is dropped


def expected_grid(header: Sequence[str], rows: list[list[Cell]], empty: Any) -> list[list[Any]]:
    """header + rows padded to the header's width, None and "" as empty, no trailing empty rows."""
    table: list[list[Cell]] = [list(header), *rows]
    grid = [[empty if v is None or v == "" else expected_text(v) for v in row]
            + [empty] * (len(header) - len(row)) for row in table]
    while grid and all(v == empty for v in grid[-1]):
        grid.pop()
    return grid


def sheet_xml(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.read("xl/worksheets/sheet1.xml").decode()


def test_values_and_types_round_trip(tmp_path: Path) -> None:
    rows: list[list[Cell]] = [["o_abc", text, n, None] for n, text in enumerate(SPECIAL)]
    rows += [["", None, 2**53, -(2**53)], [None, "moved", 0, "x"], [None]]
    path = write(tmp_path, HEADER, rows)
    read = openpyxl_values(path)
    assert read == expected_grid(HEADER, rows, None)
    assert {type(v) for row in read[1:] for v in row[2:3]} == {int}
    assert read[1 + SPECIAL.index("00123")][1] == "00123"
    assert read[1 + SPECIAL.index("1e5")][1] == "1e5"
    numbers_as_floats = [[float(v) if isinstance(v, int) else v for v in row]
                         for row in expected_grid(HEADER, rows, "")]
    assert calamine_values(path) == numbers_as_floats


@pytest.mark.parametrize(("text", "openpyxl_raw"), [
    ("\x01\x1f", "_x0001__x001F_"),
    ("a\x00b\x0bc\x0cd", "a_x0000_b_x000B_c_x000C_d"),
    ("cr\r\nlf", "cr_x000D_\nlf"),  # an XML parser would turn a raw CR into LF
    ("_x0041_", "_x005F_x0041_"),
    ("keep _x00e9_ and \x02", "keep _x005F_x00e9_ and _x0002_"),
    ("\x01 padded \x01", "_x0001_ padded _x0001_"),
    ("_x0041_x0042_", "_x005F_x0041_x005F_x0042_"),  # overlapping: both "_" protected
    ("_x0041\x01", "_x005F_x0041_x0001_"),  # the escape of \x01 would end an "_x0041_"
    ("_x005F_", "_x005F_x005F_"),
])
def test_excel_escapes(tmp_path: Path, text: str, openpyxl_raw: str) -> None:
    path = write(tmp_path, ["h"], [[text]])
    assert calamine_values(path)[1] == [text]
    assert openpyxl_values(path)[1] == [openpyxl_raw]
    assert excel_unescape(openpyxl_raw) == text


def test_noncharacters_use_excels_escape(tmp_path: Path) -> None:
    path = write(tmp_path, ["h"], [["a\ufffeb\uffff"]])
    assert "<t>a_xFFFE_b_xFFFF_</t>" in sheet_xml(path)
    assert calamine_values(path)[1] == ["a_xFFFE_b_xFFFF_"]  # calamine does not decode these
    assert excel_unescape(openpyxl_values(path)[1][0]) == "a\ufffeb\uffff"


def test_lone_surrogates_become_replacement_characters(tmp_path: Path) -> None:
    path = write(tmp_path, ["h"], [["a\ud800b\udfff"]])
    assert calamine_values(path)[1] == ["a\ufffdb\ufffd"]
    assert openpyxl_values(path)[1] == ["a\ufffdb\ufffd"]


def test_whitespace_at_the_ends_is_preserved(tmp_path: Path) -> None:
    texts = [" a", "a ", "\ta", "a\n", "\n", " ", "a b"]
    path = write(tmp_path, ["h"], [[t] for t in texts])
    assert [row[0] for row in openpyxl_values(path)[1:]] == texts
    assert sheet_xml(path).count('<t xml:space="preserve">') == 6


def test_long_text_is_truncated_to_excels_cell_limit(tmp_path: Path) -> None:
    long_text = "".join(chr(0x4E00 + i % 500) for i in range(40_000))
    pair_at_limit = "a" * (CELL_UNITS - 1) + "😀" + "b"  # the emoji would need units 32767-8
    escapes = "&" * 40_000  # truncated before escaping: 32,767 of them, 5 bytes each
    path = write(tmp_path, ["h"], [[long_text], [pair_at_limit], [escapes]])
    assert [row[0] for row in openpyxl_values(path)[1:]] == [
        long_text[:CELL_UNITS], "a" * (CELL_UNITS - 1), "&" * CELL_UNITS]
    assert [row[0] for row in calamine_values(path)[1:]] == [
        long_text[:CELL_UNITS], "a" * (CELL_UNITS - 1), "&" * CELL_UNITS]


def test_layout(tmp_path: Path) -> None:
    rows: list[list[Cell]] = [[f"o_{i}", "分组07", i, "moved"] for i in range(122)]
    path = write(tmp_path, HEADER, rows, widths=[30.0, 12.5, 8.0, 13.28515625])
    book = openpyxl.load_workbook(path)
    sheet = book.active
    assert sheet is not None
    assert book.sheetnames == ["report"]
    assert [cell.font.b for cell in sheet[1]] == [True] * 4
    assert not sheet["A2"].font.b
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:D123"
    assert sheet.dimensions == "A1:D123"
    assert [sheet.column_dimensions[c].width for c in "ABCD"] == [30.0, 12.5, 8.0, 13.28515625]
    with zipfile.ZipFile(path) as zf:
        workbook = zf.read("xl/workbook.xml").decode()
    assert ('<definedName name="_xlnm._FilterDatabase" localSheetId="0" hidden="1">'
            "'report'!$A$1:$D$123</definedName>") in workbook
    read_only = openpyxl.load_workbook(path, read_only=True).active
    assert read_only is not None
    assert (read_only.max_row, read_only.max_column) == (123, 4)  # from <dimension>


def test_sheet_elements_in_schema_order(tmp_path: Path) -> None:
    xml = sheet_xml(write(tmp_path, HEADER, [["a", "b", 1, "c"]]))
    order = ["dimension", "sheetViews", "sheetFormatPr", "cols", "sheetData", "autoFilter",
             "pageMargins"]
    tags = [tag for tag in re.findall(r"<(\w+)", xml) if tag in order]
    assert tags == order
    assert '<dimension ref="A1:D2"/>' in xml
    assert ('<sheetView tabSelected="1" workbookViewId="0"><pane ySplit="1" topLeftCell="A2" '
            'activePane="bottomLeft" state="frozen"/><selection pane="bottomLeft"/>') in xml


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path, ["a", "", "c"], [])
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    assert openpyxl_values(path) == [["a", None, "c"]]
    assert sheet.auto_filter.ref == "A1:C1"
    assert sheet["B1"].font.b  # a blank header cell keeps the bold style
    assert calamine_values(path) == [["a", "", "c"]]


def test_thirty_columns(tmp_path: Path) -> None:
    header = [f"c{i}" for i in range(30)]
    row: list[Cell] = [*range(29), "last"]
    path = write(tmp_path, header, [row], widths=[float(i + 1) for i in range(30)])
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    assert openpyxl_values(path) == [header, row]
    assert sheet["AD2"].value == "last"
    assert sheet.auto_filter.ref == "A1:AD2"
    assert sheet.column_dimensions["AD"].width == 30.0
    assert sheet.column_dimensions["Z"].width == 26.0


def test_zip_and_content_types(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, [["a", "b", 1, "c"]])
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
        for name in names:
            ElementTree.fromstring(zf.read(name))  # every part is well-formed XML
        types = zf.read("[Content_Types].xml").decode()
    assert names[0] == "[Content_Types].xml"
    assert set(names) == {
        "[Content_Types].xml", "_rels/.rels", "docProps/app.xml", "docProps/core.xml",
        "xl/workbook.xml", "xl/_rels/workbook.xml.rels", "xl/styles.xml",
        "xl/worksheets/sheet1.xml"}
    overridden = set(re.findall(r'<Override PartName="/([^"]+)"', types))
    assert overridden == {n for n in names if not n.endswith(".rels")} - {"[Content_Types].xml"}
    assert '<Default Extension="rels"' in types


def test_sheet_name_is_escaped_and_quoted(tmp_path: Path) -> None:
    path = write(tmp_path, ["h"], [["x"]], sheet_name="R&D's <report>")
    assert openpyxl.load_workbook(path).sheetnames == ["R&D's <report>"]
    assert CalamineWorkbook.from_path(str(path)).sheet_names == ["R&D's <report>"]
    with zipfile.ZipFile(path) as zf:
        workbook = zf.read("xl/workbook.xml").decode()
    assert '<sheet name="R&amp;D\'s &lt;report&gt;" sheetId="1" r:id="rId1"/>' in workbook
    assert "'R&amp;D''s &lt;report&gt;'!$A$1:$A$2</definedName>" in workbook


@pytest.mark.parametrize("name", ["", "x" * 32, "a/b", "a[b]", "a:b", "a*b", "a?b", "a\\b",
                                  "'quoted'", "tab\t", "😀" * 16])
def test_invalid_sheet_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="sheet name"):
        write(tmp_path, ["h"], [], sheet_name=name)
    assert not (tmp_path / "out.xlsx").exists()


def test_longest_sheet_name(tmp_path: Path) -> None:
    path = write(tmp_path, ["h"], [], sheet_name="分" * 31)
    assert openpyxl.load_workbook(path).sheetnames == ["分" * 31]


@pytest.mark.parametrize(("header", "widths", "rows", "error"), [
    ([], [], [], "1 to 16384 columns"),
    (["a", "b"], [1.0], [], "1 widths for 2 columns"),
    (["a"], [256.0], [], "column widths"),
    (["a"], [-1.0], [], "column widths"),
    (["a"], [float("nan")], [], "column widths"),
    (["a"], [1.0], [["x", "y"]], "row 2 has 2 cells; the header has 1"),
])
def test_bad_layout(tmp_path: Path, header: list[str], widths: list[float],
                    rows: list[list[Cell]], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        write_sheet(tmp_path / "out.xlsx", header, rows, widths=widths)
    assert not (tmp_path / "out.xlsx").exists()


@pytest.mark.parametrize("value", [True, 1.5, b"bytes"])
def test_unsupported_cells(tmp_path: Path, value: object) -> None:
    with pytest.raises(TypeError, match=f"cell B2: {type(value).__name__} is not str, int"):
        write_sheet(tmp_path / "out.xlsx", ["a", "b"], [["x", value]],  # type: ignore[list-item]
                    widths=[1.0, 1.0])
    assert not (tmp_path / "out.xlsx").exists()


def test_subclasses_of_int_and_str(tmp_path: Path) -> None:
    class Code(IntEnum):
        OK = 7

    class Text(str):
        pass

    path = write(tmp_path, ["a", "b", "c"], [[Code.OK, Text("t&"), Text("")]])
    assert openpyxl_values(path)[1] == [7, "t&", None]


def test_os_errors_propagate(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_sheet(tmp_path / "missing" / "out.xlsx", ["h"], [], widths=[1.0])


def test_many_rows_stream_in_chunks(tmp_path: Path) -> None:
    rows: Iterator[list[Cell]] = ([f"o_{i}", "分组07", i, "moved"] for i in range(2_500))
    path = tmp_path / "out.xlsx"
    assert write_sheet(path, HEADER, rows, widths=[10.0] * 4) == 2_500
    read = openpyxl_values(path)
    assert len(read) == 2_501
    assert read[-1] == ["o_2499", "分组07", 2499, "moved"]


def test_a_known_row_count_writes_the_same_parts(tmp_path: Path) -> None:
    """With `row_count` the sheet is deflated while rendered: every part as without it (the
    creation time of docProps/core.xml aside)."""
    rows: list[list[Cell]] = [[f"o_{i}", "分组07", i, None if i % 3 else "moved"]
                              for i in range(2_500)]
    plain, counted = tmp_path / "plain.xlsx", tmp_path / "counted.xlsx"
    write_sheet(plain, HEADER, iter(rows), widths=[10.0] * 4)
    assert write_sheet(counted, HEADER, iter(rows), widths=[10.0] * 4, row_count=2_500) == 2_500
    with zipfile.ZipFile(plain) as a, zipfile.ZipFile(counted) as b:
        assert a.namelist() == b.namelist()
        assert [n for n in a.namelist() if a.read(n) != b.read(n)] in ([], ["docProps/core.xml"])
        assert [(i.compress_type, i.extra) for i in a.infolist()] == [
            (i.compress_type, i.extra) for i in b.infolist()]  # deflated, no zip64 either
    assert openpyxl_values(counted)[-2:] == [["o_2498", "分组07", 2498, None],
                                             ["o_2499", "分组07", 2499, "moved"]]


@pytest.mark.parametrize("count", [0, 2, 4])
def test_a_wrong_row_count_leaves_nothing(tmp_path: Path, count: int) -> None:
    path = tmp_path / "out.xlsx"
    with pytest.raises(RowCountError, match=f"3 rows were written, not the {count} announced"):
        write_sheet(path, ["h"], iter([["a"], ["b"], ["c"]]), widths=[5.0], row_count=count)
    assert list(tmp_path.iterdir()) == []


def test_rows_that_raise_with_a_row_count_leave_nothing(tmp_path: Path) -> None:
    def rows() -> Iterator[list[Cell]]:
        yield from ([f"o_{i}"] for i in range(1_500))
        raise RuntimeError("the ledger went away")

    with pytest.raises(RuntimeError, match="the ledger went away"):
        write_sheet(tmp_path / "out.xlsx", ["h"], rows(), widths=[5.0], row_count=1_500)
    assert list(tmp_path.iterdir()) == []


cells = st.one_of(st.none(), st.integers(-(2**53), 2**53), st.text())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 4), data=st.data())
def test_round_trip_property(tmp_path: Path, width: int, data: st.DataObject) -> None:
    header = data.draw(st.lists(st.text(min_size=1, max_size=5), min_size=width, max_size=width))
    rows = data.draw(st.lists(st.lists(cells, max_size=width), max_size=8))
    path = write(tmp_path, header, rows)
    read = [[excel_unescape(v) if isinstance(v, str) else v for v in row]
            for row in openpyxl_values(path)]
    assert read == expected_grid(header, rows, None)
    for row in read:
        assert all(type(v) in (int, str, type(None)) for v in row)
    assert calamine_values(path) == [
        [float(v) if isinstance(v, int) else calamine_view(v) for v in row]
        for row in expected_grid(header, rows, "")]


def calamine_view(text: str) -> str:
    return text.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")


def xlsxwriter_file(path: Path, header: list[str], rows: list[list[Cell]]) -> None:
    """As batchmove.output.report.write_xlsx calls xlsxwriter."""
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_formulas": False,
                                           "strings_to_urls": False})
    sheet = book.add_worksheet("report")
    bold = book.add_format({"bold": True})
    for col, name in enumerate(header):
        sheet.write_string(0, col, name, bold)
        sheet.set_column(col, col, 12)
    sheet.freeze_panes(1, 0)
    n = 0
    for n, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            if isinstance(value, int):
                sheet.write_number(n, col, value)
            elif value:
                sheet.write_string(n, col, value)
    sheet.autofilter(0, 0, n, len(header) - 1)
    book.close()


def test_matches_xlsxwriter(tmp_path: Path) -> None:
    rows: list[list[Cell]] = [
        ["o_" + "A" * 26, "分组07", 1_234_567, "moved"],
        ["o_x0041_", "", None, "x"],
        ["\x01\x1f ctrl \r\n", " 高价值客户 ", -5, "& < > \" '"],
        ["'=SUM(A1)", "00123", 0, "1e5"],
        ["😀", "t" * 40_000, 42, None],
    ]
    ours, theirs = tmp_path / "ours.xlsx", tmp_path / "theirs.xlsx"
    write_sheet(ours, HEADER, rows, widths=[12.0] * 4)
    xlsxwriter_file(theirs, HEADER, rows)
    assert openpyxl_values(ours) == openpyxl_values(theirs)
    assert calamine_values(ours) == calamine_values(theirs)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
def test_a_spreadsheet_application_reads_what_was_written(tmp_path: Path) -> None:
    """LibreOffice (when installed; CI machines have none) opens the file and reads back every
    cell exactly: escapes decoded, `_x0041_` literal, whitespace kept, digit text stays text."""
    header = ["分组 & <x>", "n", "empty", "formula", "spaces", "lines", "literal", "emoji", "ctl"]
    rows: list[list[str | int | None]] = [
        ["高价值客户", 42, None, "'=SUM(A1)", " lead", "a\nb", "_x0041_", "😀", "tab\there\x01"],
        ["00123", -7, "", "1e5", "trail ", "x\n\ny", "_x", "", "ok"],  # (LO reads CR LF as LF)
    ]
    write_sheet(tmp_path / "t.xlsx", header, rows, widths=[12.0] * len(header))
    subprocess.run(["soffice", "--headless", f"-env:UserInstallation=file://{tmp_path}/lo",
                    "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76",
                    "--outdir", str(tmp_path), str(tmp_path / "t.xlsx")],
                   check=True, capture_output=True, timeout=120)
    with (tmp_path / "t.csv").open(encoding="utf-8", newline="") as f:
        got = list(csv.reader(f))
    assert got == [header, *[["" if c is None else str(c) for c in row] for row in rows]]
