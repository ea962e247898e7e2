"""The tolerant CSV reader the loader falls back to when pandas' C parser refuses a chunk.

pandas stops the whole file at the first row with more cells than the header, or at a quote
that is never closed. Here such a row becomes one row with a reason (`row has 4 cells, the
header has 2`), and the lines after it are read as rows of their own, so one bad line costs
one row, not the file. A quoted cell may still hold line breaks (Excel writes them), but a
record spanning more than `MAX_RECORD_LINES` lines, or ending the file inside its quote, is
taken as a quote that swallowed the rest of its line.

Python's csv module (C) with a Python step per record: about 1 s per million rows, against
0.4 s for pandas, which is why clean files never come here.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

from batchmove.intake.rowcheck import BLANK

MAX_RECORD_LINES = 100
UNCLOSED = "a quoted cell is not closed on its line"
_FIELD_LIMIT = 1 << 30  # a 64 MB cell is capped by rowcheck, not refused here


def too_many_cells(cells: int, width: int) -> str:
    return f"row has {cells} cells, the header has {width}"


class _TooLong(Exception):
    """A record took more lines than a quoted cell may hold."""


class _Lines:
    """Physical lines with push-back, remembering the lines the current record took."""

    def __init__(self, source: Iterator[str]) -> None:
        self._source = source
        self._back: list[str] = []
        self.taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._back.pop() if self._back else next(self._source)
        self.taken.append(line)
        if len(self.taken) > MAX_RECORD_LINES:
            raise _TooLong
        return line

    def push_back(self, lines: list[str]) -> None:
        self._back.extend(reversed(lines))


@contextmanager
def _field_limit() -> Iterator[None]:
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, _FIELD_LIMIT))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def records(lines: Iterator[str], delimiter: str, width: int) -> Iterator[tuple[list[str], str]]:
    """(cells, reason) per record, cells padded or cut to `width`; reason "" when fine."""
    source = _Lines(lines)
    with _field_limit():
        while True:
            reader = csv.reader(source, delimiter=delimiter, strict=True)
            try:
                for cells in reader:
                    taken, source.taken = source.taken, []
                    yield _judge(cells, taken, width, delimiter, source)
                return
            except (csv.Error, _TooLong):  # a strict-mode refusal: look at its first line alone
                taken, source.taken = source.taken, []
                if taken:
                    source.push_back(taken[1:])
                    yield _one_line(taken[0], delimiter, width, alone=len(taken) == 1)


def _judge(cells: list[str], taken: list[str], width: int, delimiter: str,
           source: _Lines) -> tuple[list[str], str]:
    if len(cells) <= width:
        return cells + [""] * (width - len(cells)), ""
    if len(taken) > 1:  # a multi-line record that does not fit: its quote went wrong
        source.push_back(taken[1:])
        return _one_line(taken[0], delimiter, width, alone=False)
    if not any(c.strip(BLANK) for c in cells):
        return [""] * width, ""  # only delimiters: a blank row
    return cells[:width], too_many_cells(len(cells), width)


def _one_line(line: str, delimiter: str, width: int, *, alone: bool) -> tuple[list[str], str]:
    """One physical line read on its own, without strict quoting (as pandas reads `"a"b`)."""
    text = line.rstrip("\r\n")
    cells = next(csv.reader([text + "\n"], delimiter=delimiter, strict=False), [])
    if not alone or any("\n" in c for c in cells):  # the quote is still open at the line end
        cells = [c.rstrip("\n") for c in cells]
        return (cells + [""] * width)[:width], UNCLOSED
    if len(cells) > width:
        return cells[:width], too_many_cells(len(cells), width)
    return cells + [""] * (width - len(cells)), ""


def skip(lines: Iterator[str], count: int) -> None:
    """Advance past `count` physical lines (the blank lines before the header)."""
    for _ in islice(lines, count):
        pass
