"""What kind of file is this? Format, encoding, delimiter and header, decided from the bytes.

Kept apart from `loader` (which holds pandas) so the checks that refuse a file before any parser
sees it stay small and readable: content wins over the extension, so a CSV renamed `.xlsx`, a
picture, an old `.xls` or a zip bomb gets a clear `InputError` instead of a parser's traceback.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from batchmove.errors import InputError
from batchmove.intake.shape import SheetRows, TextShape

TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
EXCEL_SUFFIXES = frozenset({".xlsx", ".xlsm"})
DELIMITERS = (",", ";", "\t")
MAX_COLUMNS = 1_000
HEAD_BYTES = 1 << 20  # enough to hold a header row and the first few data rows
_BLOCK = 1 << 20

# xlsx guard: what the zip directory may declare before calamine is allowed to open it
MAX_UNCOMPRESSED = 1 << 30
MAX_RATIO = 200
RATIO_FLOOR = 16 << 20  # small members may compress as well as they like
MAX_MEMBERS = 10_000
MAX_CELLS = 20_000_000  # about 700 MB once calamine holds them: a 1,000,000 x 20 sheet
EXCEL_MAX_ROW = 1_048_576
_FAR_CELL = re.compile(rb'<c r="(?P<col>[A-Z]{3,})(?P<row>[0-9]+)"'
                       rb'|<c r="[A-Z]{1,2}(?P<cell_row>[0-9]{7,})"'
                       rb'|<row r="(?P<row_row>[0-9]{7,})"')

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0", "an old Excel 97-2003 (.xls) or password-protected workbook: "
                          "save it as .xlsx (without a password) or .csv"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"SQLite format 3", "an SQLite database"),
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_AUTO_ENCODINGS = ("utf-8", "gb18030")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_QUOTED = re.compile(r'"[^"]*"')
_LINES = re.compile(r"\r\n|\r|\n")
_DIMENSION = re.compile(rb'<(?:\w+:)?dimension ref="([A-Z]+)(\d+)(?::([A-Z]+)(\d+))?"')


@dataclass(frozen=True, slots=True)
class Sniffed:
    """The verdict on a file: enough for a parser to read it without guessing."""

    format: Literal["csv", "xlsx"]
    fingerprint: str
    encoding: str | None = None
    delimiter: str | None = None
    header_index: int = 0  # 0-based record of the header row (CSV: blank lines before it)
    headers: tuple[str, ...] = ()
    long_lines: bool = False  # some line is over LONG_LINE_BYTES: read it the tolerant way


def sniff_file(path: Path, encoding: str | None = None) -> Sniffed:
    """Refuse what cannot be a spreadsheet; for text, settle the encoding and the header."""
    try:
        if not path.is_file():
            what = "does not exist" if not path.exists() else "is not a file"
            raise InputError(f"{path}: {what}")
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise InputError(f"{path}: old Excel 97-2003 (.xls) files are not supported: "
                         "save it as .xlsx or .csv")
    if suffix not in TEXT_SUFFIXES | EXCEL_SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix or '(no extension)'!r}: "
                         "use .csv, .tsv, .txt, .xlsx or .xlsm")
    if not head:
        raise InputError(f"{path}: the file is empty")
    is_zip = head.startswith((b"PK\x03\x04", b"PK\x05\x06"))
    if suffix in EXCEL_SUFFIXES:
        if is_zip:
            check_workbook(path)
            return Sniffed("xlsx", fingerprint(path))
        _refuse_binary(path, head)
        raise InputError(f"{path}: this is a text (CSV) file, not an Excel workbook: "
                         "rename it to .csv")
    if is_zip:
        raise InputError(f"{path}: this is a zip archive (an Excel workbook?), not CSV text: "
                         "rename it to .xlsx if it is a workbook")
    _refuse_binary(path, head)
    return _sniff_text(path, head, suffix, encoding)


def _refuse_binary(path: Path, head: bytes) -> None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise InputError(f"{path}: this is {what}, not a spreadsheet")
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"{path}: this is a binary file (it contains NUL bytes), not CSV text")


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks so a large file never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _detect_encoding(path: Path, head: bytes, override: str | None
                     ) -> tuple[str, str, TextShape]:
    """Decode the whole file once per candidate (streamed), its shape watched as it goes
    (`TextShape` refuses a line or quoted cell no parser can hold); returns (encoding,
    fingerprint, shape)."""
    if override is not None:
        try:
            codecs.lookup(override)
        except LookupError as exc:
            raise InputError(f"{path}: unknown encoding {override!r}") from exc
        candidates: tuple[str, ...] = (override,)
    else:
        bom = next((enc for mark, enc in _BOMS if head.startswith(mark)), None)
        candidates = (bom,) if bom else _AUTO_ENCODINGS
    if override is not None and head.startswith(codecs.BOM_UTF8):
        candidates = ("utf-8-sig",) if codecs.lookup(override).name == "utf-8" else candidates
    for encoding in candidates:
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        digest = hashlib.sha256()
        shape = TextShape(path)
        lines, non_ascii = 0, False
        try:
            with path.open("rb") as handle:
                while block := handle.read(_BLOCK):
                    shape.feed(block)
                    digest.update(block)
                    non_ascii = non_ascii or not decoder.decode(block).isascii()
                    lines += block.count(b"\n")
                decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            if override is None and codecs.lookup(encoding).name.startswith("utf-8"):
                good = exc.object[:exc.start]
                if non_ascii or not good.decode("utf-8", "ignore").isascii():
                    line = lines + good.count(b"\n") + 1
                    raise InputError(
                        f"{path}: line {line} is not UTF-8 although the text before it is: "
                        "the file mixes encodings (e.g. UTF-8 and GBK); save it again with one "
                        "encoding, or name it with --encoding") from None
            continue
        return encoding, digest.hexdigest(), shape
    tried = ", ".join(candidates)
    raise InputError(f"{path}: cannot decode the file as {tried}: "
                     "set `encoding` in the job file (or --encoding) to the file's encoding")


def _sniff_text(path: Path, head: bytes, suffix: str, override: str | None) -> Sniffed:
    encoding, digest, shape = _detect_encoding(path, head, override)
    text = head.decode(encoding, errors="ignore")
    if _CONTROL.search(text[:65536]):
        raise InputError(f"{path}: this looks like a binary file (control characters), "
                         "not CSV text")
    lines = _LINES.split(text)  # not splitlines(): \x85 and \u2028 are text in CSV
    default = "\t" if suffix == ".tsv" else ","
    header_index = 0
    for line in lines:
        if line.strip(" \t,;\u3000\xa0"):
            break
        header_index += 1
    else:
        raise InputError(f"{path}: the file has no header row (it is blank)")
    first = _QUOTED.sub("", lines[header_index])
    counts = {d: first.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == default))
    delimiter = best if counts[best] else default
    if counts[delimiter] + 1 > MAX_COLUMNS:
        raise InputError(f"{path}: the header row has {counts[delimiter] + 1} columns; "
                         f"at most {MAX_COLUMNS} are supported")
    rest = io.StringIO("\n".join(lines[header_index:header_index + 50]))
    try:
        header = next(csv.reader(rest, delimiter=delimiter), [])
    except csv.Error as exc:
        raise InputError(f"{path}: cannot read the header row: {exc}") from exc
    return Sniffed("csv", digest, encoding, delimiter, header_index, tuple(header),
                   shape.long_lines)


def check_workbook(path: Path) -> None:
    """Read the zip directory (not the data) and refuse what would blow up in memory."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = {info.filename for info in infos}
            if "xl/workbook.xml" not in names:
                raise InputError(f"{path}: this is a zip archive but not an Excel workbook "
                                 "(no xl/workbook.xml)")
            if len(infos) > MAX_MEMBERS:
                raise InputError(f"{path}: the workbook has {len(infos)} parts; refusing it")
            total = sum(info.file_size for info in infos)
            if total > MAX_UNCOMPRESSED:
                raise InputError(f"{path}: the workbook would unpack to {total >> 20} MB "
                                 f"(limit {MAX_UNCOMPRESSED >> 20} MB); refusing it")
            for info in infos:
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
                    raise InputError(f"{path}: {info.filename} is compressed {ratio:.0f}:1 "
                                     "(a zip bomb?); refusing it")
                if info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml"):
                    width = _check_dimension(path, archive.open(info).read(4096), info.filename)
                    _scan_cells(path, archive, info, width)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
            NotImplementedError, RuntimeError, ValueError) as exc:
        raise InputError(f"{path}: this is not a readable Excel workbook: {exc}") from exc


