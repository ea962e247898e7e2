"""The batch's own files (several accounts of one platform job), from real run directories:
rows merged in the input's order with its row numbers, totals that add up, stale summaries."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import openpyxl

from batchmove.ledger.store import Ledger
from batchmove.models import STATUSES, InputRow, RowStatus
from batchmove.output.batch import stamps, write_batch
from batchmove.output.report import write_reports

P, X = RowStatus.PENDING, RowStatus.INVALID
WA, WB, WC = "wxauthaaaaaa01", "wxauthbbbbbb02", "wxauthcccccc03"
ABOUT = {"job": "agency", "started_at": "s", "finished_at": "f", "duration_s": 1.0}


def openid(n: int) -> str:
    return f"o{n:027d}"


def account_run(out: Path, appid: str, numbers: list[int], *, headers: list[str] | None = None,
                bad: tuple[int, ...] = (), verified: bool = False) -> Path:
    """A finished run of one account with reports, as its `run --account` leaves it: rows
    `numbers` of the input (those in `bad` invalid), the others moved."""
    headers = headers or ["appid", "openid", "group"]
    extra = (appid,) if "appid" in headers else ()
    rows = [InputRow(n, "bad" if n in bad else openid(n), "VIP", X if n in bad else P,
                     "openid is shorter than 10 characters" if n in bad else "", extra)
            for n in numbers]
    run_dir = out / appid
    with Ledger(run_dir).open() as ledger:
        ledger.set_meta(headers=headers, openid_column="openid", target_column="group",
                        input="in.csv", run_id=appid)
        ledger.load_rows([rows], lambda _: [])
        ledger.assign_groups({"VIP": 100}, {})
        moved = [n for n in numbers if n not in bad]
        ledger.record_moved(moved, 1)
        ledger.add_calls(Counter({"groups/members/batchupdate": 1, "groups/get": len(moved)}))
        if verified:
            ledger.review.record_verified({n: "ok" for n in moved})
        write_reports(ledger, run_dir, {"job": "agency", "exit_code": 0})
    return run_dir


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))


def summary_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_every_accounts_rows_in_the_inputs_order_with_its_row_numbers(tmp_path: Path) -> None:
    before = stamps(tmp_path, [WA, WB])
    account_run(tmp_path, WA, [2, 4, 7])
    account_run(tmp_path, WB, [3, 5, 6], bad=(5,))
    summary = summary_of(write_batch(tmp_path, [(WA, 0, "done"), (WB, 1, "failures")], 1,
                                     before, xlsx_max_rows=100, about=ABOUT))
    report = read_csv(tmp_path / "report.csv")
    assert report[0] == ["appid", "openid", "group", "row", "status", "group_id", "errcode",
                         "errmsg", "attempts"]
    assert [(r[0], r[3], r[4]) for r in report[1:]] == [
        (WA, "2", "moved"), (WB, "3", "moved"), (WA, "4", "moved"), (WB, "5", "invalid"),
        (WB, "6", "moved"), (WA, "7", "moved")]
    assert read_csv(tmp_path / "failed.csv") == [
        ["appid", "openid", "group", "source_row", "reason"],
        [WB, "bad", "VIP", "5", "openid is shorter than 10 characters"]]
    sheet = openpyxl.load_workbook(tmp_path / "report.xlsx", read_only=True).active
    assert sheet is not None
    cells = [["" if c is None else str(c) for c in row]
             for row in sheet.iter_rows(values_only=True)]
    assert cells == report
    assert summary["files"] == ["accounts.csv", "report.csv", "report.xlsx", "failed.csv",
                                "summary.json"]
    assert (summary["kind"], summary["exit_code"], summary["job"]) == ("accounts", 1, "agency")


def test_totals_are_the_sum_of_the_accounts_summaries_written_by_this_batch(
        tmp_path: Path) -> None:
    account_run(tmp_path, WC, [9, 10])  # an earlier night's run: its summary is stale
    before = stamps(tmp_path, [WA, WB, WC])
    account_run(tmp_path, WA, [2, 4, 7])
    account_run(tmp_path, WB, [3, 5, 6, 8], bad=(5, 8))
    ends = [(WA, 0, "done"), (WB, 1, "row failures"), (WC, 2, "refused, nothing sent")]
    summary = summary_of(write_batch(tmp_path, ends, 2, before, xlsx_max_rows=100,
                                     about=ABOUT))
    mine = [summary_of(tmp_path / appid / "summary.json") for appid in (WA, WB)]
    assert summary["counts"] == {s: mine[0]["counts"][s] + mine[1]["counts"][s]
                                 for s in STATUSES}
    assert (summary["counts"]["moved"], summary["counts"]["invalid"]) == (5, 2)
    assert summary["rows"] == mine[0]["rows"] + mine[1]["rows"] == 7
    assert summary["calls"] == dict(Counter(mine[0]["calls"]) + Counter(mine[1]["calls"]))
    assert sum(summary["counts"].values()) == summary["rows"] == len(
        read_csv(tmp_path / "report.csv")) - 1
    stale = summary["accounts"][2]
    assert (stale["appid"], stale["reported"], stale["counts"], stale["rows"]) == (
        WC, False, None, None)
    assert summary["accounts_reported"] == 2
    lines = read_csv(tmp_path / "accounts.csv")
    assert lines[0] == ["appid", "exit_code", "message", *STATUSES, "rows", "run_dir"]
    figures = dict(zip(STATUSES, lines[2][3:], strict=False))
    assert lines[2][:3] == [WB, "1", "row failures"]
    assert {k: v for k, v in figures.items() if v != "0"} == {"moved": "2", "invalid": "2"}
    assert lines[2][-2] == "4"
    assert lines[3][:-1] == [WC, "2", "refused, nothing sent", *[""] * (len(STATUSES) + 1)]
    assert {r[0] for r in read_csv(tmp_path / "report.csv")[1:]} == {WA, WB}


def test_an_input_without_appid_gets_one_and_columns_only_some_have(tmp_path: Path) -> None:
    before = stamps(tmp_path, [WA, WB])
    headers = ["openid", "group"]
    account_run(tmp_path, WA, [2, 3], headers=headers, verified=True)
    account_run(tmp_path, WB, [2, 3], headers=headers)
    write_batch(tmp_path, [(WA, 0, "done"), (WB, 0, "done")], 0, before, xlsx_max_rows=100,
                about=ABOUT)
    report = read_csv(tmp_path / "report.csv")
    assert report[0] == ["appid", "openid", "group", "row", "status", "group_id", "errcode",
                         "errmsg", "attempts", "verified"]
    assert [(r[0], r[3], r[-1]) for r in report[1:]] == [
        (WA, "2", "ok"), (WB, "2", ""), (WA, "3", "ok"), (WB, "3", "")]


def test_report_xlsx_only_up_to_xlsx_max_rows(tmp_path: Path) -> None:
    (tmp_path / "report.xlsx").write_bytes(b"an older batch's")
    before = stamps(tmp_path, [WA])
    account_run(tmp_path, WA, [2, 3, 4])
    summary = summary_of(write_batch(tmp_path, [(WA, 0, "done")], 0, before, xlsx_max_rows=2,
                                     about=ABOUT))
    assert not (tmp_path / "report.xlsx").exists()
    assert summary["files"] == ["accounts.csv", "report.csv", "failed.csv", "summary.json"]
    assert os.stat(tmp_path / "report.csv").st_mode & 0o777 == 0o600


def test_no_account_reported_leaves_no_rows_of_an_earlier_batch(tmp_path: Path) -> None:
    before = stamps(tmp_path, [WA])
    account_run(tmp_path, WA, [2])
    write_batch(tmp_path, [(WA, 0, "done")], 0, before, xlsx_max_rows=100, about=ABOUT)
    again = stamps(tmp_path, [WA])  # tonight: WA's run is refused before it writes anything
    summary = summary_of(write_batch(tmp_path, [(WA, 2, "locked")], 2, again,
                                     xlsx_max_rows=100, about=ABOUT))
    assert (summary["accounts_reported"], summary["rows"]) == (0, 0)
    assert summary["counts"] == dict.fromkeys(STATUSES, 0)
    assert summary["files"] == ["accounts.csv", "summary.json"]
    assert not [p.name for p in tmp_path.glob("*.*") if p.name.startswith(("report", "failed"))]


def test_a_damaged_ledger_is_said_and_the_rest_still_written(tmp_path: Path) -> None:
    before = stamps(tmp_path, [WA])
    account_run(tmp_path, WA, [2])
    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (tmp_path / WA / name).unlink(missing_ok=True)
    (tmp_path / WA / "ledger.sqlite").write_bytes(b"not a database" * 100)
    summary = summary_of(write_batch(tmp_path, [(WA, 0, "done")], 0, before,
                                     xlsx_max_rows=100, about=ABOUT))
    assert "is not a batchmove ledger" in summary["reports_problem"]
    assert summary["files"] == ["accounts.csv", "summary.json"]
    assert read_csv(tmp_path / "accounts.csv")[1][:2] == [WA, "0"]


def test_the_batchs_csv_files_are_neutralised_headers_included(tmp_path: Path) -> None:
    before = stamps(tmp_path, [WA, WB])
    headers = ["appid", "openid", "group", "=HYPERLINK(1)"]
    account_run(tmp_path, WA, [2, 3], headers=headers, bad=(3,))
    account_run(tmp_path, WB, [4], headers=headers)
    write_batch(tmp_path, [(WA, 1, "=cmd|' /C calc'!A0"), (WB, 0, "done")], 1, before,
                xlsx_max_rows=100, about=ABOUT)
    for name in ("report.csv", "failed.csv"):
        assert read_csv(tmp_path / name)[0][3] == "'=HYPERLINK(1)", name
    accounts = {r[0]: r for r in read_csv(tmp_path / "accounts.csv")[1:]}
    assert accounts[WA][2] == "'=cmd|' /C calc'!A0"
