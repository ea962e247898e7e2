"""The batch's own files when one job runs for several accounts of a platform (`batchmove run
JOB --parallel N`). Each account keeps its run directory `OUT/<appid>`; OUT gets

    summary.json   `"kind": "accounts"`: the worst exit code, one entry per account (exit code,
                   message, run directory, and the counts, rows and calls of its own
                   summary.json), and the totals of those entries
    accounts.csv   one line per account: the same figures
    report.csv     every account's rows merged in the input's order, by the input's own row
                   numbers, with an `appid` column first when the input has none
    failed.csv     the failed and invalid rows likewise, under the input's header: fixed, it is
                   the batch's next input
    report.xlsx    report.csv as a workbook, up to the job's `xlsx_max_rows` rows

Only what an account's run wrote during this batch counts: an account refused before it
loaded (or never started) has `"reported": false`, null counts and no rows here, so a
summary.json left by an earlier night never slips into tonight's totals. An account's
summary.json is its run's if its file changed while the batch ran (`stamps` before, compared
after: no clock is trusted, a shared volume's included). The rows are read from the accounts'
ledgers once their processes have ended; if that fails (a damaged ledger), summary.json says
so in `reports_problem` and the accounts' own files stand.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, suppress
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from batchmove.errors import BatchmoveError, redact
from batchmove.ledger.rundir import SUMMARY_JSON
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import STATUSES
from batchmove.output.report import (
    EXCEL_MAX_ROWS,
    FAILED_COLUMNS,
    FAILED_CSV,
    OUR_COLUMNS,
    REPORT_CSV,
    REPORT_XLSX,
    Cells,
    Layout,
    atomic_text,
    csv_writer,
    layout,
    neutral,
    neutralize,
    unique_names,
    write_xlsx,
)

ACCOUNTS_CSV = "accounts.csv"
APPID = "appid"
Stamp = tuple[int, int, int] | None  # a file's (inode, size, mtime in ns); None: no file
#: (appid, exit code, final message) of each account's run, in the batch's order
Ends = Sequence[tuple[str, int, str]]


def stamps(out: Path, appids: Sequence[str]) -> dict[str, Stamp]:
    """Each account's summary.json as it is before the batch runs."""
    return {appid: _stamp(out / appid / SUMMARY_JSON) for appid in appids}


