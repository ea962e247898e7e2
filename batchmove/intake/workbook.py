"""Excel input through python-calamine: pick the sheet, find its header row, turn cells to text.

calamine reads 200,000 rows in about a second where openpyxl needs a minute. It hands back
floats for numbers and datetimes for dates; `cell_text` renders them the way Excel shows them
(108.0 -> "108"), so the loader sees text only, exactly as for a CSV file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import python_calamine

from batchmove.errors import InputError
from batchmove.intake.columns import Columns, check_headers, listing, missing, resolve
from batchmove.intake.rowcheck import unneutralise
from batchmove.intake.sniff import MAX_COLUMNS
from batchmove.models import JobSpec

HEADER_SEARCH_ROWS = 1_000  # a header further down than this is not a header


def cell_text(value: Any) -> str:
    """A cell as the analyst typed it: integers without `.0`, dates without midnight."""
    if value.__class__ is str:
        return str(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


@dataclass(slots=True)
class Sheet:
    """The chosen sheet, its header row (0-based physical row) and the columns to read."""

    name: str
    sheet: Any  # python_calamine.CalamineSheet
    header_index: int
    headers: list[str]
    columns: Columns

    def chunks(self, size: int) -> Iterator[tuple[int, list[list[str]]]]:
        """(row number of the first row, rows as text) for each block of data rows."""
        rows = iter(self.sheet.iter_rows())
        for _ in islice(rows, self.header_index + 1):
            pass
        first = self.header_index + 2
        while block := list(islice(rows, size)):
            yield first, [[c if c.__class__ is str else cell_text(c) for c in r] for r in block]
            first += len(block)


def open_sheet(path: Path, spec: JobSpec) -> Sheet:
    """The sheet asked for, or the first one whose header has the needed columns."""
    book = python_calamine.CalamineWorkbook.from_path(str(path))
    names: list[str] = list(book.sheet_names)
    if not names:
        raise InputError(f"{path}: the workbook has no sheets")
    if spec.sheet is None:
        kinds = {m.name: m.typ for m in book.sheets_metadata}
        work = python_calamine.SheetTypeEnum.WorkSheet
        candidates = [n for n in names if kinds.get(n, work) == work] or names
    else:
        candidates = [_named_sheet(path, names, spec.sheet)]
    tried: list[tuple[str, list[str]]] = []
    for name in candidates:
        sheet = book.get_sheet_by_name(name)
        if sheet.width > MAX_COLUMNS:
            raise InputError(f"{path}: sheet {name!r} has {sheet.width} columns; "
                             f"at most {MAX_COLUMNS} are supported")
        header_index, headers = _header(sheet)
        where = f" (sheet {name!r})"
        try:
            columns = resolve(path, headers, spec.columns, spec.target, where)
        except InputError:
            check_headers(path, headers, where)  # repeated names explain an ambiguity best
            raise
        if columns is not None:
            check_headers(path, headers, where)
            return Sheet(name, sheet, header_index, headers, columns)
        tried.append((name, headers))
    if len(tried) == 1:
        raise missing(path, tried[0][1], spec.columns, spec.target, f" (sheet {tried[0][0]!r})")
    sheets = "; ".join(f"{name!r}: {listing(headers)}" for name, headers in tried)
    raise InputError(f"{path}: no sheet has an openid column and a target group column; "
                     f"sheets and their headers: {sheets}; pick one with `sheet` and name the "
                     "columns under [columns]")


def _named_sheet(path: Path, names: list[str], wanted: str | int) -> str:
    available = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if isinstance(wanted, int):
        if 0 <= wanted < len(names):
            return names[wanted]
        raise InputError(f"{path}: there is no sheet number {wanted} (counted from 0); "
                         f"sheets: {available}")
    for name in names:
        if name == wanted:
            return name
    for name in names:
        if name.strip().casefold() == wanted.strip().casefold():
            return name
    raise InputError(f"{path}: there is no sheet named {wanted!r}; sheets: {available}")


def _header(sheet: Any) -> tuple[int, list[str]]:
    for index, row in enumerate(islice(sheet.iter_rows(), HEADER_SEARCH_ROWS)):
        cells = unneutralise([cell_text(c).strip() for c in row])
        if any(cells):
            return index, cells
    return 0, []
