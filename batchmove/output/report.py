"""Ledger -> the files an analyst opens: report.csv, report.xlsx, failed.csv, summary.json.

Every file is written to a temporary name in the run directory and renamed into place, so a
kill mid-write leaves the previous version or none, never half a file. They hold follower ids,
so they are created readable by the owner only. Text cells that Excel would run as a formula
get a leading `'` (CSV injection), headers included. `failed.csv` keeps the input's own header
row (the loader takes the `'` off again and recognises its columns) so it can be fixed and
fed straight back as the next input.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

from batchmove.errors import RunStateError
from batchmove.ledger.cells import ReportCells, report_cells
from batchmove.ledger.rundir import SUMMARY_JSON, read_summary
from batchmove.ledger.store import Ledger
from batchmove.models import RowStatus
from batchmove.output import sheetfork
from batchmove.output.xlsxfast import CHUNK_ROWS, RowCountError, write_sheet
from batchmove.results import ReportFiles

REPORT_CSV = "report.csv"
REPORT_XLSX = "report.xlsx"
FAILED_CSV = "failed.csv"
OUR_COLUMNS = ("row", "status", "group_id", "errcode", "errmsg", "attempts")
FAILED_COLUMNS = ("source_row", "reason")
EXCEL_MAX_ROWS = 1_048_575  # data rows below the header
SUFFIX = "_batchmove"

_TRIGGERS = frozenset("=+-@\t\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_WIDTH_SAMPLE = 500
_MAX_WIDTH = 60

Cells = Sequence[Any]  # text cells; our counters stay int (or None) for csv and xlsx


@dataclass(frozen=True)
class Layout:
    """What the report files of a run look like: where they go, their header and cells."""

    files: ReportFiles
    header: list[str]
    input_headers: list[str]
    cells: ReportCells
    counts: dict[str, int]

    @property
    def failed_header(self) -> list[str]:
        """failed.csv's: the input's own header, neutralised as every cell (the loader takes
        the `'` off again: the file is fed back as an input)."""
        return neutral([*self.input_headers, *unique_names(self.input_headers, FAILED_COLUMNS)])


def layout(ledger: Ledger, run_dir: Path, *, xlsx_max_rows: int = 200_000,
           counts: Mapping[str, int] | None = None) -> Layout:
    """`counts`: the ledger's rows by status, if the caller has just counted them."""
    meta = ledger.meta()
    verified = ledger.review.verified_any()
    cells = report_cells(meta, verified=verified, triggers=_TRIGGERS, neutralize=neutralize)
    headers = list(meta["headers"])
    ours = (*OUR_COLUMNS, "verified") if verified else OUR_COLUMNS
    counts = {s.value: 0 for s in RowStatus} | dict(
        ledger.counts() if counts is None else counts)
    total = sum(counts.values())
    limit = min(xlsx_max_rows, EXCEL_MAX_ROWS)
    skipped = f"{total} rows > xlsx_max_rows {limit}" if total > limit else None
    files = ReportFiles(run_dir / REPORT_CSV, None if skipped else run_dir / REPORT_XLSX,
                        run_dir / FAILED_CSV, run_dir / SUMMARY_JSON, skipped)
    return Layout(files, [*map(neutralize, headers), *unique_names(headers, ours)], headers,
                  cells, counts)


def write_reports(ledger: Ledger, run_dir: Path, summary: dict[str, Any], *,
                  xlsx_max_rows: int = 200_000,
                  counts: Mapping[str, int] | None = None) -> ReportFiles:
    """Write all four files from the ledger; an unwritable run_dir is a `RunStateError`.
    `counts`: the ledger's rows by status, if the caller has just counted them."""
    plan = layout(ledger, run_dir, xlsx_max_rows=xlsx_max_rows, counts=counts)
    files, cells = plan.files, plan.cells
    try:
        remove_stale_temps(run_dir)
        with _sheet_meanwhile(ledger, plan) as forked:
            with atomic_text(files.report_csv) as out:
                if files.report_xlsx is None or forked:
                    write_csv(out, plan.header, ledger.review.report_rows(cells))
                else:
                    _write_both(ledger, plan, files.report_xlsx, out)
            if files.report_xlsx is None:  # an older report.xlsx would contradict report.csv
                with suppress(FileNotFoundError):
                    (run_dir / REPORT_XLSX).unlink()
            with atomic_text(files.failed_csv) as out:
                write_csv(out, plan.failed_header,
                          ledger.review.report_rows(cells, failed_only=True))
        _write_summary(ledger, plan, summary)
    except OSError as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise RunStateError(f"cannot write the reports in {run_dir}: {why}") from None
    return files


