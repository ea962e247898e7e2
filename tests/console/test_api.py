"""The console's HTTP surface against a real sandbox: key, Host/Origin, upload limits, names
that try to escape, escaping of every name, and the plan -> approve -> run story over the API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchmove.sandbox import DEFAULT_SECRET, sandbox_openids
from tests.support.console import KEY, XSS, ConsoleUnderTest, sheet, wait_state
from tests.support.sandboxes import REPO_ROOT

OPENIDS = sandbox_openids(300, 0)
STRANGER = "oNotAFollowerOfThisAccount00"  # a well-formed openid the account does not have


def form(data: bytes, filename: str = "users.csv", **settings: str) -> aiohttp.FormData:
    f = aiohttp.FormData()
    for k, v in settings.items():
        f.add_field(k, v)
    f.add_field("file", data, filename=filename, content_type="text/csv")
    return f


async def upload(c: ConsoleUnderTest, data: bytes, filename: str = "users.csv",
                 **settings: str) -> tuple[int, dict[str, Any]]:
    r = await c.client.post("/api/uploads", data=form(data, filename, **settings),
                            headers=c.auth())
    return r.status, await r.json()


async def listed(c: ConsoleUnderTest, run_id: str, query: str,
                 lang: str = "en") -> dict[str, Any]:
    """A page of listed rows, once the plan's scratch ledger is loaded."""
    for _ in range(300):
        page: dict[str, Any] = await (await c.client.get(
            f"/api/runs/{run_id}/rows?{query}",
            headers=c.auth(**{"Accept-Language": lang}))).json()
        if not page.get("loading"):
            return page
        await asyncio.sleep(0.1)
    raise AssertionError("the invalid rows never loaded")


# --- the key ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/runs", "/static/console.js", "/runs/x",
                                  "/api/runs/x/files/report.csv"])
async def test_no_key_is_401_and_no_data(console_app: ConsoleUnderTest, path: str) -> None:
    r = await console_app.client.get(path)
    assert r.status == 401
    body = re.sub(r'name="next" value="[^"]*"', "", await r.text())  # where a login goes
    assert "console.js" not in body
    assert "runs" not in body.lower().replace("api/runs", "")


async def test_wrong_key_is_401(console_app: ConsoleUnderTest) -> None:
    r = await console_app.client.get("/api/runs", headers={"Authorization": "Bearer nope"})
    assert r.status == 401
    r = await console_app.client.get("/?key=nope", allow_redirects=False)
    assert r.status == 401


