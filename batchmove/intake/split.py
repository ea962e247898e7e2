"""An input's rows grouped by one column's value (an agency's `appid` column: one file for
several accounts). Read with the loader's own sniffing, CSV dialect and sheet choice, so each
part is exactly the rows the loader would have read; every column is kept, in order.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import islice

from batchmove.errors import InputError
from batchmove.intake import tolerant
from batchmove.intake.rowcheck import BLANK
from batchmove.intake.sniff import sniff_file
from batchmove.intake.workbook import open_sheet
from batchmove.models import JobSpec

Parts = tuple[list[str], dict[str, list[list[str]]]]


def split_rows(spec: JobSpec, column: str) -> Parts | None:
    """(header, value -> its rows) by `column` (matched ignoring case and blanks), or None
    when the input has no such column. A row with the column blank is an InputError."""
    sniffed = sniff_file(spec.input, spec.encoding)
    if sniffed.format == "xlsx":
        sheet = open_sheet(spec.input, spec)
        header = list(sheet.headers)
        rows: Iterator[list[str]] = (r for _, block in sheet.chunks(10_000) for r in block)
    else:
        header = [h.strip(BLANK) for h in sniffed.headers]
        rows = _csv_rows(spec, sniffed.encoding, sniffed.delimiter or ",",
                         sniffed.header_index)
    wanted = [i for i, h in enumerate(header) if h.strip(BLANK).lower() == column]
    if not wanted:
        return None
    index = wanted[0]
    parts: dict[str, list[list[str]]] = {}
    for number, row in enumerate(rows, start=2):
        value = row[index].strip(BLANK) if index < len(row) else ""
        if not value:
            if not any(cell.strip(BLANK) for cell in row):
                continue
            raise InputError(f"{spec.input}: row {number} has no {column}")
        parts.setdefault(value, []).append(row)
    return header, parts


def _csv_rows(spec: JobSpec, encoding: str | None, delimiter: str,
              header_index: int) -> Iterator[list[str]]:
    with open(spec.input, encoding=encoding, newline="") as handle:
        lines = iter(handle)
        tolerant.skip(lines, header_index)
        yield from islice(csv.reader(lines, delimiter=delimiter), 1, None)