@contextmanager
def _sheet_meanwhile(ledger: Ledger, plan: Layout) -> Iterator[bool]:
    """Whether report.xlsx is being written by a child process while the block writes the
    other files (`sheetfork`: large sheets, on Linux); it is in place once the block ends."""
    rows = sum(plan.counts.values())
    if plan.files.report_xlsx is None or not sheetfork.forks(ledger, rows):
        yield False
        return

    def write(source: Ledger, path: Path) -> None:
        try:
            write_xlsx_at(path, plan.header, source.review.report_rows(plan.cells),
                          row_count=rows)
        except RowCountError:  # rows came or went since they were counted: read them again
            write_xlsx_at(path, plan.header, source.review.report_rows(plan.cells))

    with atomic_path(plan.files.report_xlsx) as tmp, sheetfork.sheet_meanwhile(ledger, tmp, write):
        yield True


def _write_both(ledger: Ledger, plan: Layout, xlsx: Path, csv_out: IO[str]) -> None:
    """report.csv and report.xlsx from one read of the ledger, each chunk of rows written to
    the CSV on its way to the sheet, which is deflated while it is rendered (100,000 rows:
    0.55 s instead of 1.1 s, 2 cores)."""
    rows = ledger.review.report_rows(plan.cells)
    writer = csv_writer(csv_out)
    writer.writerow(plan.header)
    try:
        write_xlsx(xlsx, plan.header, _copied(rows, writer), row_count=sum(plan.counts.values()))
    except RowCountError:  # rows came or went since they were counted: read them again
        write_xlsx(xlsx, plan.header, ledger.review.report_rows(plan.cells))


def _copied(rows: Iterator[Cells], writer: Any) -> Iterator[Cells]:
    """`rows` as they come, each chunk written by the CSV `writer` first."""
    while chunk := list(islice(rows, CHUNK_ROWS)):
        writer.writerows(chunk)
        yield from chunk


def _write_summary(ledger: Ledger, plan: Layout, summary: dict[str, Any]) -> None:
    files = plan.files
    full = {**summary, "counts": plan.counts, "rows": sum(plan.counts.values()),
            "calls": ledger.calls(), "groups_created": ledger.creations.created(),
            "report_xlsx": None if files.xlsx_skipped else REPORT_XLSX,
            "report_xlsx_skipped": files.xlsx_skipped,
            "files": [p.name for p in files.written]}
    source = ledger.meta().get("snapshot_source")  # the tags backend's choice, once made
    if source:
        full["snapshot_source"] = source
    _dump_summary(files.summary_json, full)


def earlier_summary(ledger: Ledger, run_dir: Path) -> dict[str, Any]:
    """The summary.json the run itself wrote, if it describes what the ledger holds now (the
    same run, the same counts); {} otherwise (killed before writing it, resumed since...)."""
    try:
        found = read_summary(run_dir)
    except RunStateError:
        return {}
    counts = {s.value: 0 for s in RowStatus} | dict(ledger.counts())
    same = found.get("run_id") == ledger.meta().get("run_id") and found.get("counts") == counts
    return found if same else {}


def _dump_summary(path: Path, summary: dict[str, Any]) -> None:
    with atomic_text(path, bom=False) as out:
        json.dump(summary, out, ensure_ascii=False, indent=2, default=str)
        out.write("\n")