async def test_key_in_query_sets_strict_httponly_cookie_and_leaves_the_address(
        console_app: ConsoleUnderTest) -> None:
    prefix = console_app.client.prefix
    assert re.fullmatch(r"/c/[0-9a-f]{16}/", prefix)
    r = await console_app.client.get(f"/?key={KEY}&x=1", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == f"{prefix}?x=1"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert f"Path={prefix}" in cookie  # sent to the console's own paths only
    r = await console_app.client.get("/")  # the cookie jar now holds it
    assert r.status == 200
    assert "batchmove" in await r.text()


async def test_bearer_key_lists_runs(console_app: ConsoleUnderTest) -> None:
    r = await console_app.client.get("/api/runs", headers=console_app.auth())
    assert r.status == 200
    assert await r.json() == {"runs": []}


# --- Host and Origin ---------------------------------------------------------------------------
async def test_foreign_host_header_is_refused(console_app: ConsoleUnderTest) -> None:
    r = await console_app.client.get("/api/runs", headers=console_app.auth(Host="evil.test:80"))
    assert r.status == 400


@pytest.mark.parametrize(("origin", "status"), [
    ("http://evil.test", 403), (None, 403), ("same", 200)])
async def test_cookie_posts_need_the_consoles_own_origin(console_app: ConsoleUnderTest,
                                                         origin: str | None,
                                                         status: int) -> None:
    c = console_app
    await c.client.get(f"/?key={KEY}", allow_redirects=False)  # cookie, no bearer from now on
    headers = {} if origin is None else {
        "Origin": c.base_url if origin == "same" else origin}
    sheet = b"openid,group_name\noVMNKcg6aW_xzYPpiixlADcvcyp_,A\n"
    r = await c.client.post("/api/uploads", data=form(sheet), headers=headers)
    assert r.status == status  # 200: a one-row sheet, planned
    if status == 403:
        assert not [p for p in c.workspace.iterdir() if p.is_dir()]


async def test_bearer_post_with_a_foreign_origin_is_refused(console_app: ConsoleUnderTest) -> None:
    r = await console_app.client.post("/api/runs/x/stop",
                                      headers=console_app.auth(Origin="http://evil.test"))
    assert r.status == 403


# --- uploads ---------------------------------------------------------------------------------
async def test_upload_over_the_limit_is_413_and_leaves_nothing(
        console_app: ConsoleUnderTest) -> None:
    big = sheet(OPENIDS, ["销售"]) * 200  # > the fixture's 1 MB limit
    status, body = await upload(console_app, big)
    assert status == 413
    assert "larger" in body["error"]
    assert not [p for p in console_app.workspace.iterdir() if p.is_dir()]


async def test_a_path_in_the_file_name_never_escapes(console_app: ConsoleUnderTest) -> None:
    c = console_app
    boundary = "b0undary"
    raw = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
           f'filename="../../../etc/evil name.csv"\r\nContent-Type: text/csv\r\n\r\n'
           ).encode() + sheet(OPENIDS[:5], ["销售"]) + f"\r\n--{boundary}--\r\n".encode()
    r = await c.client.post("/api/uploads", data=raw, headers=c.auth(**{
        "Content-Type": f"multipart/form-data; boundary={boundary}"}))
    body = await r.json()
    assert r.status == 200, body
    run_dir = c.workspace / body["id"]
    stored = run_dir / "input.csv"
    assert stored.read_bytes().startswith(b"openid,group_name")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert body["run"]["input_name"] == "evil name.csv"
    assert not (c.workspace.parent / "etc").exists()


async def test_not_a_spreadsheet_is_refused(console_app: ConsoleUnderTest) -> None:
    status, body = await upload(console_app, b"#!/bin/sh\n", filename="x.sh")
    assert status == 400
    assert body["error"].startswith("choose a spreadsheet")


@pytest.mark.parametrize("run_id", ["..", "...", "%2E%2E", "a%2Fb", "..%2F..%2Fetc"])
async def test_run_ids_cannot_name_a_path(console_app: ConsoleUnderTest, run_id: str) -> None:
    r = await console_app.client.get(f"/api/runs/{run_id}", headers=console_app.auth())
    assert r.status == 404


async def test_only_the_reports_are_downloadable(console_app: ConsoleUnderTest) -> None:
    c = console_app
    status, body = await upload(c, sheet(OPENIDS[:5], ["销售"]))
    assert status == 200
    for name in ("job.toml", "console.json", "input.csv", "..%2Fdefaults.toml"):
        r = await c.client.get(f"/api/runs/{body['id']}/files/{name}", headers=c.auth())
        assert r.status == 404, name


# --- escaping and secrets ----------------------------------------------------------------------
async def test_a_hostile_group_name_is_text_everywhere(console_app: ConsoleUnderTest) -> None:
    c = console_app
    status, body = await upload(c, sheet(OPENIDS[:6], [XSS, "销售"]), create_groups="1")
    assert status == 200, body
    assert body["plan"]["groups"]["create"][0]["name"] == XSS  # JSON carries it as data
    page = await (await c.client.get(f"/runs/{body['id']}", headers=c.auth())).text()
    assert XSS not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    r = await c.client.get(f"/runs/{body['id']}", headers=c.auth())
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]


async def test_the_plan_page_says_up_to_as_plan_does(console_app: ConsoleUnderTest) -> None:
    """Users already in their target are skipped by the run, so an uncounted plan's users and
    move calls are a bound: the page says "up to", as `batchmove plan` prints it."""
    c = console_app
    status, body = await upload(c, sheet(OPENIDS[:6], ["销售"]))
    assert status == 200, body
    assert body["plan"]["moves_exact"] is False
    page = await (await c.client.get(f"/runs/{body['id']}", headers=c.auth())).text()
    users = page.split('id="plan-users">', 1)[1].split("</span>", 1)[0]
    calls = page.split('id="plan-calls">', 1)[1].split("</span>", 1)[0]
    assert users == f"<small>up to</small> {body['plan']['users_to_move']}"
    assert calls == f"<small>up to</small> {body['plan']['calls']['total']}"


