"""The shape of a file learned as its bytes go by: lines and quoted cells too long to parse,
and worksheet rows too wide, refused before a parser sees them (small limits, small blocks:
the same arithmetic as 16 MB in 1 MB blocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchmove.errors import InputError
from batchmove.intake.shape import LONG_LINE_BYTES, SheetRows, TextShape

PATH = Path("in.csv")


def _feed(data: bytes, limit: int = 50, block: int = 7) -> TextShape:
    shape = TextShape(PATH, limit)
    for at in range(0, len(data), block):
        shape.feed(data[at:at + block])
    return shape


@pytest.mark.parametrize("data", [
    b"openid,group\n" + b"o" * 45 + b",G\n" * 3,
    b'a,"b\nc",d\n' * 20,  # quoted cells over two lines, closed
    b'a,"b,",c' + b"x" * 40 + b"\n" + b"y" * 45 + b"\n",  # the quote of "b," closes its cell
    b'size,5" display' + b"\n" + b"z" * 45 + b"\n" * 5,  # a stray quote opens nothing
    b'a,"",' + (b"x" * 40 + b"\n") * 3,  # an empty quoted cell
    b"",
])
def test_ordinary_shapes_pass(data: bytes) -> None:
    assert not _feed(data).long_lines


@pytest.mark.parametrize("block", [1, 7, 64])
def test_a_line_longer_than_the_limit_is_refused_with_its_number(block: int) -> None:
    data = b"openid,group\nok,G\n" + b"o" * 51 + b",G\nnext,G\n"
    with pytest.raises(InputError, match=r"^in.csv: line 3 is longer than 0 MB"):
        _feed(data, block=block)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_a_quoted_cell_left_open_is_refused_with_its_line(block: int) -> None:
    data = b"openid,note\nok,fine\nbad,\"" + b"z" * 10 + b"\n" + (b"z" * 9 + b"\n") * 6
    with pytest.raises(InputError, match=r"^in.csv: line 3 opens a quoted cell that is not "
                                         "closed within 0 MB"):
        _feed(data, block=block)


def test_a_quoted_cell_at_the_very_start_counts() -> None:
    with pytest.raises(InputError, match="line 1 opens a quoted cell"):
        _feed(b'"' + b"\n" * 60)


def test_long_lines_are_noted_not_refused() -> None:
    shape = TextShape(PATH)
    line = b"o," * (LONG_LINE_BYTES // 2 + 10) + b"\n"
    for at in range(0, len(line), 1 << 20):
        shape.feed(line[at:at + (1 << 20)])
    assert shape.long_lines


def _sheet(rows: list[int]) -> bytes:
    return b"<sheetData>" + b"".join(
        b"<row>" + b'<c t="s"><v>1</v></c>' * n + b"</row>" for n in rows) + b"</sheetData>"


@pytest.mark.parametrize("block", [5, 64, 1 << 20])
def test_sheet_rows_as_wide_as_allowed_pass(block: int) -> None:
    rows = SheetRows(PATH, "xl/worksheets/sheet1.xml", 10)
    data = _sheet([3, 10, 1, 10])
    for at in range(0, len(data), block):
        rows.feed(data[at:at + block])


@pytest.mark.parametrize("block", [5, 64, 1 << 20])
def test_a_sheet_row_wider_than_allowed_is_refused(block: int) -> None:
    rows = SheetRows(PATH, "xl/worksheets/sheet1.xml", 10)
    data = _sheet([3, 2, 40, 1])
    blocks = [data[at:at + block] for at in range(0, len(data), block)]
    with pytest.raises(InputError, match=r"sheet1\.xml has a row of about (1[1-9]|40) cells"):
        _ = [rows.feed(b) for b in blocks]  # as soon as the row is seen past 10
