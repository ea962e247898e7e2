"""report.xlsx writers compared on the report's own sheet: keep xlsxfast, or use a library?

    .venv/bin/pip install pyexcelerate rustpy-xlsxwriter     # not batchmove dependencies
    .venv/bin/python bench/xlsx_writers.py [--rows 200000] [--repeat 3]

Every writer writes the same report-shaped sheet: 9 columns as in a sample report (openid,
group name, note, row, status, group_id, errcode, errmsg, attempts), CJK text, ints, empty
cells, and now and then a cell that needs Excel's escapes (control characters, a literal
`_x0041_`, CR, a neutralised formula). Each run is a fresh child process (fork), timed around
the write alone; the table gives the median and min-max of the runs, the ratio to xlsxfast, the
file size and the writer's extra peak memory (VmHWM over VmRSS before the write).

"The same sheet" is checked, not assumed, for every writer: a probe sheet read back with
openpyxl must have a bold header, the pane frozen below it (A2), an autofilter over every row,
the column widths asked for (within 1, as xlsxwriter-style writers add 0.71), ints stored as
numbers and digit text ("00123") as text; and every cell of the probe and of the full sheet,
read back with calamine (which decodes `_xHHHH_` as Excel does), must equal what was written.

The verdict applies issue 11's rule: keep xlsxfast unless a library writes the same sheet and
is at most 1.5x slower. Writers that are not installed are listed as such. Only local files.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchmove.output.xlsxfast import write_sheet
from bench.harness import machine_line

Cell = str | int | None
Row = list[Cell]
Writer = Callable[[Path, Sequence[str], Sequence[Row], Sequence[float]], None]

HEADER = ["用户openid", "目标分组", "备注", "row", "status", "group_id", "errcode", "errmsg",
          "attempts"]
GROUPS = ("高价值客户", "华东媒", "沉睡用户", "新注册", "分组05")
ODD_TEXT = ("ctrl \x01 char", "_x0041_ literal", "cr\r\nlf", "'=HYPERLINK(\"x\")", "a&b<c>",
            "emoji 😀", " padded ", "tab\tinside", "00123")
PROBE_ROWS: list[Row] = [
    ["o" + "a" * 27, text, text, n + 2, "moved", 100 + n, None, None, 1]
    for n, text in enumerate(ODD_TEXT)
] + [["=SUM(A1)", "1e5", "-5", 10**12, "failed", 0, 40003, "invalid openid", 6]]
# An input's unnamed columns keep their blank header in the report (only named ones must be
# unique): a report can have two columns named "".
BLANK_HEADER = ["openid", "", "to_groupid", "", "row", "status", "group_id", "errcode", "errmsg",
                "attempts"]
BLANK_HEADER_ROWS: list[Row] = [["o" + "b" * 27, "x", "0", "y", 2, "already", 0, None, None, 0]]
RATIO_BAR = 1.5
WIDTH_TOLERANCE = 1.0


# --- the data ---------------------------------------------------------------------------------


def report_rows(n: int) -> list[Row]:
    """A report's rows: mostly moved, some invalid/failed/duplicate, an odd cell every 997."""
    rows: list[Row] = []
    for i in range(n):
        openid = f"o{i:09d}Ab_cdEFghIJklMNopq"[:28]
        group = GROUPS[i % len(GROUPS)]
        note = ODD_TEXT[(i // 997) % len(ODD_TEXT)] if i % 997 == 0 else f"第{i + 1}位"
        kind = i % 50
        if kind == 7:
            rows.append([openid, group, note, i + 2, "invalid", None, None,
                         "openid is shorter than 10 characters", 0])
        elif kind == 13:
            rows.append([openid, group, note, i + 2, "failed", 103, 40003, "invalid openid", 1])
        elif kind == 29:
            rows.append([openid, group, note, i + 2, "duplicate", None, None,
                         f"duplicate of row {i + 1}", 0])
        else:
            rows.append([openid, group, note, i + 2, "moved", 100 + i % 5, None, None, 1])
    return rows


def column_widths(header: Sequence[str], rows: Sequence[Row]) -> list[float]:
    """As report.py does: the widest of the first 1,000 cells, CJK counted twice, plus 2."""
    def width(value: Cell) -> int:
        return sum(2 if ord(ch) >= 0x2E80 else 1 for ch in ("" if value is None else str(value)))

    head = rows[:1000]
    return [float(min(max([width(name), *(width(r[c]) for r in head)]) + 2, 60))
            for c, name in enumerate(header)]


# --- the writers --------------------------------------------------------------------------------


def write_xlsxfast(path: Path, header: Sequence[str], rows: Sequence[Row],
                   widths: Sequence[float]) -> None:
    write_sheet(path, header, rows, widths=widths)


def write_xlsxwriter(path: Path, header: Sequence[str], rows: Sequence[Row],
                     widths: Sequence[float]) -> None:
    """xlsxwriter in constant_memory mode (inline strings): what xlsxfast replaced."""
    xlsxwriter: Any = importlib.import_module("xlsxwriter")
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = book.add_worksheet("report")
    bold = book.add_format({"bold": True})
    for col, width in enumerate(widths):
        sheet.set_column(col, col, width)
    sheet.freeze_panes(1, 0)
    sheet.autofilter(0, 0, len(rows), len(header) - 1)
    for col, name in enumerate(header):
        sheet.write_string(0, col, name, bold)
    for r, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            if isinstance(value, int):
                sheet.write_number(r, col, value)
            elif value:
                sheet.write_string(r, col, value)
    book.close()


_FORBIDDEN = r"\x00-\x08\x0b-\x1f\ufffe\uffff"
_EXCEL_ESCAPE = re.compile(f"_(?=x[0-9A-Fa-f]{{4}}[_{_FORBIDDEN}])|[{_FORBIDDEN}]")


def excel_escaped(text: str) -> str:
    """Excel's `_xHHHH_` escapes, which pyexcelerate lacks (it writes U+FFFD instead)."""
    return _EXCEL_ESCAPE.sub(lambda m: f"_x{ord(m[0]):04X}_", text)


def write_pyexcelerate(path: Path, header: Sequence[str], rows: Sequence[Row],
                       widths: Sequence[float]) -> None:
    """pyexcelerate, helped: Excel escapes in Python, text columns typed as inline strings
    (else a cell starting with "=" becomes a formula). It needs the whole sheet in memory."""
    pe: Any = importlib.import_module("pyexcelerate")
    text_type = importlib.import_module("pyexcelerate.DataTypes").DataTypes.INLINE_STRING
    numeric = [all(isinstance(r[c], int) for r in rows if r[c] is not None)
               for c in range(len(header))]
    data: list[list[Any]] = [[excel_escaped(v) for v in header]]
    data += [[excel_escaped(v) if isinstance(v, str) else v for v in row] for row in rows]
    book = pe.Workbook()
    sheet = book.new_sheet("report", data=data)
    for col, width in enumerate(widths, start=1):
        typed = None if numeric[col - 1] else text_type
        sheet.set_col_style(col, pe.Style(size=width, data_type=typed))
    sheet.set_row_style(1, pe.Style(font=pe.Font(bold=True)))
    sheet.panes = pe.Panes(y=1)
    sheet.auto_filter = True
    book.save(str(path))


def write_rustpy(path: Path, header: Sequence[str], rows: Sequence[Row],
                 widths: Sequence[float]) -> None:
    """rustpy-xlsxwriter (rust_xlsxwriter): rows must become dicts keyed by header."""
    rustpy: Any = importlib.import_module("rustpy_xlsxwriter")
    records = (dict(zip(header, row, strict=True)) for row in rows)
    rustpy.write_worksheet(records, str(path), sheet_name="report", freeze_row=1,
                           bold_headers=True, autofilter=True, column_widths=list(widths))


# name -> (distribution, module, writer)
WRITERS: dict[str, tuple[str, str, Writer]] = {
    "xlsxfast": ("batchmove", "batchmove.output.xlsxfast", write_xlsxfast),
    "pyexcelerate": ("pyexcelerate", "pyexcelerate", write_pyexcelerate),
    "rustpy-xlsxwriter": ("rustpy-xlsxwriter", "rustpy_xlsxwriter", write_rustpy),
    "xlsxwriter": ("xlsxwriter", "xlsxwriter", write_xlsxwriter),
}


def version(name: str) -> str | None:
    """The installed version, or None when the writer is not installed."""
    from importlib import metadata

    distribution, module, _ = WRITERS[name]
    try:
        importlib.import_module(module)
        found = metadata.version(distribution)
        return f"batchmove {found}" if distribution == "batchmove" else found
    except (ImportError, metadata.PackageNotFoundError):
        return None


# --- one timed write in a child process ---------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(name: str, path: Path, rows: Sequence[Row], widths: Sequence[float],
           conn: Any) -> None:
    before = _status_kb("VmRSS")
    cpu, started = time.process_time(), time.perf_counter()  # process_time: every thread
    WRITERS[name][2](path, HEADER, rows, widths)
    took = time.perf_counter() - started
    conn.send((took, time.process_time() - cpu, (_status_kb("VmHWM") - before) / 1024))
    conn.close()


def timed_write(name: str, path: Path, rows: Sequence[Row],
                widths: Sequence[float]) -> tuple[float, float, float]:
    """(wall s, CPU s, extra peak MB) of one write, in a forked child that inherits `rows`."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(name, path, rows, widths, send))
    child.start()
    send.close()
    result: tuple[float, float, float] = receive.recv()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{name}: the writer's process exited {child.exitcode}")
    return result


# --- is it the same sheet? ----------------------------------------------------------------------


def expected_cells(header: Sequence[str], rows: Sequence[Row]) -> list[list[Any]]:
    """What calamine must read: the header, ints as floats, None as ""."""
    return [list(header)] + [[float(v) if isinstance(v, int) else ("" if v is None else v)
                              for v in row] for row in rows]


def calamine_cells(path: Path) -> list[list[Any]]:
    calamine: Any = importlib.import_module("python_calamine")
    cells: list[list[Any]] = calamine.CalamineWorkbook.from_path(
        str(path)).get_sheet_by_index(0).to_python()
    return cells


def layout_problems(path: Path, header: Sequence[str], rows: Sequence[Row],
                    widths: Sequence[float]) -> list[str]:
    """What openpyxl sees of header, panes, filter, widths and cell types, against the report's."""
    openpyxl: Any = importlib.import_module("openpyxl")
    sheet = openpyxl.load_workbook(path).active
    last = openpyxl.utils.get_column_letter(len(header))
    problems = []
    if not all(sheet.cell(1, c).font.b for c in range(1, len(header) + 1) if header[c - 1]):
        problems.append("header not bold")
    if sheet.freeze_panes != "A2":
        problems.append(f"frozen at {sheet.freeze_panes}, not A2")
    if sheet.auto_filter.ref != f"A1:{last}{len(rows) + 1}":
        problems.append(f"autofilter {sheet.auto_filter.ref}")
    got_widths = {c: d.width for d in sheet.column_dimensions.values()  # a <col> spans min..max
                  for c in range(d.min or 0, (d.max or -1) + 1)}
    for col, want in enumerate(widths, start=1):
        got = got_widths.get(col)
        if got is None or abs(got - want) > WIDTH_TOLERANCE:
            problems.append(f"column {col} width {got}, not {want}")
    for r, row in enumerate(rows, start=2):
        for c, value in enumerate(row, start=1):
            cell = sheet.cell(r, c)
            if isinstance(value, int) and cell.data_type != "n":
                problems.append(f"{cell.coordinate} {value} not a number")
            if isinstance(value, str) and cell.data_type not in ("s", "inlineStr"):
                problems.append(f"{cell.coordinate} {value!r} stored as {cell.data_type}")
    return problems


def cell_problems(path: Path, header: Sequence[str], rows: Sequence[Row]) -> list[str]:
    read, want = calamine_cells(path), expected_cells(header, rows)
    if len(read) != len(want):
        return [f"{len(read)} rows read back, not {len(want)}"]
    wrong = [(r, c, got, cell) for r, (got_row, want_row) in enumerate(zip(read, want, strict=True))
             for c, (got, cell) in enumerate(zip(got_row, want_row, strict=False)) if got != cell]
    return [f"{len(wrong)} cells differ, e.g. row {r + 1} col {c + 1}: {got!r} for {cell!r}"
            for r, c, got, cell in wrong[:1]]


def probe(name: str, directory: Path, label: str, header: Sequence[str],
          rows: Sequence[Row]) -> list[str]:
    """The layout and every cell of a small sheet; [] when all is right."""
    path = directory / f"probe-{name}.xlsx"
    widths = column_widths(header, rows)
    try:
        WRITERS[name][2](path, header, rows, widths)
    except Exception as exc:  # a writer that cannot write the sheet at all says why
        return [f"{label}: failed: {type(exc).__name__}: {exc}"]
    found = layout_problems(path, header, rows, widths) + cell_problems(path, header, rows)
    if len(found) > 3:
        found = [*found[:3], f"and {len(found) - 3} more"]
    return [f"{label}: {problem}" for problem in found]


# --- the table and the verdict ------------------------------------------------------------------


@dataclass
class Result:
    name: str
    version: str | None
    seconds: list[float]
    cpu: list[float]
    peak_mb: list[float]
    size_mb: float
    problems: list[str]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def same_sheet(self) -> bool:
        return not self.problems


def measure(names: Sequence[str], rows: Sequence[Row], repeat: int,
            directory: Path) -> list[Result]:
    """Runs interleaved (A B C, A B C, ...), so a busy neighbour slows every writer alike."""
    results = {name: Result(name, version(name), [], [], [], 0.0, [])
               for name in names}
    present = [r for r in results.values() if r.version is not None]
    for r in results.values():
        if r.version is None:
            r.problems.append(f"not installed (pip install {r.name})")
    for r in present:
        r.problems += probe(r.name, directory, "awkward cells", HEADER, PROBE_ROWS)
        r.problems += probe(r.name, directory, "two blank headers", BLANK_HEADER,
                            BLANK_HEADER_ROWS)
    widths = column_widths(HEADER, rows)
    for run in range(repeat):
        print(f"run {run + 1} of {repeat}", file=sys.stderr, flush=True)
        for r in present:
            took, used, peak = timed_write(r.name, directory / f"{r.name}.xlsx", rows, widths)
            r.seconds.append(took)
            r.cpu.append(used)
            r.peak_mb.append(peak)
    for r in present:
        path = directory / f"{r.name}.xlsx"
        r.problems += [f"{len(rows):,} rows: {p}" for p in cell_problems(path, HEADER, rows)]
        r.size_mb = path.stat().st_size / 1e6
    return list(results.values())


def table(results: Sequence[Result], rows: int) -> str:
    base = next(r for r in results if r.name == "xlsxfast")
    cpu_base = statistics.median(base.cpu)
    lines = [f"| Writer ({rows:,} rows) | Version | Wall, median | Min–max | vs xlsxfast | CPU, "
             "median | vs xlsxfast | File | Extra peak memory | Same sheet |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not r.seconds:
            lines.append(f"| {r.name} | not installed |" + " |" * 8)
            continue
        cpu = statistics.median(r.cpu)
        lines.append(
            f"| {r.name} | {r.version} | {r.median:.2f} s | {min(r.seconds):.2f}–"
            f"{max(r.seconds):.2f} | {r.median / base.median:.2f}x | {cpu:.2f} s | "
            f"{cpu / cpu_base:.2f}x | {r.size_mb:.1f} MB | {statistics.median(r.peak_mb):.0f} MB "
            f"| {'yes' if r.same_sheet else '**no**'} |")
    return "\n".join(lines)


def verdict(results: Sequence[Result]) -> str:
    """Issue 11's rule, on wall time: a library must write the same sheet within 1.5x."""
    base = next(r for r in results if r.name == "xlsxfast")
    lines = []
    for r in results:
        if r.name == "xlsxfast" or not r.seconds:
            continue
        failed = sorted({p.partition(":")[0] for p in r.problems})
        lines.append(f"- {r.name}: {r.median / base.median:.2f}x the wall time, "
                     f"{statistics.median(r.cpu) / statistics.median(base.cpu):.2f}x the CPU; "
                     f"same sheet: {'yes' if r.same_sheet else 'no (' + ', '.join(failed) + ')'}")
    fit = [r for r in results if r.name != "xlsxfast" and r.seconds and r.same_sheet
           and r.median <= RATIO_BAR * base.median]
    if fit:
        lines.append(f"Verdict: a switch is possible: {', '.join(r.name for r in fit)} wrote the "
                     f"same sheet within {RATIO_BAR}x of xlsxfast's time.")
    else:
        lines.append(f"Verdict: keep xlsxfast: no library both wrote the same sheet and stayed "
                     f"within {RATIO_BAR}x of its time.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(WRITERS), default=list(WRITERS))
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    rows = report_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="xlsx-writers-") as work:
        names = ["xlsxfast", *(n for n in args.only if n != "xlsxfast")]
        results = measure(names, rows, args.repeat, Path(work))
    print(f"Machine: {machine_line()}; {args.repeat} runs each, interleaved\n")
    print(table(results, args.rows))
    for r in results:
        for problem in r.problems:
            print(f"- {r.name}: {problem}")
    print("\n" + verdict(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