def write_batch(out: Path, ends: Ends, exit_code: int, before: Mapping[str, Stamp], *,
                xlsx_max_rows: int, about: Mapping[str, Any]) -> Path:
    """The batch's files in OUT (see the module docstring); the path of its summary.json.
    `about`: the batch's job, started_at, finished_at and duration_s."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    entries = [_entry(out, appid, code, message, before.get(appid))
               for appid, code, message in ends]
    reported = [e for e in entries if e["reported"]]
    problem = None
    try:
        files = _write_rows(out, [(e["appid"], out / e["appid"]) for e in reported],
                            xlsx_max_rows)
    except (BatchmoveError, OSError, sqlite3.Error) as exc:  # the accounts' own files stand
        files, problem = [], redact(str(getattr(exc, "message", None) or exc))
    _write_accounts(out / ACCOUNTS_CSV, entries)
    summary = {"kind": "accounts", "exit_code": exit_code, **about,
               "accounts": entries, "accounts_reported": len(reported),
               "counts": _total([e["counts"] for e in reported], STATUSES),
               "rows": sum(e["rows"] for e in reported),
               "calls": _total([e["calls"] for e in reported]),
               "files": [ACCOUNTS_CSV, *files, SUMMARY_JSON], "reports_problem": problem}
    with atomic_text(out / SUMMARY_JSON, bom=False) as handle:
        json.dump(summary, handle, ensure_ascii=False, indent=2, default=str)
        handle.write("\n")
    return out / SUMMARY_JSON


def _stamp(path: Path) -> Stamp:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _entry(out: Path, appid: str, code: int, message: str, before: Stamp) -> dict[str, Any]:
    run_dir = out / appid
    entry: dict[str, Any] = {"appid": appid, "exit_code": code, "message": message,
                             "run_dir": str(run_dir.absolute()), "reported": False,
                             "counts": None, "rows": None, "calls": None}
    now = _stamp(run_dir / SUMMARY_JSON)
    if now is None or now == before or not (run_dir / LEDGER_NAME).exists():
        return entry
    try:
        data = json.loads((run_dir / SUMMARY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return entry
    counts, calls = data.get("counts"), data.get("calls")
    if not (isinstance(data, dict) and _numbers(counts) and _numbers(calls)
            and isinstance(data.get("rows"), int)):
        return entry
    return entry | {"reported": True, "counts": counts, "rows": data["rows"], "calls": calls}


def _numbers(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in value.values())


def _total(parts: Sequence[Mapping[str, int]], keys: Sequence[str] = ()) -> dict[str, int]:
    totals = dict.fromkeys(keys, 0)
    for part in parts:
        for key, value in part.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _write_accounts(path: Path, entries: Sequence[Mapping[str, Any]]) -> None:
    with atomic_text(path, bom=False) as handle:
        writer = csv_writer(handle)
        writer.writerow([APPID, "exit_code", "message", *STATUSES, "rows", "run_dir"])
        for e in entries:
            figures = ([e["counts"].get(s, 0) for s in STATUSES] + [e["rows"]]
                       if e["reported"] else [""] * (len(STATUSES) + 1))
            writer.writerow(neutral([e["appid"], e["exit_code"], e["message"], *figures,
                                     e["run_dir"]]))


def _write_rows(out: Path, runs: Sequence[tuple[str, Path]], xlsx_max_rows: int) -> list[str]:
    """report.csv, failed.csv and (when it fits) report.xlsx of every account's rows; none
    when no account reported (an earlier batch's would contradict this one's summary)."""
    if not runs:
        for name in (REPORT_CSV, FAILED_CSV, REPORT_XLSX):
            with suppress(FileNotFoundError):
                (out / name).unlink()
        return []
    with ExitStack() as stack:
        parts = []
        for appid, run_dir in runs:
            ledger = stack.enter_context(Ledger(run_dir).open(lock=False))
            parts.append(_Part(appid, ledger, layout(ledger, run_dir)))
        for name, failed in ((REPORT_CSV, False), (FAILED_CSV, True)):
            merge = _Merge(parts, failed=failed)
            with atomic_text(out / name) as handle:
                writer = csv_writer(handle)
                writer.writerow(merge.header)
                writer.writerows(merge.rows())
        total = sum(sum(part.plan.counts.values()) for part in parts)
        if total > min(xlsx_max_rows, EXCEL_MAX_ROWS):
            with suppress(FileNotFoundError):
                (out / REPORT_XLSX).unlink()  # an older one would contradict report.csv
            return [REPORT_CSV, FAILED_CSV]
        merge = _Merge(parts, failed=False)
        write_xlsx(out / REPORT_XLSX, merge.header, merge.rows(), row_count=total)
    return [REPORT_CSV, REPORT_XLSX, FAILED_CSV]


class _Part(NamedTuple):
    """One account's rows: its ledger and the layout of its reports."""

    appid: str
    ledger: Ledger
    plan: Layout

    def header(self, failed: bool) -> list[str]:
        return self.plan.failed_header if failed else self.plan.header

    def rows(self, failed: bool) -> Iterator[Cells]:
        return self.ledger.review.report_rows(self.plan.cells, failed_only=failed)


class _Merge:
    """Several accounts' rows (each in row order) as one table in row order, merged by row
    number (`heapq.merge` over the ledgers' cursors: an account's rows pass through untouched
    when its columns are the batch's). The header: an `appid` column first when the input has
    none, the inputs' columns, then ours (`verified` blank for an account that has none)."""

    def __init__(self, parts: Sequence[_Part], *, failed: bool) -> None:
        inputs: list[str] = []
        for part in parts:
            inputs += [h for h in part.plan.input_headers if h not in inputs]
        self.prefix = not any(h.strip().casefold() == APPID for h in inputs)
        widest = max(len(p.header(failed)) - len(p.plan.input_headers) for p in parts)
        ours = unique_names(inputs, (FAILED_COLUMNS if failed else
                                     (*OUR_COLUMNS, "verified"))[:widest])
        shown = [neutralize(h) for h in inputs]  # failed.csv's too: the loader takes ' off
        self.header = [APPID] * self.prefix + shown + ours
        self.number = self.prefix + len(inputs)  # row (report) or source_row (failed)
        self.inputs, self.parts, self.failed = inputs, parts, failed

    def rows(self) -> Iterator[Cells]:
        return heapq.merge(*map(self._projected, self.parts), key=itemgetter(self.number))

    def _projected(self, part: _Part) -> Iterator[Cells]:
        """One account's rows in the batch's columns."""
        rows = part.rows(self.failed)
        own = part.plan.input_headers
        width = len(part.header(self.failed))
        if own == self.inputs and self.prefix + width == len(self.header):
            return map(partial(_prefixed, part.appid), rows) if self.prefix else rows
        place = [self.inputs.index(h) + self.prefix for h in own] + list(
            range(self.number, self.number + width - len(own)))
        blank: list[Any] = [part.appid] * self.prefix + [None] * (len(self.header) -
                                                                  self.prefix)
        return map(partial(_placed, blank, place), rows)


def _prefixed(appid: str, row: Cells) -> Cells:
    return (appid, *row)


def _placed(blank: list[Any], place: list[int], row: Cells) -> Cells:
    cells = blank.copy()
    for index, value in zip(place, row, strict=True):
        cells[index] = value
    return cells
