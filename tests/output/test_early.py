"""report.csv/xlsx written while a run goes on: the same files as written at the end."""

from __future__ import annotations

import time
from pathlib import Path

import openpyxl

from batchmove.models import InputRow, RowFailure, RowStatus
from batchmove.output import report
from batchmove.output.early import EarlyReport
from tests.output.test_report import make_ledger

N = 300
HEADERS = ["openid", "分组名称", "备注"]


def _rows() -> list[InputRow]:
    return [InputRow(i + 2, f"o{i:027d}", "市场部", RowStatus.PENDING, "", (f"=note {i}",))
            for i in range(N)]


def test_early_report_equals_the_report_written_at_the_end(tmp_path: Path) -> None:
    early_dir, late_dir = tmp_path / "early", tmp_path / "late"
    ledgers = [make_ledger(d, HEADERS, "openid", "分组名称", _rows()) for d in (early_dir,
                                                                             late_dir)]
    for ledger in ledgers:
        ledger.assign_groups({"市场部": 101}, {})
    early = EarlyReport(ledgers[0].path, report.layout(ledgers[0], early_dir)).start()
    assert not (early_dir / "report.csv").exists()  # only a temp name until the end
    for start in range(0, N, 50):  # rows settle in order, in commits, while the writer polls
        for ledger in ledgers:
            ledger.record_results({1: [r + 2 for r in range(start, start + 40)]},
                                  [RowFailure(r + 2, 40003, "invalid openid", 1)
                                   for r in range(start + 40, start + 45)])
        time.sleep(0.05)
    for ledger, run_dir, given in ((ledgers[0], early_dir, early), (ledgers[1], late_dir, None)):
        report.write_reports(ledger, run_dir, {"job": "t"}, early=given)
        ledger.close()
    assert (early_dir / "report.csv").read_bytes() == (late_dir / "report.csv").read_bytes()
    assert (early_dir / "failed.csv").read_bytes() == (late_dir / "failed.csv").read_bytes()
    sheets = [list(openpyxl.load_workbook(d / "report.xlsx", read_only=True).active.values)
              for d in (early_dir, late_dir)]
    assert sheets[0] == sheets[1]
    assert len(sheets[0]) == N + 1
    assert sheets[0][1][2] == "'=note 0"  # neutralised as at the end
    assert [p.name for p in early_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_abandoned_early_report_leaves_no_file(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, HEADERS, "openid", "分组名称", _rows())
    early = EarlyReport(ledger.path, report.layout(ledger, tmp_path)).start()
    ledger.record_results({1: [2, 3]}, [])
    early.abandon()
    ledger.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "ledger.sqlite"]