def _check_dimension(path: Path, start: bytes, member: str) -> int:
    """Refuse a declared dimension that is too big; returns its width (1 when undeclared)."""
    match = _DIMENSION.search(start)
    if not match or not match.group(3):
        return 1
    width = _column_number(match.group(3)) - _column_number(match.group(1)) + 1
    height = int(match.group(4)) - int(match.group(2)) + 1
    if width > MAX_COLUMNS:
        raise InputError(f"{path}: {member} spans {width} columns; "
                         f"at most {MAX_COLUMNS} are supported")
    if width * height > MAX_CELLS:
        raise InputError(f"{path}: {member} spans {width} x {height} cells; refusing it")
    return width


def _scan_cells(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo,
                width: int = 1) -> None:
    """Stream a sheet's XML and refuse what would make calamine allocate a huge grid: cells
    beyond Excel's rows or our columns, a row of more cells than our columns (`SheetRows`), or
    a few far-away cells in an otherwise small sheet (calamine builds a dense range up to the
    farthest one; a declared dimension can lie).
    Only rare references are matched (3+ letters, 7+ digits), so ordinary sheets cost one
    fast scan."""
    cells, rows, tail, far_col, far_row = 0, 0, b"", width, 0
    widths = SheetRows(path, info.filename, MAX_COLUMNS)
    with archive.open(info) as member:
        while block := _read_member(path, member, info):
            widths.feed(block)
            cells += block.count(b"<c ")
            rows += block.count(b"<row ") + block.count(b"<row>")
            data = tail + block
            last = data.rfind(b'<row r="')
            if last >= 0:
                digits = re.match(rb'<row r="([0-9]+)"', data[last:last + 24])
                far_row = max(far_row, int(digits[1])) if digits else far_row
            for match in _FAR_CELL.finditer(data):
                letters = match["col"] or b"A"
                row = int(match["row"] or match["cell_row"] or match["row_row"])
                column = _column_number(letters)
                if column > MAX_COLUMNS or row > EXCEL_MAX_ROW:
                    where = f"{letters.decode()}{row}" if match["col"] else f"row {row}"
                    raise InputError(f"{path}: {info.filename} has a cell at {where}, beyond "
                                     f"{MAX_COLUMNS} columns or Excel's {EXCEL_MAX_ROW} rows; "
                                     "refusing it")
                far_col, far_row = max(far_col, column), max(far_row, row)
            tail = data[-64:]
    if cells > MAX_CELLS:
        raise InputError(f"{path}: {info.filename} holds {cells} cells (limit {MAX_CELLS}); "
                         "refusing it")
    if rows > EXCEL_MAX_ROW:
        raise InputError(f"{path}: {info.filename} has {rows} rows, more than Excel's "
                         f"{EXCEL_MAX_ROW}; split it or save it as CSV")
    if far_col * far_row > MAX_CELLS and far_col * far_row > 4 * cells:
        raise InputError(f"{path}: {info.filename} has cells as far as column {far_col}, row "
                         f"{far_row} but only {cells} cells: reading it would take a "
                         f"{far_col} x {far_row} grid; delete the stray far-away cells")


def _read_member(path: Path, member: IO[bytes], info: zipfile.ZipInfo) -> bytes:
    """A block of a workbook part; zipfile stops at the declared size and checks the CRC, so a
    part bigger than its directory entry says ends here instead of in memory."""
    try:
        return member.read(_BLOCK)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path}: {info.filename} does not match the size and checksum its zip "
                         f"directory declared (a forged or damaged workbook): {exc}") from None


def _column_number(letters: bytes) -> int:
    number = 0
    for char in letters:
        number = number * 26 + char - 64
    return number
