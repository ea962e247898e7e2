"""Spreadsheet -> validated `InputRow`s, streamed in file order with the sheet's own row numbers.

The only input module that imports pandas: its C parser reads CSV in chunks with every cell as
text (`dtype=object`, `na_filter=False`: a group called `NA` is a group). A CSV under 8 MB is
read by Python's csv module instead, which is quicker than importing pandas; a chunk either
reader refuses (a row longer than the header, a broken quote) is read again by `tolerant`, so
ragged rows become row verdicts. Excel goes through
`workbook` (calamine). Either way a chunk becomes plain columns of `str` for `rowcheck`, which
validates them and marks duplicates. Rejected rows are yielded too, with a reason, so the
report accounts for every row of the analyst's file. Parser, decoder, zip and calamine failures
all leave this module as one `InputError`, translated in one place (`_translate`).

One account of a third-party platform job (`[credentials] component`, one account) whose input
has an `appid` column reads only that account's rows, keeping their row numbers in the file:
its reports speak the analyst's own row numbers, and its fingerprint is of its own rows, so
editing another account's rows never disturbs its run.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import compress, islice
from pathlib import Path
from typing import Literal

import python_calamine

from batchmove.errors import InputError
from batchmove.intake import tolerant
from batchmove.intake.columns import Columns, check_headers, missing, resolve
from batchmove.intake.rowcheck import (
    BLANK,
    Dedupe,
    LoadStats,
    RepeatFinder,
    check_chunk,
    input_rows,
    unneutralise,
)
from batchmove.intake.sniff import Sniffed, sniff_file
from batchmove.intake.workbook import Sheet, open_sheet
from batchmove.models import BLACKLIST_GROUP_ID, InputRow, JobSpec, RowStatus, TargetKind

__all__ = ["LoadStats", "LoadedInput", "open_input"]

_FOREIGN = (ValueError, UnicodeError, OSError, zipfile.BadZipFile, csv.Error, MemoryError,
            OverflowError, EOFError, python_calamine.CalamineError)
_FIELDS_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_BLACKLIST_EXAMPLES = 5

#: row numbers -> (row, openid, target) of those rows, in row order (the ledger's, once loaded)
RowLookup = Callable[[list[int]], Iterable[tuple[int, str, str]]]
#: below this size a CSV is read by Python's csv module: importing pandas costs more than
#: it saves (100,000 rows, 4 MB: csv 0.12 s, against pandas 0.04 s + 0.3 s to import it)
SMALL_CSV_BYTES = 8 << 20
#: (each row's number in the file, columns of text cells, each row's reading problem or None)
Chunk = tuple[Sequence[int], list[list[str]], list[str] | None]
#: the column by which one input holds the rows of several accounts of a platform
APPID_COLUMN = "appid"
#: one account's rows up to this many are kept from the fingerprint's read for the load
OWN_ROWS_KEPT = 100_000


def open_input(spec: JobSpec) -> LoadedInput:
    """Sniff the input, find its header and columns; raise InputError if it cannot be read."""
    path = spec.input
    try:
        sniffed = sniff_file(path, spec.encoding)
        if sniffed.format == "xlsx":
            sheet = open_sheet(path, spec)
            return LoadedInput(path, sniffed, sheet.headers, sheet.columns, spec, sheet)
        headers = unneutralise([h.strip(BLANK) for h in sniffed.headers])
        check_headers(path, headers)
        columns = resolve(path, headers, spec.columns, spec.target)
        if columns is None:
            raise missing(path, headers, spec.columns, spec.target)
        return LoadedInput(path, sniffed, headers, columns, spec, None)
    except InputError:
        raise
    except _FOREIGN as exc:
        raise _translate(path, exc) from exc


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Build a chunk's 100,000 row tuples without the cyclic GC rescanning the heap meanwhile.

    The rows hold no cycles; pausing the collector only while a chunk is built (never while
    the caller holds the generator) saves about a third of the load time on a million rows.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _column(headers: Sequence[str], name: str) -> int | None:
    """The index of the first header that is `name`, ignoring case and blanks."""
    found = [i for i, h in enumerate(headers) if h.strip(BLANK).lower() == name]
    return found[0] if found else None


def _own_rows(spec: JobSpec, headers: Sequence[str]) -> tuple[int, str] | None:
    """(the appid column, the account) when a run of one platform account reads an input
    holding several accounts' rows."""
    account = spec.single_account if spec.credentials.component and not spec.select else None
    index = _column(headers, APPID_COLUMN) if account else None
    return None if index is None or account is None else (index, account)


