"""An export started from the console (`POST /api/exports`) against a real sandbox: it runs as
its own child process, the history shows it as `kind: "export"`, the file downloads, and every
follower is in it once with the group the sandbox says it is in."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest

from batchmove.sandbox import sandbox_openids
from tests.support.console import ConsoleUnderTest, wait_state

OPENIDS = sandbox_openids(300, 0)


async def test_export_of_every_follower_downloads_with_true_groups(
        console_app: ConsoleUnderTest) -> None:
    c = console_app
    state = c.sandbox.state
    sales = next(g.id for g in state.groups.values() if g.name == "销售")
    for openid in OPENIDS[::3]:
        state.move_directly(openid, sales)
    r = await c.client.post("/api/exports", json={"backend": "groups"}, headers=c.auth())
    assert r.status == 200, await r.text()
    run_id = (await r.json())["id"]
    info = await wait_state(c, run_id, "finished", "failed", "stopped")
    assert (info["state"], info["kind"], info["exit_code"]) == ("finished", "export", 0), info
    assert "followers.csv" in info["files"]
    listed = await (await c.client.get("/api/runs", headers=c.auth())).json()
    assert [r["kind"] for r in listed["runs"] if r["id"] == run_id] == ["export"]
    r = await c.client.get(f"/api/runs/{run_id}/files/followers.csv", headers=c.auth())
    assert r.status == 200
    rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    assert sorted(row["openid"] for row in rows) == sorted(OPENIDS)
    truth = state.snapshot()["members"]
    assert {row["openid"]: int(row["current_groupid"]) for row in rows} == truth
    assert sum(1 for row in rows if int(row["current_groupid"]) == sales) == len(OPENIDS[::3])
    page = await (await c.client.get(f"/runs/{run_id}", headers=c.auth())).text()
    assert f'/api/runs/{run_id}/files/followers.csv' in page
    events = await (await c.client.get(f"/api/runs/{run_id}/events", headers=c.auth())).text()
    assert '"state": "finished"' in events
    assert 'data-action="plan"' in page
    r = await c.client.post(f"/api/runs/{run_id}/plan", headers=c.auth())
    assert r.status == 200, await r.text()
    planned = await r.json()
    assert planned["run"]["state"] == "planned"
    assert planned["run"]["input_name"] == "followers.csv"
    # every follower valid, each to its current group: the plan knows from the file's
    # current_groupid that nobody moves (and the run finds them "already" there)
    assert (planned["plan"]["users_to_move"], planned["plan"]["already"]) == (0, len(OPENIDS))
    assert planned["plan"]["already_source"] == "input"
    assert planned["plan"]["can_run"]
    r = await c.client.post(f"/api/runs/{planned['id']}/approve",
                            json={"digest": planned["digest"]}, headers=c.auth())
    assert r.status == 200, await r.text()
    ran = await wait_state(c, planned["id"], "finished", "stopped", "failed")
    assert (ran["counts"].get("moved", 0), ran["counts"]["already"]) == (0, len(OPENIDS))
    assert state.snapshot()["members"] == truth


async def test_home_page_offers_the_export_form_in_both_languages(
        console_app: ConsoleUnderTest) -> None:
    c = console_app
    english = await (await c.client.get("/", headers=c.auth())).text()
    chinese = await (await c.client.get("/", headers=c.auth(**{"Accept-Language": "zh-CN"}))).text()
    assert 'id="export-form"' in english
    assert "Export the account's followers" in english or \
        "Export the account&#39;s followers" in english
    assert "导出公众号的粉丝" in chinese
    assert english.count('<select name="backend">') == 2


async def test_export_of_one_group_as_a_form(console_app: ConsoleUnderTest) -> None:
    c = console_app
    state = c.sandbox.state
    sales = next(g.id for g in state.groups.values() if g.name == "销售")
    for openid in OPENIDS[:7]:
        state.move_directly(openid, sales)
    r = await c.client.post("/api/exports", data={"groups": "销售", "format": "csv"},
                            headers=c.auth())
    assert r.status == 200, await r.text()
    run_id = (await r.json())["id"]
    await wait_state(c, run_id, "finished", "failed", "stopped")
    r = await c.client.get(f"/api/runs/{run_id}/files/followers.csv", headers=c.auth())
    rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    assert sorted(row["openid"] for row in rows) == sorted(OPENIDS[:7])


async def test_bad_group_name_fails_with_a_clear_message(console_app: ConsoleUnderTest) -> None:
    c = console_app
    r = await c.client.post("/api/exports", json={"groups": "没有这个组"}, headers=c.auth())
    run_id = (await r.json())["id"]
    info = await wait_state(c, run_id, "finished", "failed", "stopped")
    assert (info["state"], info["exit_code"]) == ("failed", 2), info
    assert info["message"].startswith("batchmove: ")
    assert "没有这个组" in info["message"]
    assert info["files"] == []
    assert info["resumable"] is False  # resuming would fail the same way


async def test_bad_fields_are_400_and_foreign_origin_403(console_app: ConsoleUnderTest) -> None:
    c = console_app
    r = await c.client.post("/api/exports", json={"backend": "x"}, headers=c.auth())
    assert r.status == 400
    assert "backend" in (await r.json())["error"]
    r = await c.client.post("/api/exports", json={"format": "pdf"}, headers=c.auth())
    assert r.status == 400
    assert "format" in (await r.json())["error"]
    r = await c.client.post("/api/exports", json={}, headers=c.auth(Origin="http://evil.test"))
    assert r.status == 403
    assert not [p for p in c.workspace.iterdir() if p.is_dir()]


# two export processes and a stop (4 s on a loaded machine): in the slow suite; the default
# suite keeps an export's whole run (test_export_of_every_follower_downloads_with_true_groups)
@pytest.mark.slow
async def test_a_stopped_export_resumes_to_every_follower_once(
        console_app: ConsoleUnderTest) -> None:
    c = console_app
    c.sandbox.set_faults(latency_ms=400)
    r = await c.client.post("/api/exports", json={}, headers=c.auth())
    run_id = (await r.json())["id"]
    await wait_state(c, run_id, "running")
    state = c.sandbox.state
    for _ in range(600):  # into its listing (each call 0.4 s), however slow its start-up
        if state.calls["user/get"]:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    r = await c.client.post(f"/api/runs/{run_id}/stop", headers=c.auth())
    assert r.status == 200
    info = await wait_state(c, run_id, "stopped", "finished", "failed")
    assert (info["state"], info["resumable"], info["files"]) == ("stopped", True, []), info
    assert info["exit_code"] == 143  # SIGTERM, recorded by the export itself
    c.sandbox.set_faults(latency_ms=0)
    r = await c.client.post(f"/api/runs/{run_id}/resume", headers=c.auth())
    assert r.status == 200, await r.text()
    info = await wait_state(c, run_id, "finished", "stopped", "failed")
    assert info["state"] == "finished", info
    r = await c.client.get(f"/api/runs/{run_id}/files/followers.csv", headers=c.auth())
    rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    assert sorted(row["openid"] for row in rows) == sorted(OPENIDS)