async def test_no_secret_reaches_the_api(console_app: ConsoleUnderTest) -> None:
    c = console_app
    status, body = await upload(c, sheet(OPENIDS[:6], ["销售"]))
    assert status == 200
    everything = json.dumps(body) + await (await c.client.get(
        f"/runs/{body['id']}", headers=c.auth())).text()
    assert DEFAULT_SECRET not in everything
    tokens = list(c.sandbox.state.issued_tokens)
    assert tokens  # the plan fetched one
    assert not [t for t in tokens if t in everything]


# --- the story over the API ------------------------------------------------------------------
async def test_plan_invalid_rows_approve_run_and_download(console_app: ConsoleUnderTest) -> None:
    c = console_app
    data = sheet(OPENIDS[:40], ["销售", "新组"],
                 extra=f"not-an-openid!,销售\n,销售\n{STRANGER},销售\n")
    status, body = await upload(c, data, create_groups="1")
    assert status == 200, body
    run_id, plan = body["id"], body["plan"]
    assert plan["rows"] == {"pending": 41, "invalid": 2}
    assert [g["name"] for g in plan["groups"]["create"]] == ["新组"]
    rows = await listed(c, run_id, "limit=1&offset=1")
    assert rows["total"] == 2
    assert [r["row"] for r in rows["rows"]] == [43]  # the header is row 1
    r = await c.client.post(f"/api/runs/{run_id}/approve", json={"digest": "0" * 64},
                            headers=c.auth())
    assert r.status == 409
    assert (await r.json())["error"] == "stale"
    r = await c.client.post(f"/api/runs/{run_id}/approve", json={"digest": body["digest"]},
                            headers=c.auth())
    assert r.status == 200
    info = await wait_state(c, run_id, "finished", "failed", "stopped")
    assert info["state"] == "finished"
    assert (info["counts"]["moved"], info["counts"]["failed"]) == (40, 1)
    assert info["exit_code"] == 1
    [failed] = (await listed(c, run_id, "status=failed", lang="zh-CN"))["rows"]
    assert failed["reason"].startswith("errcode 43004: not a follower")  # as written (tooltip)
    assert failed["reason_text"] == "不是此公众号的关注者：未移动"  # in the page's language
    r = await c.client.get(f"/api/runs/{run_id}/files/summary.json", headers=c.auth())
    assert r.status == 200
    assert "attachment" in r.headers["Content-Disposition"]
    assert (await r.json())["counts"]["moved"] == 40
    r = await c.client.post(f"/api/runs/{run_id}/approve", json={"digest": body["digest"]},
                            headers=c.auth())
    assert r.status == 409  # approved once is enough


async def test_a_changed_defaults_file_makes_the_approval_stale(
        console_app: ConsoleUnderTest) -> None:
    c = console_app
    status, body = await upload(c, sheet(OPENIDS[:10], ["销售"]))
    assert status == 200
    defaults = c.workspace.parent / "defaults.toml"
    defaults.write_text(defaults.read_text() + "batch_size = 20\n")
    r = await c.client.post(f"/api/runs/{body['id']}/approve",
                            json={"digest": body["digest"]}, headers=c.auth())
    assert r.status == 409
    again = await r.json()
    assert again["error"] == "stale"
    assert again["digest"] != body["digest"]  # planned again, with the new settings
    assert again["run"]["state"] == "planned"


@pytest.mark.slow
async def test_a_killed_run_shows_stopped_and_resumes(console_app: ConsoleUnderTest) -> None:
    """kill -9 of the run's process (a crash, or a reboot): the console shows "stopped" from
    the ledger alone, and resume finishes it."""
    c = console_app
    status, body = await upload(c, sheet(OPENIDS[:200], ["销售"]), rate="4")
    assert status == 200
    run_id = body["id"]
    r = await c.client.post(f"/api/runs/{run_id}/approve", json={"digest": body["digest"]},
                            headers=c.auth())
    assert r.status == 200
    state = json.loads((c.workspace / run_id / "console.json").read_text())
    for _ in range(300):
        info = await (await c.client.get(f"/api/runs/{run_id}", headers=c.auth())).json()
        if info["counts"].get("moved"):
            break
        await asyncio.sleep(0.1)
    os.kill(state["child"]["pid"], signal.SIGKILL)
    info = await wait_state(c, run_id, "stopped", "finished")
    assert info["state"] == "stopped"
    assert info["counts"]["pending"] > 0
    r = await c.client.post(f"/api/runs/{run_id}/resume", headers=c.auth())
    assert r.status == 200
    info = await wait_state(c, run_id, "finished", "failed")
    assert info["counts"]["moved"] == 200
    assert info["exit_code"] == 0


