"""What a text file's lines and quoted cells look like, learned as its bytes go by.

`sniff` reads every byte of a CSV once anyway (to settle its encoding and fingerprint it);
`TextShape` watches the same blocks and refuses what no parser can hold in bounded memory,
long before a parser sees it: a physical line longer than `MAX_LINE_BYTES`, or a quoted cell
opened and not closed within as many bytes (pandas would read the rest of the file into that
one cell). A 1 GiB line took 333 s and 19.7 GB before it was refused; now it is refused once
its first 16 MB are read, in well under a second. Lines longer than `LONG_LINE_BYTES` are
allowed but noted (`long_lines`): the loader then reads the file with the tolerant reader,
which never turns a huge row into millions of cells.

Only C-level `find`/`count` calls per 1 MB block: a file without quotes costs two `find`s a
block. Newlines and quotes are single ASCII bytes in UTF-8, GB18030 and UTF-16 alike.
"""

from __future__ import annotations

from pathlib import Path

from batchmove.errors import InputError

#: no row of a spreadsheet is this long; a longer line (or quoted cell) is refused
MAX_LINE_BYTES = 16 << 20
#: lines longer than this are read by the tolerant reader (which bounds the cells of a row)
LONG_LINE_BYTES = 1 << 20
#: what may come before a quote that opens a quoted cell
_CELL_STARTS = frozenset({b"", b"\n", b"\r", b",", b";", b"\t"})


class TextShape:
    """Feed it the file's blocks in order (`feed`); it raises InputError at the first line or
    open quoted cell past `MAX_LINE_BYTES`, and says whether any line passed
    `LONG_LINE_BYTES` (`long_lines`)."""

    def __init__(self, path: Path, limit: int = MAX_LINE_BYTES) -> None:
        self.path, self.limit = path, limit
        self.long_lines = False
        self._offset = 0  # bytes fed so far
        self._lines = 0  # newlines fed so far
        self._run = 0  # bytes since the last newline
        self._line_quotes = 0  # quotes since the last newline
        self._last = b""  # the byte before the block being fed
        self._open_at = -1  # offset of a quote that opened a cell not closed since
        self._open_line = 0

    def feed(self, block: bytes) -> None:
        self._lines_of(block)
        self._quotes_of(block)
        self._offset += len(block)
        self._lines += block.count(b"\n")
        self._last = block[-1:]

    def _lines_of(self, block: bytes) -> None:
        first = block.find(b"\n")
        if first < 0:
            self._run += len(block)
            ended = 0
        else:  # lines wholly inside a block are shorter than the block (1 MB)
            ended, self._run = self._run + first, len(block) - block.rfind(b"\n") - 1
        self.long_lines = self.long_lines or max(ended, self._run) > LONG_LINE_BYTES
        if max(ended, self._run) > self.limit:
            line = self._lines + (1 if ended > self.limit else block.count(b"\n") + 1)
            raise InputError(f"{self.path}: line {line} is longer than {self.limit >> 20} MB; "
                             "no spreadsheet row is (a broken or hostile file?): refusing it")

    def _quotes_of(self, block: bytes) -> None:
        last = block.rfind(b'"')
        if last < 0:
            if self._open_at >= 0 and self._offset + len(block) - self._open_at > self.limit:
                raise InputError(
                    f"{self.path}: line {self._open_line} opens a quoted cell that is not "
                    f"closed within {self.limit >> 20} MB (a broken or hostile file?): "
                    "refusing it")
        else:
            self._open_at = self._offset + last if self._opens(block, last) else -1
        newline = block.rfind(b"\n")
        if newline < 0:
            self._line_quotes += block.count(b'"')
        else:
            self._line_quotes = block.count(b'"', newline + 1)

    def _opens(self, block: bytes, at: int) -> bool:
        """Does the quote at `at` open a quoted cell: at the start of a cell, and odd among
        the quotes of its line so far (the closing quote of `"a,"` is not)?"""
        before = block[at - 1:at] if at else self._last
        if before not in _CELL_STARTS:
            return False
        line_start = block.rfind(b"\n", 0, at) + 1
        quotes = block.count(b'"', line_start, at + 1)
        if line_start == 0:  # the line began in an earlier block
            quotes += self._line_quotes
        if quotes % 2 == 0:
            return False
        self._open_line = self._lines + block.count(b"\n", 0, at) + 1
        return True


class SheetRows:
    """The cells of each row of a worksheet's XML, counted as its blocks go by (calamine
    builds a grid as wide as the widest row, cells without references included, so one
    16,384-cell row in a 1,000-row sheet costs 16 million cells, 560 MB, before any check
    after it could run). Raises InputError at the first row with more than `limit` cells."""

    def __init__(self, path: Path, member: str, limit: int) -> None:
        self.path, self.member, self.limit = path, member, limit
        self._open = 0  # cells of the row still open at the end of the last block

    def feed(self, block: bytes) -> None:
        pieces = block.split(b"<row")
        self._open += _cells(pieces[0])  # the row open before this block goes on
        if len(pieces) > 1:
            self._check(self._open)
            for piece in pieces[1:-1]:  # a cell takes 4 bytes at least (`<c/>`)
                if len(piece) > 4 * self.limit:
                    self._check(_cells(piece))
            self._open = _cells(pieces[-1])
        self._check(self._open)

    def _check(self, cells: int) -> None:
        if cells > self.limit:
            raise InputError(f"{self.path}: {self.member} has a row of about {cells} cells; "
                             f"at most {self.limit} columns are supported")


def _cells(xml: bytes) -> int:
    return xml.count(b"<c ") + xml.count(b"<c>") + xml.count(b"<c/")
