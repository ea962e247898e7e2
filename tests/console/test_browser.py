"""The analyst's story in a real headless Chromium, against a `batchmove serve` process and a
`batchmove sandbox` process on 127.0.0.1. Screenshots of every page: tests/.screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import openpyxl
import pytest

from batchmove.sandbox import DEFAULT_SECRET, sandbox_openids
from tests.support.console import KEY, XSS, Stage, expect, sheet, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]
OPENIDS = sandbox_openids(2000, 0)
RUN_TIMEOUT_MS = 90_000


@pytest.fixture
def page(browser: Any, stage: Stage) -> Iterator[Any]:
    stage.start_sandbox()
    stage.start_console()
    context = browser.new_context(locale="en-US", accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    try:
        yield pg
    finally:
        context.close()


def upload(page: Any, stage: Stage, data: bytes, name: str, *, rate: str = "",
           create: bool = True) -> str:
    """Through the home page's form, as an analyst does; returns the planned run's id."""
    path = stage.root / name
    path.write_bytes(data)
    page.goto(stage.console.url if stage.console else "")
    page.set_input_files("#file", str(path))
    if create:
        page.check("input[name=create_groups]")
    if rate:
        page.fill("input[name=rate]", rate)
    page.click("#upload-submit")
    page.wait_for_url("**/runs/*", timeout=60_000)
    page.wait_for_selector("#approve")
    return str(page.get_attribute("#run", "data-run-id"))


def moving(page: Any) -> None:
    """Wait until the live figures (server-sent events) show moved users."""
    expect(page.locator("#fig-moved")).to_have_text(re.compile(r"^[1-9]"), timeout=RUN_TIMEOUT_MS)


def wait_state(page: Any, state: str) -> None:
    page.wait_for_selector(f'#run[data-state="{state}"]', timeout=RUN_TIMEOUT_MS)


def test_upload_plan_approve_watch_download_rollback(page: Any, stage: Stage) -> None:
    start = stage.sandbox_state()["members"]
    page.goto(stage.console.url if stage.console else "")
    assert page.url == stage.base + "/"  # the key left the address bar
    shot(page, "1-home")
    data = sheet(OPENIDS[:300], ["销售", XSS, "新组"], extra="not an openid,销售\n,新组\n")
    run_id = upload(page, stage, data, "analyst.csv", rate="4")
    shot(page, "2-plan")
    assert page.inner_text("#plan-valid") == "300"
    assert page.inner_text("#plan-invalid") == "2"
    page.wait_for_selector("#rows tbody tr")
    assert page.locator("#rows tbody tr td.num").all_inner_texts() == ["302", "303"]
    assert XSS in page.inner_text("#targets")  # shown as text...
    assert page.locator("#targets img, #chart img").count() == 0  # ...never as an element
    assert page.locator("#targets .tag.new").count() == 2

    page.click("#approve")
    wait_state(page, "running")
    moving(page)
    shot(page, "3-progress")
    assert page.locator("#targets-progress tbody tr").count() >= 1
    wait_state(page, "finished")  # the event stream's last event reloads the page
    shot(page, "4-finished")
    assert page.inner_text("#fig-moved") == "300"

    with page.expect_download() as download:
        page.click("a.download:text('report.xlsx')")
    assert download.value.suggested_filename == "report.xlsx"
    saved = stage.root / "downloaded.xlsx"
    download.value.save_as(saved)
    book = openpyxl.load_workbook(saved, read_only=True)
    rows = list(book.active.iter_rows(values_only=True))
    status = rows[0].index("status")
    assert len(rows) == 303
    assert sorted({r[status] for r in rows[1:]}) == ["invalid", "moved"]
    assert XSS in [r[1] for r in rows[1:]]

    page.click("button[data-action=rollback]")
    page.wait_for_url(lambda url: run_id not in url, timeout=60_000)
    page.wait_for_selector("#approve")
    shot(page, "5-rollback-plan")
    assert page.inner_text("#plan-valid") == "300"
    page.click("#approve")
    wait_state(page, "finished")
    shot(page, "6-rollback-finished")
    assert stage.sandbox_state()["members"] == start
    assert page.dialogs == []  # the hostile name never ran
    logs = [stage.root / "console.log", *(stage.root / "runs").glob("*/console.log")]
    text = "".join(p.read_text(encoding="utf-8") for p in logs)
    assert "finished" in text  # the runs' own output is there...
    assert KEY not in text  # ...but neither the console's key...
    assert DEFAULT_SECRET not in text  # ...nor the appsecret


def test_a_stale_approval_is_refused_and_the_plan_shown_again(page: Any,
                                                               stage: Stage) -> None:
    jobs = stage.root / "jobs"
    (jobs / "nightly.csv").write_bytes(sheet(OPENIDS[:10], ["销售"]))
    api_base = stage.sandbox.url if stage.sandbox else ""
    (jobs / "nightly.toml").write_text(
        f'input = "nightly.csv"\ncreate_groups = true\napi_base = "{api_base}"\n')
    page.goto(stage.console.url if stage.console else "")
    page.click("button[data-plan-job='nightly.toml']")
    page.wait_for_selector("#approve")
    assert page.inner_text("#plan-valid") == "10"
    (jobs / "nightly.csv").write_bytes(sheet(OPENIDS[:25], ["销售"]))  # changed meanwhile
    page.click("#approve")
    page.wait_for_selector("#stale-note")
    shot(page, "7-stale")
    assert page.inner_text("#plan-valid") == "25"  # the plan as it is now
    page.click("#approve")
    wait_state(page, "finished")
    assert page.inner_text("#fig-moved") == "25"


def drop(page: Any, data: bytes, name: str) -> None:
    """Drag a file onto the drop zone, as from a file manager (a real `drop` event)."""
    transfer = page.evaluate_handle(
        "([bytes, name]) => { const t = new DataTransfer(); t.items.add(new File("
        "[new Uint8Array(bytes)], name, {type: 'text/csv'})); return t; }", [list(data), name])
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#dropzone")).to_have_class("dropzone over")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


def test_stop_and_resume(page: Any, stage: Stage) -> None:
    page.goto(stage.console.url if stage.console else "")
    drop(page, sheet(OPENIDS, ["销售"]), "big.csv")
    expect(page.locator("#file-name")).to_have_text("big.csv")
    page.fill("input[name=rate]", "6")
    page.click("#upload-submit")
    page.wait_for_selector("#approve", timeout=60_000)
    page.click("#approve")
    wait_state(page, "running")
    moving(page)
    page.click("button[data-action=stop]")
    wait_state(page, "stopped")
    shot(page, "8-stopped")
    moved = int(page.inner_text("#fig-moved"))
    assert 0 < moved < 2000
    page.click("button[data-action=resume]")
    wait_state(page, "finished")
    assert page.inner_text("#fig-moved") == "2000"
    members = stage.sandbox_state()["members"]
    assert sum(1 for o in OPENIDS if members[o] == 100) == 2000


def test_a_console_restart_finds_the_running_run(browser: Any, stage: Stage) -> None:
    stage.start_sandbox()
    stage.start_console()
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        run_id = upload(page, stage, sheet(OPENIDS[:1500], ["销售"]), "restart.csv",
                        rate="3", create=False)
        page.click("#approve")
        wait_state(page, "running")
        moving(page)
        assert stage.console is not None
        stage.console.stop()  # SIGTERM to the console; the run goes on in its own session
        expect(page.locator("#conn-banner")).to_have_text(re.compile("连接已断开"))
        shot(page, "9a-connection-lost-zh")
        stage.start_console()
        page.goto(stage.console.url)
        row = page.locator(f"tr[data-run='{run_id}'] .state")
        assert row.inner_text() == "运行中"
        shot(page, "9-history-after-restart-zh")
        page.click(f"tr[data-run='{run_id}'] a")
        wait_state(page, "finished")
        shot(page, "10-finished-zh")
        assert page.inner_text("#fig-moved") == "1500"
    finally:
        context.close()


def test_without_the_key_nothing_is_shown(browser: Any, stage: Stage) -> None:
    stage.start_sandbox()
    stage.start_console()
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        response = page.goto(stage.base + "/")
        assert response.status == 401
        assert page.locator("#login-submit").count() == 1  # the login form, nothing else
        assert page.locator("#upload-form, #history").count() == 0
        shot(page, "11-no-key")
        assert page.goto(stage.base + "/api/runs").status == 401
    finally:
        context.close()


def test_export_from_the_home_page_downloads_an_xlsx(page: Any, stage: Stage) -> None:
    """The export card: every follower of the sandbox once, with the group it is in."""
    members = stage.sandbox_state()["members"]
    page.goto(stage.console.url if stage.console else "")
    shot(page, "export-home")
    page.select_option("#export-form select[name=format]", "xlsx")
    page.click("#export-submit")
    page.wait_for_url("**/runs/*", timeout=60_000)
    wait_state(page, "finished")
    shot(page, "export-finished")
    with page.expect_download() as download:
        page.click("a.download:text('followers.xlsx')")
    saved = stage.root / "followers.xlsx"
    download.value.save_as(saved)
    rows = list(openpyxl.load_workbook(saved, read_only=True).active.iter_rows(values_only=True))
    header = list(rows[0])
    openid, groupid = header.index("openid"), header.index("current_groupid")
    assert {r[openid]: int(r[groupid]) for r in rows[1:]} == members
    assert len(rows) - 1 == len(OPENIDS)
    page.click("button[data-action=plan]")
    page.wait_for_selector("#approve")
    shot(page, "export-planned")