async def test_cli_runs_are_in_the_history_and_can_be_verified(
        console_app: ConsoleUnderTest, tmp_path: Path) -> None:
    c = console_app
    moves = tmp_path / "moves.csv"
    moves.write_bytes(sheet(OPENIDS[:30], ["销售"]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchmove", "run", str(moves), "--yes", "--quiet",
        "--api-base", c.sandbox_url, "--out", str(c.workspace / "from-the-cli"),
        cwd=REPO_ROOT, stdin=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0
    runs = (await (await c.client.get("/api/runs", headers=c.auth())).json())["runs"]
    assert [(r["id"], r["state"], r["source"], r["counts"]["moved"]) for r in runs] == [
        ("from-the-cli", "finished", "cli", 30)]
    r = await c.client.post("/api/runs/from-the-cli/resume", headers=c.auth())
    assert r.status == 409  # a CLI run is resumed with its own command
    r = await c.client.post("/api/runs/from-the-cli/verify", headers=c.auth())
    assert r.status == 200
    info = await wait_state(c, "from-the-cli", "finished", "stopped", "failed")
    for _ in range(100):
        if info["verify"]:
            break
        await asyncio.sleep(0.1)
        info = await (await c.client.get("/api/runs/from-the-cli", headers=c.auth())).json()
    assert info["verify"]["checked"] == 30
    assert info["verify"]["mismatches"] == 0


async def test_a_plan_that_cannot_run_says_why_and_cannot_be_approved(
        console_app: ConsoleUnderTest) -> None:
    c = console_app
    status, body = await upload(c, sheet(OPENIDS[:5], ["黑名单"]))  # the blacklist guard
    assert status == 200
    assert body["plan"]["can_run"] is False
    assert "blacklist" in body["plan"]["blocked"]
    page = await (await c.client.get(f"/runs/{body['id']}", headers=c.auth())).text()
    assert 'id="blocked"' in page
    assert 'id="approve"' not in page
    r = await c.client.post(f"/api/runs/{body['id']}/approve",
                            json={"digest": body["digest"]}, headers=c.auth())
    assert r.status == 409
    assert (await r.json())["error"].startswith("this plan cannot run: ")


async def test_a_segment_job_from_the_jobs_folder(console_app: ConsoleUnderTest) -> None:
    """A `[select]` job has no spreadsheet: planned from the account, run like any job."""
    c = console_app
    moves = c.workspace.parent / "seed.csv"
    moves.write_bytes(sheet(OPENIDS[:12], ["销售"]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchmove", "run", str(moves), "--yes", "--quiet",
        "--api-base", c.sandbox_url, "--out", str(c.workspace.parent / "seed-run"),
        cwd=REPO_ROOT, stdin=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0  # 12 followers in 销售 now
    (c.workspace.parent / "jobs" / "segment.toml").write_text(
        f'api_base = "{c.sandbox_url}"\nrate = 0\ncreate_groups = true\n\n'
        '[select]\ngroup = "销售"\nto = "老客户"\n', encoding="utf-8")
    r = await c.client.post("/api/jobs/segment.toml/plan", headers=c.auth())
    body = await r.json()
    assert r.status == 200, body
    assert body["plan"]["users_to_move"] == 12
    assert body["plan"]["groups"]["create"][0]["name"] == "老客户"
    r = await c.client.post(f"/api/runs/{body['id']}/approve",
                            json={"digest": body["digest"]}, headers=c.auth())
    assert r.status == 200
    info = await wait_state(c, body["id"], "finished", "failed", "stopped")
    assert info["counts"]["moved"] == 12
