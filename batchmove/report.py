"""Ledger -> the files an analyst opens: report.csv, report.xlsx, failed.csv, summary.json.

Every file is written to a temporary name in the run directory and renamed into place, so a
kill mid-write leaves the previous version or none, never half a file. They hold follower ids,
so they are created readable by the owner only. Text cells that Excel would run as a formula
get a leading `'` (CSV injection). `failed.csv` keeps the input's own header row verbatim (the
loader must recognise its columns) so it can be fixed and fed straight back as the next input.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

import xlsxwriter
from xlsxwriter.exceptions import XlsxWriterException

from batchmove.errors import RunStateError
from batchmove.ledger import Ledger, LedgerRow
from batchmove.models import RowStatus

REPORT_CSV = "report.csv"
REPORT_XLSX = "report.xlsx"
FAILED_CSV = "failed.csv"
SUMMARY_JSON = "summary.json"
OUR_COLUMNS = ("row", "status", "group_id", "errcode", "errmsg", "attempts")
FAILED_COLUMNS = ("source_row", "reason")
EXCEL_MAX_ROWS = 1_048_575  # data rows below the header
EXCEL_CELL_CHARS = 32_767
SUFFIX = "_batchmove"

_TRIGGERS = frozenset("=+-@\t\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
# a cell of a JSON array (as the ledger stores `extra`) that starts with a trigger
_EXTRA_TRIGGER = re.compile(r'"(?:[=+\-@]|\\[tr])')
_WIDTH_SAMPLE = 500
_MAX_WIDTH = 60

Cells = list[Any]  # text cells; our counters stay int (or None) for csv and xlsx


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """What `write_reports` wrote; `xlsx_skipped` says why `report_xlsx` is None."""

    report_csv: Path
    report_xlsx: Path | None
    failed_csv: Path
    summary_json: Path
    xlsx_skipped: str | None = None


def write_reports(ledger: Ledger, run_dir: Path, summary: dict[str, Any], *,
                  xlsx_max_rows: int = 200_000) -> ReportFiles:
    """Write all four files from the ledger; an unwritable run_dir is a `RunStateError`."""
    meta = ledger.meta()
    original = _original_cells(meta)
    headers = list(meta["headers"])
    verified = ledger.verified_any()
    ours = (*OUR_COLUMNS, "verified") if verified else OUR_COLUMNS
    report_header = [*map(neutralize, headers), *unique_names(headers, ours)]
    counts = {s.value: 0 for s in RowStatus} | dict(ledger.counts())
    total = sum(counts.values())
    limit = min(xlsx_max_rows, EXCEL_MAX_ROWS)
    skipped = f"{total} rows > xlsx_max_rows {limit}" if total > limit else None
    files = ReportFiles(run_dir / REPORT_CSV, None if skipped else run_dir / REPORT_XLSX,
                        run_dir / FAILED_CSV, run_dir / SUMMARY_JSON, skipped)
    try:
        _remove_stale_temps(run_dir)
        with _atomic_text(files.report_csv) as out:
            _write_csv(out, report_header, _report_rows(ledger, original, verified))
        if files.report_xlsx is None:  # an older report.xlsx would contradict report.csv
            with suppress(FileNotFoundError):
                (run_dir / REPORT_XLSX).unlink()
        else:
            _write_xlsx(files.report_xlsx, report_header,
                        _report_rows(ledger, original, verified))
        failed_rows = ledger.rows("status IN (?, ?)",
                                  (RowStatus.FAILED.value, RowStatus.INVALID.value))
        with _atomic_text(files.failed_csv) as out:
            _write_csv(out, [*headers, *unique_names(headers, FAILED_COLUMNS)],
                       ([*original(r), r.row, neutralize(_failure_reason(r))]
                        for r in failed_rows))
        names = [p.name for p in (files.report_csv, files.report_xlsx, files.failed_csv,
                                  files.summary_json) if p is not None]
        full = {**summary, "counts": counts, "rows": total, "calls": ledger.calls(),
                "groups_created": ledger.created_groups(),
                "report_xlsx": None if skipped else REPORT_XLSX,
                "report_xlsx_skipped": skipped, "files": names}
        with _atomic_text(files.summary_json, bom=False) as out:
            json.dump(full, out, ensure_ascii=False, indent=2, default=str)
            out.write("\n")
    except (OSError, XlsxWriterException) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise RunStateError(f"cannot write the reports in {run_dir}: {why}") from None
    return files


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The summary.json of a finished run (what schedulers and `status` read)."""
    path = run_dir / SUMMARY_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunStateError(f"{path} does not exist: the run has not written its reports") from None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise RunStateError(f"cannot read {path}: {why}") from None
    if not isinstance(data, dict):
        raise RunStateError(f"{path} is not a batchmove summary (not a JSON object)")
    return data


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


