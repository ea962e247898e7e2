"""`accounts list|sync`, platform jobs and the ticket's life, as a user runs them."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openpyxl
import pytest

from batchmove.sandbox import PlatformConfig, RunningSandbox, authorizer_appid, running_sandbox
from batchmove.sandbox import sandbox_openids as openids
from batchmove.sandbox.platform import DEFAULT_COMPONENT_APPID, DEFAULT_COMPONENT_SECRET
from tests.support.cli import batchmove_async
from tests.support.sandboxes import ENV

A, B = authorizer_appid(0), authorizer_appid(1)


@pytest.fixture
async def platform() -> AsyncIterator[RunningSandbox]:
    config = PlatformConfig(authorizers=2, account={"users": 20, "groups": ["A"]})
    async with running_sandbox(platform=config) as sb:
        yield sb


def env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {**ENV, "WECHAT_COMPONENT_APPID": DEFAULT_COMPONENT_APPID,
            "WECHAT_COMPONENT_SECRET": DEFAULT_COMPONENT_SECRET,
            "BATCHMOVE_STATE_DIR": str(tmp_path / "state"), **more}


def job(tmp_path: Path, sb: RunningSandbox, accounts: str, ticket_age: float = 0.0,
        rows: list[list[str]] | None = None) -> Path:
    assert sb.platform is not None
    ticket = tmp_path / "ticket"
    ticket.write_text(sb.platform.latest_ticket)
    if ticket_age:
        os.utime(ticket, (time.time() - ticket_age,) * 2)
    with (tmp_path / "in.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["openid", "to_group_name"] if rows is None else
                        ["appid", "openid", "to_group_name"])
        writer.writerows(rows if rows is not None else [[o, "A"] for o in openids(20, 0)])
    path = tmp_path / "job.toml"
    path.write_text(f'input = "in.csv"\napi_base = "{sb.base_url}"\naccounts = {accounts}\n'
                    'out = "runs/job"\nconfirm = false\n'
                    '[credentials]\ncomponent = true\nticket_file = "ticket"\n')
    return path


async def test_a_stale_ticket_stops_with_one_line_and_a_fresh_one_resumes(
        tmp_path: Path, platform: RunningSandbox) -> None:
    path = job(tmp_path, platform, f'["{A}"]', ticket_age=13 * 3600)
    code, out, err = await batchmove_async("run", str(path), env=env(tmp_path))
    assert code == 3, err
    assert "component_verify_ticket from the ticket file" in err
    assert "13.0 h old" in err
    assert "Traceback" not in err + out
    assert platform.platform is not None
    assert platform.platform.calls["api_component_token"] == 0
    (tmp_path / "ticket").write_text(platform.platform.latest_ticket)  # a fresh push
    code, out, err = await batchmove_async("run", str(path), env=env(tmp_path))
    assert code == 0, err
    assert "finished (20 moved)" in out + err
    assert len(platform.platform.accounts[A].state.move_log) == 20


async def test_accounts_sync_then_list_names_and_quota(tmp_path: Path,
                                                       platform: RunningSandbox) -> None:
    path = job(tmp_path, platform, '"all"')
    code, out, err = await batchmove_async("accounts", "sync", str(path), env=env(tmp_path))
    assert (code, out.strip()) == (0, f"2 account(s) authorised the platform: {A}, {B}"), err
    code, out, err = await batchmove_async("accounts", "list", str(path), "--json",
                                           env=env(tmp_path))
    assert code == 0, err
    listed = json.loads(out)
    assert [(a["appid"], a["name"], a["daily_limit"], a["used"]) for a in listed] == [
        (A, "沙盒公众号1", 100_000, 0), (B, "沙盒公众号2", 100_000, 0)]
    code, out, _ = await batchmove_async("accounts", "list", str(path), env=env(tmp_path))
    assert out.splitlines()[0] == f"{A}  沙盒公众号1  0 of 100,000 used today, 100,000 left"
    assert platform.platform is not None
    assert "refreshtoken" not in out + err
    assert platform.platform.calls["api_component_token"] == 1
    (tmp_path / "in.csv").unlink()  # listing accounts needs no spreadsheet yet
    code, out, err = await batchmove_async("accounts", "list", str(path), env=env(tmp_path))
    assert (code, len(out.splitlines())) == (0, 2), err
    code, out, err = await batchmove_async("export", "--job", str(path), "--account", B,
                                           "--out", str(tmp_path / "b.csv"), env=env(tmp_path))
    assert code == 0, err
    assert {r["openid"] for r in read_rows(tmp_path / "b.csv")} == set(openids(20, 1))
    assert dict(platform.platform.authorizer_tokens) == {A: 1, B: 1}  # cached since `list`


async def test_several_accounts_one_line_each_and_the_worst_exit_code(
        tmp_path: Path, platform: RunningSandbox) -> None:
    rows = [[A, o, "A"] for o in openids(20, 0)[:5]] + [[B, o, "A"] for o in openids(20, 1)]
    path = job(tmp_path, platform, f'["{A}", "{B}"]', rows=rows)
    assert platform.platform is not None
    platform.platform.revoke(B)
    code, out, err = await batchmove_async("run", str(path), "--parallel", "2",
                                           env=env(tmp_path))
    assert code == 3, err
    lines = sorted(s for s in out.splitlines() if s.startswith("wxauth"))
    assert lines[0] == f"{A}: exit 0 (done): finished (5 moved)"
    assert lines[1].startswith(f"{B}: exit 3 (stopped early, resumable): ")
    summary = json.loads((tmp_path / "runs/job/summary.json").read_text())
    assert [(a["appid"], a["exit_code"]) for a in summary["accounts"]] == [(A, 0), (B, 3)]
    assert (tmp_path / "runs/job" / A / "report.csv").exists()
    # the totals are the sum of what each account's own summary.json says
    reported = [json.loads((tmp_path / "runs/job" / a["appid"] / "summary.json").read_text())
                for a in summary["accounts"] if a["reported"]]
    assert summary["counts"] == {k: sum(r["counts"][k] for r in reported)
                                 for k in summary["counts"]}
    assert summary["rows"] == sum(r["rows"] for r in reported) == sum(
        summary["counts"].values())
    assert summary["counts"]["moved"] == 5


async def test_an_appid_column_keeps_the_analysts_row_numbers(
        tmp_path: Path, platform: RunningSandbox) -> None:
    a, b = openids(20, 0), openids(20, 1)
    rows = [[A, a[0], "A"], [B, b[0], "A"], [A, a[1], "A"], [B, "not-an-openid!", "A"],
            ["", "", ""], [B, b[1], "A"], [A, a[2], "A"]]  # rows 2..8 of in.csv
    path = job(tmp_path, platform, f'["{A}", "{B}"]', rows=rows)
    code, _, err = await batchmove_async("run", str(path), "--parallel", "2",
                                           env=env(tmp_path))
    assert code == 1, err
    runs = tmp_path / "runs/job"
    assert [(r["row"], r["status"]) for r in read_rows(runs / B / "report.csv")] == [
        ("3", "moved"), ("5", "invalid"), ("7", "moved")]
    assert [(r["row"], r["status"]) for r in read_rows(runs / A / "report.csv")] == [
        ("2", "moved"), ("4", "moved"), ("8", "moved")]
    assert [(r["appid"], r["openid"], r["source_row"]) for r in read_rows(
        runs / B / "failed.csv")] == [(B, "not-an-openid!", "5")]
    sheet = openpyxl.load_workbook(runs / B / "report.xlsx", read_only=True).active
    assert sheet is not None
    assert [r[3] for r in sheet.iter_rows(min_row=2, values_only=True)] == [3, 5, 7]
    assert [(r["appid"], r["row"]) for r in read_rows(runs / "report.csv")] == [
        (A, "2"), (B, "3"), (A, "4"), (B, "5"), (B, "7"), (A, "8")]
    assert [r["source_row"] for r in read_rows(runs / "failed.csv")] == ["5"]
    assert not (runs / B / "input.csv").exists()  # each account reads the analyst's file
    rows = [[A, a[3], "A"]]  # the next night: no row for B, whose process is not started
    path = job(tmp_path, platform, f'["{A}", "{B}"]', rows=rows)
    code, out, err = await batchmove_async("run", str(path), env=env(tmp_path))
    assert code == 0, err
    assert (f"{B}: exit 0 (done): no row in in.csv's appid column: not started"
            in out.splitlines())
    summary = json.loads((runs / "summary.json").read_text())
    assert [(e["appid"], e["reported"]) for e in summary["accounts"]] == [(A, True), (B, False)]
    code, _, err = await batchmove_async("run", str(path), "--account", B, env=env(tmp_path))
    assert (code, err.strip()) == (2, f"batchmove: {tmp_path / 'in.csv'}: no row for {B} in "
                                      "its appid column: nothing to move")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


async def test_rows_of_an_account_the_job_does_not_move_are_refused(
        tmp_path: Path, platform: RunningSandbox) -> None:
    rows = [[A, openids(20, 0)[0], "A"], [B, openids(20, 1)[0], "A"], ["", "", ""]]
    for accounts, options in ((f'["{A}"]', ()), (f'["{A}", "{A}9"]', ("--parallel", "2"))):
        path = job(tmp_path, platform, accounts, rows=rows)
        code, _, err = await batchmove_async("run", str(path), *options, env=env(tmp_path))
        assert (code, err.strip()) == (2, f"batchmove: {tmp_path / 'in.csv'}: the appid column "
                                          f"names account(s) the job does not move: {B}")
    rows.append(["", openids(20, 0)[1], "A"])  # row 5: cells but no appid
    path = job(tmp_path, platform, f'["{A}"]', rows=rows)
    code, _, err = await batchmove_async("plan", str(path), env=env(tmp_path))
    assert (code, err.strip()) == (2, f"batchmove: {tmp_path / 'in.csv'}: row 5 has no appid")
    assert platform.platform is not None
    assert not any(len(a.state.move_log) for a in platform.platform.accounts.values())


async def test_a_platform_job_needs_its_accounts(tmp_path: Path,
                                                 platform: RunningSandbox) -> None:
    path = job(tmp_path, platform, '["not-an-appid"]')
    code, _, err = await batchmove_async("run", str(path), env=env(tmp_path))
    assert (code, err.strip().splitlines()[-1]) == (2, 'batchmove: "not-an-appid" is not an '
                                                       "appid (wx followed by letters and digits)")
    path.write_text(path.read_text().replace("accounts = [\"not-an-appid\"]\n", ""))
    code, _, err = await batchmove_async("run", str(path), env=env(tmp_path))
    assert code == 2
    assert "names no accounts" in err


async def test_runs_dir_from_the_environment_not_the_working_directory(
        tmp_path: Path, platform: RunningSandbox) -> None:
    path = job(tmp_path, platform, f'["{A}"]')
    path.write_text(path.read_text().replace('out = "runs/job"\n', ""))
    runs = tmp_path / "shared-volume"
    code, _, err = await batchmove_async("run", str(path), env=env(
        tmp_path, BATCHMOVE_RUNS_DIR=str(runs)))
    assert code == 0, err
    assert (runs / "job" / "ledger.sqlite").exists()
    code, _, err = await batchmove_async("run", str(path), env=env(
        tmp_path, BATCHMOVE_RUNS_DIR="relative/runs"))
    assert (code, err.strip()) == (2, "batchmove: BATCHMOVE_RUNS_DIR must be an absolute "
                                      "path, got 'relative/runs'")
