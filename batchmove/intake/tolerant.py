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
#: a record's characters at most (a line is at most 16 MB: `sniff` refuses longer ones)
MAX_RECORD_CHARS = 16 << 20
#: a line with more delimiters than this is judged without being split into its cells
MAX_ROW_CELLS = 10_000
UNCLOSED = "a quoted cell is not closed on its line"
_FIELD_LIMIT = MAX_RECORD_CHARS  # a long cell is capped by rowcheck, not refused here


def too_many_cells(cells: int, width: int) -> str:
    return f"row has {cells} cells, the header has {width}"


class _TooLong(Exception):
    """A record took more lines (or characters) than a quoted cell may hold."""


class _TooWide(Exception):
    """A line with more delimiters than MAX_ROW_CELLS: judged whole, never split."""


class _Lines:
    """Physical lines with push-back, remembering the lines the current record took."""

    def __init__(self, source: Iterator[str], delimiter: str) -> None:
        self._source = source
        self._delimiter = delimiter
        self._back: list[str] = []
        self.taken: list[str] = []
        self._chars = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._back.pop() if self._back else next(self._source)
        self.taken.append(line)
        self._chars += len(line)
        if len(self.taken) > MAX_RECORD_LINES or self._chars > MAX_RECORD_CHARS:
            raise _TooLong
        if len(line) > MAX_ROW_CELLS and line.count(self._delimiter) >= MAX_ROW_CELLS:
            raise _TooWide
        return line

    def take(self) -> list[str]:
        """The lines of the record just read; the next record starts empty."""
        taken, self.taken, self._chars = self.taken, [], 0
        return taken

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
    source = _Lines(lines, delimiter)
    with _field_limit():
        while True:
            reader = csv.reader(source, delimiter=delimiter, strict=True)
            try:
                for cells in reader:
                    yield _judge(cells, source.take(), width, delimiter, source)
                return
            except (csv.Error, _TooLong, _TooWide):  # look at the first line alone (a line
                taken = source.take()                  # of many cells: judged, never split)
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


def _wide(line: str, delimiter: str, width: int) -> tuple[list[str], str]:
    """A row of a great many cells: its first `width` cells and its count, without making a
    string of every cell (a 16 MB line of `ab,` would be 5.6 million of them, 300 MB)."""
    cells = line.rstrip("\r\n").split(delimiter, width)[:width]
    count = line.count(delimiter) + 1
    about = "" if '"' not in line else "about "  # quoted delimiters are counted too
    return (cells + [""] * width)[:width], f"row has {about}{count} cells, the header has {width}"


def _one_line(line: str, delimiter: str, width: int, *, alone: bool) -> tuple[list[str], str]:
    """One physical line read on its own, without strict quoting (as pandas reads `"a"b`)."""
    if line.count(delimiter) >= MAX_ROW_CELLS:
        return _wide(line, delimiter, width)
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