def update_summary(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """summary.json with `fields` set, rewritten atomically (e.g. `notifications` after a run)."""
    summary = read_summary(run_dir) | fields
    try:
        _dump_summary(run_dir / SUMMARY_JSON, summary)
    except OSError as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise RunStateError(f"cannot write {run_dir / SUMMARY_JSON}: {why}") from None
    return summary


def unique_names(taken: Sequence[str], ours: Iterable[str]) -> list[str]:
    """Our column names, suffixed where the input already uses one, so theirs is never lost."""
    used = {h.strip().casefold() for h in taken}
    names = []
    for name in ours:
        candidate, n = name, 1
        while candidate.casefold() in used:
            candidate = f"{name}{SUFFIX}{n if n > 1 else ''}"
            n += 1
        used.add(candidate.casefold())
        names.append(candidate)
    return names


def neutralize(cell: str) -> str:
    """A leading `'` on text Excel would run as a formula; plain numbers like -5 stay as is."""
    if cell[:1] in _TRIGGERS and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def neutral(cells: Iterable[Any]) -> list[Any]:
    """Every text cell through `neutralize` (headers too); numbers stay numbers. For the
    CSV files batchmove writes cell by cell (failed.csv's header, rollback.csv, a platform
    batch's accounts.csv); the report's rows are neutralised by SQLite as they are read."""
    return [neutralize(c) if isinstance(c, str) else c for c in cells]


def csv_writer(out: IO[str]) -> Any:
    return csv.writer(out, lineterminator="\r\n")


def write_csv(out: IO[str], header: list[str], rows: Iterable[Cells]) -> None:
    csv_writer(out).writerows(chain([header], rows))


def write_xlsx(path: Path, header: list[str], rows: Iterator[Cells], *,
               row_count: int | None = None) -> None:
    """Our counters as numbers, every other cell text, through `xlsxfast` (7x xlsxwriter);
    `row_count`: how many rows there are, if known (the sheet is then deflated as it goes).

    Column widths come from the first rows: the writer streams and cannot look back.
    """
    with atomic_path(path) as tmp:
        write_xlsx_at(tmp, header, rows, row_count=row_count)


def write_xlsx_at(path: Path, header: list[str], rows: Iterator[Cells], *,
                  row_count: int | None = None) -> None:
    """`write_xlsx` straight to `path` (already a temp name)."""
    head = list(islice(rows, _WIDTH_SAMPLE))
    widths = [min(max([_width(name), *(_width(r[col]) for r in head)]) + 2, _MAX_WIDTH)
              for col, name in enumerate(header)]
    write_sheet(path, header, chain(head, rows), widths=widths, row_count=row_count)


def _width(value: str | int | None) -> int:
    """Display width: CJK characters take two columns in Excel's default font."""
    text = "" if value is None else str(value)[:_MAX_WIDTH]
    return sum(2 if ord(ch) >= 0x2E80 else 1 for ch in text)


def _temp_name(path: Path) -> tuple[str, str]:
    return f".{path.name}.", ".tmp"


def remove_stale_temps(run_dir: Path, names: Iterable[str] = (
        REPORT_CSV, REPORT_XLSX, FAILED_CSV, SUMMARY_JSON)) -> None:
    """Temp files a killed earlier run (or export) left behind hold follower ids too: delete
    them. Only under the lock of whatever writes these files."""
    for name in names:
        prefix, suffix = _temp_name(run_dir / name)
        for stale in run_dir.glob(f"{prefix}*{suffix}"):
            with suppress(FileNotFoundError):
                stale.unlink()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A 0o600 temp file beside `path`, synced and renamed onto it only if the block succeeds."""
    prefix, suffix = _temp_name(path)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o600)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextmanager
def atomic_text(path: Path, *, bom: bool = True) -> Iterator[IO[str]]:
    """UTF-8 text via `atomic_path`; the BOM makes Excel show Chinese. It is written by hand:
    the `utf-8-sig` codec is pure Python and would cost a call per row."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="",
                                             buffering=1 << 20) as out:
        if bom:
            out.write("\ufeff")
        yield out
