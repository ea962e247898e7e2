"""A small streaming XLSX writer for exactly one shape: the one-sheet report.

Why: xlsxwriter (constant_memory) was the largest tail cost of a run. Measured on a 2-vCPU VM,
8 columns like the report's (openid, group name, row number, status, group id, two empty, 1),
best of several runs: 50,000 rows 0.20 s here vs 1.34 s with xlsxwriter, 200,000 rows 0.79 s
vs 5.8 s (about 4 vs 27-29 µs a row, 7x). The price is size: deflate level 1 (COMPRESS_LEVEL)
gives 12.4 MB for 200,000 rows where xlsxwriter's level 6 gives 10.0 MB; level 6 here would
cost about 1 µs a row more.

What it writes (the subset of SpreadsheetML xlsxwriter writes for such a sheet, minus the
theme): one worksheet whose row 1 is a bold header (style 1 in styles.xml), frozen below the
header, with an autofilter over the header and every data row (plus the hidden
`_xlnm._FilterDatabase` name Excel pairs with it), fixed column widths and a correct
`<dimension>`. Data cells are numbers (`int`) or inline strings (`str`); `None` and `""` write
no cell. Text is escaped as Excel does it: `&<>` as XML entities; characters XML 1.0 forbids,
and CR (an XML parser would read it as LF), as `_xHHHH_`; a "_" that would otherwise start
such an escape as `_x005F_`; lone surrogates become U+FFFD; text past Excel's cell limit of
32,767 UTF-16 units is cut there (never inside a surrogate pair). A width is written as given:
the file's width, which openpyxl reports (xlsxwriter's set_column adds about 0.7 to it).

How it streams: rows go, CHUNK_ROWS at a time, as UTF-8 into an anonymous temporary file
beside `path`, because the dimension at the top of the sheet is known only after the last row;
then the package is written, the sheet deflated from that file. Memory stays flat (2.4 MB peak
for 200,000 rows), and if `rows` raises, nothing is written at `path`. A caller that knows
how many rows there are says so (`row_count`): the sheet is then deflated by a helper thread
while its rows are rendered (zlib and file writes release the GIL, so the two share the
machine's cores), and a failure removes `path` (100,000 report rows: 0.32 s instead of 0.50 s,
2 cores).

Deliberately not supported: more than one sheet, floats, dates, booleans (TypeError, as for any
type but str, int and None), formulas, shared strings, rich text, per-cell styles, merged
cells, hyperlinks. An int is written exactly, and Excel holds it as a double: beyond 2**53 it
loses precision, beyond about 1.8e308 Excel cannot read it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any

from batchmove.output.xlsxrows import CELL_UNITS, header_xml, rows_xml

__all__ = ["CELL_UNITS", "RowCountError", "write_sheet"]

COMPRESS_LEVEL = 1  # the fastest; see the module docstring
CHUNK_ROWS = 1_000
MAX_ROWS = 1_048_576  # Excel's sheet limit, header included
MAX_COLUMNS = 16_384
MAX_WIDTH = 255.0
SHEET_PART = "xl/worksheets/sheet1.xml"
# zipfile's own limit (ZIP64_LIMIT): zip64 only when the sheet could pass it, so the usual
# report is the same plain zip xlsxwriter writes.
ZIP64_AT = (1 << 31) - 1

_BAD_SHEET_NAME = re.compile(r"[\[\]:*?/\\\x00-\x1f\ud800-\udfff\ufffe\uffff]")

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_OFFICE_CT = "application/vnd.openxmlformats-officedocument"

_CONTENT_TYPES = (
    _XML_DECL
    + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    + "".join(f'<Override PartName="/{part}" ContentType="{kind}"/>' for part, kind in (
        ("docProps/app.xml", f"{_OFFICE_CT}.extended-properties+xml"),
        ("docProps/core.xml", "application/vnd.openxmlformats-package.core-properties+xml"),
        ("xl/styles.xml", f"{_OFFICE_CT}.spreadsheetml.styles+xml"),
        ("xl/workbook.xml", f"{_OFFICE_CT}.spreadsheetml.sheet.main+xml"),
        (SHEET_PART, f"{_OFFICE_CT}.spreadsheetml.worksheet+xml")))
    + "</Types>"
)

_ROOT_RELS = (
    _XML_DECL
    + f'<Relationships xmlns="{_PKG_REL_NS}">'
    f'<Relationship Id="rId1" Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/>'
    '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/'
    'metadata/core-properties" Target="docProps/core.xml"/>'
    f'<Relationship Id="rId3" Type="{_REL_NS}/extended-properties" Target="docProps/app.xml"/>'
    "</Relationships>"
)

_WORKBOOK_RELS = (
    _XML_DECL
    + f'<Relationships xmlns="{_PKG_REL_NS}">'
    f'<Relationship Id="rId1" Type="{_REL_NS}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{_REL_NS}/styles" Target="styles.xml"/>'
    "</Relationships>"
)

_FONT = '<sz val="11"/><name val="Calibri"/><family val="2"/>'
_STYLES = (
    _XML_DECL
    + f'<styleSheet xmlns="{_MAIN_NS}">'
    f'<fonts count="2"><font>{_FONT}</font><font><b/>{_FONT}</font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    '<dxfs count="0"/><tableStyles count="0" defaultTableStyle="TableStyleMedium9" '
    'defaultPivotStyle="PivotStyleLight16"/></styleSheet>'
)

_WORKBOOK = (
    _XML_DECL
    + f'<workbook xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}">'
    '<fileVersion appName="xl" lastEdited="4" lowestEdited="4" rupBuild="4505"/><workbookPr/>'
    '<bookViews><workbookView xWindow="240" yWindow="15" windowWidth="16095" '
    'windowHeight="9660"/></bookViews>'
    '<sheets><sheet name="{name}" sheetId="1" r:id="rId1"/></sheets>'
    '<definedNames><definedName name="_xlnm._FilterDatabase" localSheetId="0" hidden="1">'
    "{filter_ref}</definedName></definedNames>"
    '<calcPr calcId="124519" fullCalcOnLoad="1"/></workbook>'
)

_APP = (
    _XML_DECL
    + '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties"'
    ' xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
    "<Application>Microsoft Excel</Application><DocSecurity>0</DocSecurity>"
    "<ScaleCrop>false</ScaleCrop><HeadingPairs><vt:vector size=\"2\" baseType=\"variant\">"
    "<vt:variant><vt:lpstr>Worksheets</vt:lpstr></vt:variant>"
    "<vt:variant><vt:i4>1</vt:i4></vt:variant></vt:vector></HeadingPairs>"
    '<TitlesOfParts><vt:vector size="1" baseType="lpstr"><vt:lpstr>{name}</vt:lpstr></vt:vector>'
    "</TitlesOfParts><Company></Company><LinksUpToDate>false</LinksUpToDate>"
    "<SharedDoc>false</SharedDoc><HyperlinksChanged>false</HyperlinksChanged>"
    "<AppVersion>12.0000</AppVersion></Properties>"
)

_CORE = (
    _XML_DECL
    + '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/'
    'core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:dcterms="http://purl.org/dc/terms/" xmlns:dcmitype="http://purl.org/dc/dcmitype/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    "<dc:creator></dc:creator><cp:lastModifiedBy></cp:lastModifiedBy>"
    '<dcterms:created xsi:type="dcterms:W3CDTF">{now}</dcterms:created>'
    '<dcterms:modified xsi:type="dcterms:W3CDTF">{now}</dcterms:modified></cp:coreProperties>'
)

_SHEET_HEAD = (
    _XML_DECL
    + f'<worksheet xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}">'
    '<dimension ref="{ref}"/>'
    '<sheetViews><sheetView tabSelected="1" workbookViewId="0">'
    '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
    '<selection pane="bottomLeft"/></sheetView></sheetViews>'
    '<sheetFormatPr defaultRowHeight="15"/><cols>{cols}</cols><sheetData>'
)

_SHEET_TAIL = (
    '</sheetData><autoFilter ref="{ref}"/>'
    '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
    "</worksheet>"
)


Cells = Sequence[str | int | None]


class RowCountError(ValueError):
    """`rows` did not hold the `row_count` rows announced; nothing was left at `path`."""


def write_sheet(path: Path, header: Sequence[str], rows: Iterable[Cells], *,
                widths: Sequence[float], sheet_name: str = "report",
                row_count: int | None = None) -> int:
    """Write a one-sheet workbook; returns the number of data rows written. With `row_count`
    (how many rows `rows` holds) the sheet is deflated while it is rendered."""
    _check_layout(header, widths, sheet_name)
    letters = [_column_letter(i) for i in range(len(header))]
    if row_count is not None:
        return _write_counted(path, header, iter(rows), widths, sheet_name, row_count)
    with tempfile.TemporaryFile(dir=path.parent) as body:
        written = _write_body(body.write, header, rows, letters)
        last_col, last_row = letters[-1], written + 1
        ref = f"A1:{last_col}{last_row}"
        body.write(_SHEET_TAIL.format(ref=ref).encode())
        head = _SHEET_HEAD.format(ref=ref, cols=_cols_xml(widths)).encode()
        size = len(head) + body.tell()
        body.seek(0)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=COMPRESS_LEVEL) as zf:
            for part, xml in _package_parts(sheet_name, f"$A$1:${last_col}${last_row}"):
                zf.writestr(part, xml)
            with zf.open(SHEET_PART, "w", force_zip64=size * 1.05 > ZIP64_AT) as sheet:
                sheet.write(head)
                shutil.copyfileobj(body, sheet, 1 << 20)
    return written


def _write_counted(path: Path, header: Sequence[str], rows: Iterator[Cells],
                   widths: Sequence[float], sheet_name: str, count: int) -> int:
    """`write_sheet` with the row count known up front: the head first, then the rows as they
    come, deflated behind. zip64 only if the first rows, 4x, say it could be needed;
    otherwise, as without a count."""
    letters = [_column_letter(i) for i in range(len(header))]
    first = list(islice(rows, CHUNK_ROWS))
    rows = chain(first, rows)
    per_row = len(rows_xml(first, 2, letters).encode()) / len(first) if first else 0
    if per_row * count * 4 > ZIP64_AT:
        return write_sheet(path, header, rows, widths=widths, sheet_name=sheet_name)
    last_col, last_row = letters[-1], count + 1
    ref = f"A1:{last_col}{last_row}"
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=COMPRESS_LEVEL) as zf:
            for part, xml in _package_parts(sheet_name, f"$A$1:${last_col}${last_row}"):
                zf.writestr(part, xml)
            with zf.open(SHEET_PART, "w") as sheet, _WriteBehind(sheet.write) as out:
                out.write(_SHEET_HEAD.format(ref=ref, cols=_cols_xml(widths)).encode())
                written = _write_body(out.write, header, rows, letters)
                out.write(_SHEET_TAIL.format(ref=ref).encode())
        if written != count:
            raise RowCountError(f"{written} rows were written, not the {count} announced")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return written


class _WriteBehind:
    """`write` in a helper thread, in order, at most DEPTH writes behind the caller."""

    DEPTH = 4

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batchmove-xlsx")
        self._pending: deque[Future[Any]] = deque()

    def write(self, data: bytes) -> None:
        self._pending.append(self._pool.submit(self._write, data))
        while len(self._pending) > self.DEPTH:
            self._pending.popleft().result()

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _check_layout(header: Sequence[str], widths: Sequence[float], sheet_name: str) -> None:
    """ValueError for what Excel would refuse or repair: bad sheet names, columns, widths."""
    if not 1 <= len(header) <= MAX_COLUMNS:
        raise ValueError(f"the header must have 1 to {MAX_COLUMNS} columns, not {len(header)}")
    if len(widths) != len(header):
        raise ValueError(f"{len(widths)} widths for {len(header)} columns")
    bad = [w for w in widths if not 0 <= w <= MAX_WIDTH]
    if bad:
        raise ValueError(f"column widths must be 0 to {MAX_WIDTH:g}, not {bad[0]!r}")
    units = len(sheet_name.encode("utf-16-le", "surrogatepass")) // 2
    if (not 1 <= units <= 31 or _BAD_SHEET_NAME.search(sheet_name)
            or sheet_name.startswith("'") or sheet_name.endswith("'")):
        raise ValueError(f"invalid Excel sheet name {sheet_name!r}: 1-31 characters, none of "
                         "[]:*?/\\ or control characters, not starting or ending with '")


def _column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def _cols_xml(widths: Sequence[float]) -> str:
    return "".join(f'<col min="{i}" max="{i}" width="{float(w)!r}" customWidth="1"/>'
                   for i, w in enumerate(widths, start=1))


def _package_parts(sheet_name: str, absolute_ref: str) -> Iterator[tuple[str, str]]:
    """Every part but the sheet; the filter's defined name covers absolute_ref."""
    name = _xml_attr(sheet_name)
    filter_ref = "'" + sheet_name.replace("'", "''") + "'!" + absolute_ref
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    yield "[Content_Types].xml", _CONTENT_TYPES
    yield "_rels/.rels", _ROOT_RELS
    yield "docProps/app.xml", _APP.format(name=name)
    yield "docProps/core.xml", _CORE.format(now=now)
    yield "xl/workbook.xml", _WORKBOOK.format(name=name, filter_ref=_xml_attr(filter_ref))
    yield "xl/_rels/workbook.xml.rels", _WORKBOOK_RELS
    yield "xl/styles.xml", _STYLES


def _write_body(write: Callable[[bytes], Any], header: Sequence[str], rows: Iterable[Cells],
                letters: Sequence[str]) -> int:
    """Row 1 and every data row, CHUNK_ROWS at a time; the number of data rows."""
    write(header_xml(header, letters).encode())
    it = iter(rows)
    written = 0
    while chunk := list(islice(it, CHUNK_ROWS)):
        if written + len(chunk) >= MAX_ROWS:
            raise ValueError(f"more than {MAX_ROWS - 1} data rows: Excel's sheet limit")
        write(rows_xml(chunk, written + 2, letters).encode())
        written += len(chunk)
    return written


def _xml_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