def _translate(path: Path, exc: BaseException) -> InputError:
    """One readable line for a foreign exception."""
    if isinstance(exc, MemoryError):
        return InputError(f"{path}: the file is too large to read into memory")
    text = " ".join(str(exc).split()) or type(exc).__name__
    fields = _FIELDS_ERROR.search(text)
    if fields:
        want, line, saw = fields.groups()
        return InputError(f"{path}: line {line} has {saw} cells but the header has {want}")
    if isinstance(exc, python_calamine.CalamineError | zipfile.BadZipFile):
        return InputError(f"{path}: cannot read the workbook: {text[:200]}")
    return InputError(f"{path}: cannot read the file: {text[:200]}")


class LoadedInput:
    """An input file that passed the whole-file checks; `rows()` streams and validates it."""

    def __init__(self, path: Path, sniffed: Sniffed, headers: list[str], columns: Columns,
                 spec: JobSpec, sheet: Sheet | None) -> None:
        self.path = path
        self.format: Literal["csv", "xlsx"] = sniffed.format
        self.encoding = sniffed.encoding
        self.delimiter = sniffed.delimiter
        self.sheet = sheet.name if sheet else None
        self.headers = headers
        self.openid_column = headers[columns.openid]
        self.target_column = headers[columns.target]
        self.target_kind: TargetKind = columns.kind
        self._own = _own_rows(spec, headers)
        self._fingerprint = None if self._own else sniffed.fingerprint
        self._kept: list[Chunk] | None = None  # one account's rows, read with the fingerprint
        self.amendments: list[tuple[int, RowStatus, str]] = []
        self.stats = LoadStats()
        self._repeats = RepeatFinder()
        self._sniffed = sniffed
        self._sheet = sheet
        self._columns = columns
        self._allow_blacklist = spec.allow_blacklist

    def rows(self, chunk_size: int = 100_000) -> Iterator[list[InputRow]]:
        """Validated rows in file order, a list per chunk; refuses blacklist moves at the end.

        Each call reads the file again from the top and resets `amendments` and `stats`.
        """
        self.amendments = []
        self.stats = LoadStats()
        self._repeats = RepeatFinder()
        blacklisted: list[int] = []
        blacklist_count = 0
        chunks = iter(self._kept) if self._kept is not None else self._chunks(max(1, chunk_size))
        while True:
            try:
                with _gc_paused():
                    item = next(chunks, None)
                if item is None:
                    break
                if self._own is not None and not (item := self._mine(item))[0]:
                    continue
                with _gc_paused():
                    checked = check_chunk(item[1], item[0], self._columns, self.stats, item[2])
                    rows = input_rows(checked, self.stats)
                    self._repeats.add(checked)
            except InputError:
                raise
            except _FOREIGN as exc:
                raise _translate(self.path, exc) from exc
            if self.target_kind == "id":
                hits = checked.blacklist_rows()
                blacklist_count += len(hits)
                blacklisted.extend(hits[: _BLACKLIST_EXAMPLES - len(blacklisted)])
            yield rows
        self._refuse_unreadable()
        if blacklist_count and not self._allow_blacklist:
            self._refuse_blacklist(blacklist_count, blacklisted)

    @property
    def fingerprint(self) -> str:
        """The content the run is known by: the file's, or one account's rows (with their
        numbers and reading problems) when it reads only those. Those rows, when no more
        than a chunk, are kept for `rows()`, which then need not read the file again."""
        if self._fingerprint is None:
            digest = hashlib.sha256("\x1f".join(self.headers).encode())
            kept: list[Chunk] | None = []
            count = 0
            for chunk in map(self._mine, self._read(100_000)):
                numbers, columns, problems = chunk
                for row in zip(numbers, *columns, problems or [""] * len(numbers),
                               strict=True):
                    digest.update(("\x1f".join(map(str, row)) + "\x1e").encode())
                count += len(numbers)
                kept = [*kept, chunk] if kept is not None and count <= OWN_ROWS_KEPT else None
            self._fingerprint, self._kept = digest.hexdigest(), kept
        return self._fingerprint

    def appids(self) -> set[str] | None:
        """The values of the input's `appid` column (None: it has none); a row with cells
        but a blank appid is an InputError naming it."""
        index = _column(self.headers, APPID_COLUMN)
        if index is None:
            return None
        found: set[str] = set()
        for numbers, columns, problems in self._read(100_000):
            values = [cell.strip(BLANK) for cell in columns[index]]
            found.update(values)
            if "" in values:
                for i in (i for i, v in enumerate(values) if not v):
                    if (problems and problems[i]) or any(c[i].strip(BLANK) for c in columns):
                        raise InputError(f"{self.path}: row {numbers[i]} has no "
                                         f"{APPID_COLUMN}")
        found.discard("")
        return found

    def _mine(self, chunk: Chunk) -> Chunk:
        """The chunk's rows of the one account this input is read for."""
        assert self._own is not None
        index, appid = self._own
        numbers, columns, problems = chunk
        keep = [cell.strip(BLANK) == appid for cell in columns[index]]
        if all(keep):
            return chunk
        return (list(compress(numbers, keep)), [list(compress(c, keep)) for c in columns],
                None if problems is None else list(compress(problems, keep)))

    def _read(self, size: int) -> Iterator[Chunk]:
        """The raw chunks (unchecked), foreign exceptions translated."""
        chunks = self._chunks(size)
        while True:
            try:
                item = next(chunks, None)
            except InputError:
                raise
            except _FOREIGN as exc:
                raise _translate(self.path, exc) from exc
            if item is None:
                return
            yield item

    def settle(self, lookup: RowLookup) -> list[tuple[int, RowStatus, str]]:
        """Duplicates and conflicts, once every chunk was read: the rows whose openid may
        repeat are read back through `lookup` (row numbers -> (row, openid, target) in row
        order) and judged; the verdicts, also kept in `amendments`, correct rows yielded
        pending."""
        dedupe = Dedupe(quote_targets=self.target_kind == "name")
        self.amendments = dedupe.judge(lookup(self._repeats.candidates()), self.stats)
        self._repeats = RepeatFinder()
        return self.amendments

    def _refuse_unreadable(self) -> None:
        """Ragged rows are row verdicts, unless no row at all could be read safely; a file
        with no data row at all is refused too (exit 2: there is nothing to move)."""
        stats = self.stats
        if not stats.rows and self._own is not None:
            raise InputError(f"{self.path}: no row for {self._own[1]} in its {APPID_COLUMN} "
                             "column: nothing to move")
        if not stats.rows:
            blank = f" and {stats.blank} blank rows" if stats.blank else ""
            raise InputError(f"{self.path}: no data rows (a header{blank} only): nothing "
                             "to move")
        if stats.rows and stats.unreadable == stats.rows:
            raise InputError(f"{self.path}: no row could be read: row {stats.unreadable_example}")

    def _refuse_blacklist(self, count: int, examples: list[int]) -> None:
        listed = ", ".join(map(str, examples))
        more = ", ..." if count > len(examples) else ""
        raise InputError(
            f"{self.path}: {count} row(s) would move users into group "
            f"{BLACKLIST_GROUP_ID} (黑名单, the blacklist), e.g. row(s) {listed}{more}; "
            "nothing was sent: pass --allow-blacklist (allow_blacklist = true) "
            "if that is really meant")

    def _chunks(self, size: int) -> Iterator[Chunk]:
        """(row number of the chunk's first row, its columns as lists of text, the rows'
        reasons when some were ragged)."""
        if self._sheet is not None:
            width = len(self.headers)
            for first, block in self._sheet.chunks(size):
                yield range(first, first + len(block)), [
                    list(column) for column in zip(*block, strict=True)] \
                    if block else [[] for _ in range(width)], None
            return
        if self._sniffed.long_lines:  # a parser would make millions of cells of a long row
            yield from self._tolerant_chunks(size, self._sniffed.header_index + 2)
            return
        small = self.path.stat().st_size < SMALL_CSV_BYTES
        for first, columns in (self._small_chunks if small else self._fast_chunks)(size):
            if columns is None:  # pandas refused a chunk: the rest goes the tolerant way
                yield from self._tolerant_chunks(size, first)
                return
            yield range(first, first + len(columns[0]) if columns else first), columns, None

    def _small_chunks(self, size: int) -> Iterator[tuple[int, list[list[str]] | None]]:
        """Python's csv module (strict quoting), as `_fast_chunks` reads: short rows padded,
        (first row, None) for a chunk with a longer row or a quoting error."""
        sniffed = self._sniffed
        width = len(sniffed.headers)
        first = sniffed.header_index + 2
        with open(self.path, encoding=sniffed.encoding, newline="") as handle:
            lines = iter(handle)
            tolerant.skip(lines, sniffed.header_index)
            reader = csv.reader(lines, delimiter=sniffed.delimiter or ",", strict=True)
            try:
                next(reader, None)
                while block := list(islice(reader, size)):
                    lengths = set(map(len, block))
                    if max(lengths) > width:
                        break
                    if lengths != {width}:
                        block = [r + [""] * (width - len(r)) for r in block]
                    yield first, [list(column) for column in zip(*block, strict=True)]
                    first += len(block)
                else:
                    return
            except csv.Error:
                pass
        yield first, None

    def _fast_chunks(self, size: int) -> Iterator[tuple[int, list[list[str]] | None]]:
        """pandas' C parser; (first row, None) for the chunk it refuses, then nothing more."""
        import pandas as pd  # ~0.3 s: only for files big enough to repay it

        sniffed = self._sniffed
        first = sniffed.header_index + 2
        try:
            reader = pd.read_csv(
                self.path, sep=sniffed.delimiter, encoding=sniffed.encoding, header=0,
                names=list(range(len(sniffed.headers))), skiprows=sniffed.header_index,
                dtype=object, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                index_col=False, chunksize=size, engine="c",
            )
        except pd.errors.ParserError:  # it reads ahead: the first rows can be refused here
            yield first, None
            return
        with reader:
            while True:
                with warnings.catch_warnings():  # pandas only warns when it drops extra cells
                    warnings.simplefilter("error", pd.errors.ParserWarning)
                    try:
                        frame = next(reader, None)
                    except (pd.errors.ParserWarning, pd.errors.ParserError):
                        yield first, None
                        return
                if frame is None:
                    return
                yield first, [frame[name].tolist() for name in frame.columns]
                first += len(frame)

    def _tolerant_chunks(self, size: int, start: int) -> Iterator[Chunk]:
        """The file again from the top through `tolerant.records`, from row `start` on."""
        sniffed = self._sniffed
        width = len(sniffed.headers)
        with open(self.path, encoding=sniffed.encoding, newline="") as handle:
            lines = iter(handle)
            tolerant.skip(lines, sniffed.header_index)
            found = tolerant.records(lines, sniffed.delimiter or ",", width)
            next(found, None)  # the header
            for _ in islice(found, start - (sniffed.header_index + 2)):
                pass
            number = start
            while block := list(islice(found, size)):
                cells = [list(column) for column in zip(*(c for c, _ in block), strict=True)]
                yield range(number, number + len(block)), cells, [why for _, why in block]
                number += len(block)