def _original_cells(meta: dict[str, Any]) -> Callable[[LedgerRow], Cells]:
    """A function rebuilding a row's input cells in header order (openid/target put back)."""
    headers = meta.get("headers")
    if not (isinstance(headers, list) and meta.get("openid_column") in headers
            and meta.get("target_column") in headers):
        raise RunStateError("the ledger does not record the input's headers and mapped columns "
                            "(meta headers/openid_column/target_column); run the job again")
    (first, first_is_target), (second, _) = sorted(
        [(headers.index(meta["openid_column"]), False),
         (headers.index(meta["target_column"]), True)])
    others = len(headers) - 2
    blank = [""] * others

    def cells(r: LedgerRow) -> Cells:
        extra = r.extra
        if extra is None:
            row = blank.copy()
        else:
            row = _split_extra(extra, others)
            if _EXTRA_TRIGGER.search(extra):
                row = [neutralize(c) for c in row]
        openid, target = r.openid, r.target
        if openid[:1] in _TRIGGERS:
            openid = neutralize(openid)
        if target[:1] in _TRIGGERS:
            target = neutralize(target)
        row.insert(first, target if first_is_target else openid)
        row.insert(second, openid if first_is_target else target)
        return row

    return cells


def _split_extra(extra: str, others: int) -> Cells:
    """The ledger's JSON array of cells. Without a backslash no cell holds a quote or an escape,
    so the array is `["` + `", "`.join(cells) + `"]` and a split is 5x faster than json.loads."""
    if "\\" not in extra and extra[:2] == '["':
        row = extra[2:-2].split('", "')
        if len(row) == others:
            return row
    row = ["" if c is None else str(c) for c in json.loads(extra)]
    return row if len(row) == others else (row + [""] * others)[:others]


def _report_rows(ledger: Ledger, original: Callable[[LedgerRow], Cells],
                 verified: bool = False) -> Iterator[Cells]:
    """Every row in input order: the input's cells, then OUR_COLUMNS (ints and None as they are:
    csv.writer converts them in C, and report.xlsx keeps them as numbers), then `verified`
    once `verify` has read the moved users back."""
    for r in ledger.rows():
        message = r.reason or r.errmsg or ""
        if message[:1] in _TRIGGERS:
            message = neutralize(message)
        row = original(r)
        row += (r.row, r.status, r.group_id, r.errcode, message, r.attempts)
        if verified:
            row.append(_verdict(r))
        yield row


def _verdict(r: LedgerRow) -> str:
    return r.verified or ""


def _failure_reason(r: LedgerRow) -> str:
    if r.status == RowStatus.INVALID:
        return r.reason
    if r.errcode is None:
        return r.errmsg or "no answer from WeChat"
    return f"errcode {r.errcode}: {r.errmsg}" if r.errmsg else f"errcode {r.errcode}"


def _write_csv(out: IO[str], header: list[str], rows: Iterable[Cells]) -> None:
    csv.writer(out, lineterminator="\r\n").writerows(chain([header], rows))


def _write_xlsx(path: Path, header: list[str], rows: Iterator[Cells]) -> None:
    """constant_memory keeps one row in memory; our counters as numbers, every other cell text.

    Column widths come from the first rows: constant_memory cannot look back.
    """
    head = list(islice(rows, _WIDTH_SAMPLE))
    with _atomic_path(path) as tmp:
        book = xlsxwriter.Workbook(str(tmp), {"constant_memory": True,
                                               "strings_to_formulas": False,
                                               "strings_to_urls": False})
        sheet = book.add_worksheet("report")
        bold = book.add_format({"bold": True})
        for col, name in enumerate(header):
            sheet.write_string(0, col, name[:EXCEL_CELL_CHARS], bold)
            widest = max([_width(name), *(_width(r[col]) for r in head)])
            sheet.set_column(col, col, min(widest + 2, _MAX_WIDTH))
        sheet.freeze_panes(1, 0)
        text, number = sheet.write_string, sheet.write_number
        n = 0
        for n, cells in enumerate(chain(head, rows), start=1):
            for col, value in enumerate(cells):
                if isinstance(value, int):
                    number(n, col, value)
                elif value:
                    text(n, col, value[:EXCEL_CELL_CHARS])
        sheet.autofilter(0, 0, n, len(header) - 1)
        book.close()


def _width(value: str | int | None) -> int:
    """Display width: CJK characters take two columns in Excel's default font."""
    text = "" if value is None else str(value)[:_MAX_WIDTH]
    return sum(2 if ord(ch) >= 0x2E80 else 1 for ch in text)


def _temp_name(path: Path) -> tuple[str, str]:
    return f".{path.name}.", ".tmp"


def _remove_stale_temps(run_dir: Path) -> None:
    """Temp files a killed earlier run left behind hold follower ids too: delete them."""
    for name in (REPORT_CSV, REPORT_XLSX, FAILED_CSV, SUMMARY_JSON):
        prefix, suffix = _temp_name(run_dir / name)
        for stale in run_dir.glob(f"{prefix}*{suffix}"):
            with suppress(FileNotFoundError):
                stale.unlink()


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
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
def _atomic_text(path: Path, *, bom: bool = True) -> Iterator[IO[str]]:
    """UTF-8 text via `_atomic_path`; the BOM makes Excel show Chinese. It is written by hand:
    the `utf-8-sig` codec is pure Python and would cost a call per row."""
    with _atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="",
                                             buffering=1 << 20) as out:
        if bom:
            out.write("\ufeff")
        yield out
