"""The console a team shares, over HTTP against a real sandbox: people and roles, four eyes,
one run per approval, discard, sessions and their cookie, the audit log."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest

from batchmove.console.audit import AUDIT_FILE, AuditLog
from batchmove.sandbox import sandbox_openids
from tests.support.console import KEY, ConsoleUnderTest, Team, sheet

OPENIDS = sandbox_openids(300, 0)


def form(data: bytes, **settings: str) -> aiohttp.FormData:
    f = aiohttp.FormData()
    for k, v in settings.items():
        f.add_field(k, v)
    f.add_field("file", data, filename="users.csv", content_type="text/csv")
    return f


async def upload(team: Team, who: str, data: bytes) -> dict[str, Any]:
    r = await team.client.post("/api/uploads", data=form(data), headers=await team.login(who))
    body: dict[str, Any] = await r.json()
    assert r.status == 200, body
    return body


async def approve(team: Team, who: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
    return await team.client.post(f"/api/runs/{body['id']}/approve",
                                  json={"digest": body["digest"]}, headers=await team.login(who))


def audit_of(team: Team) -> list[dict[str, Any]]:
    return list(AuditLog(team.workspace / AUDIT_FILE).entries())


async def wait_team(team: Team, who: str, run_id: str, *states: str) -> dict[str, Any]:
    headers = await team.login(who)
    for _ in range(300):
        info: dict[str, Any] = await (await team.client.get(f"/api/runs/{run_id}",
                                                            headers=headers)).json()
        if info["state"] in states:
            return info
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} stayed {info['state']}")


# --- roles and four eyes ------------------------------------------------------------------------
async def test_a_submitter_uploads_and_cannot_approve_an_approver_does(team_app: Team) -> None:
    t = team_app
    body = await upload(t, "alice", sheet(OPENIDS[:20], ["销售"]))
    assert body["run"]["submitted_by"] == "alice"
    r = await approve(t, "alice", body)
    assert r.status == 403
    assert "alice (submitter) may not approve" in (await r.json())["error"]
    r = await approve(t, "bob", body)
    assert r.status == 200, await r.text()
    info = await wait_team(t, "bob", body["id"], "finished", "failed", "stopped")
    assert (info["state"], info["counts"]["moved"], info["approved_by"]) == ("finished", 20, "bob")
    actions = [(e["who"], e["role"], e["action"], e["run"]) for e in audit_of(t)
               if e["action"] not in ("login", "login_failed")]
    assert actions == [("alice", "submitter", "upload", body["id"]),
                       ("alice", "submitter", "approve_refused", body["id"]),
                       ("bob", "approver", "approve", body["id"])]
    assert all(e["client"] == "127.0.0.1" and e["at"] for e in audit_of(t))


async def test_four_eyes_refuses_the_submitters_own_approval(team_app: Team) -> None:
    t = team_app
    body = await upload(t, "bob", sheet(OPENIDS[:5], ["销售"]))  # an approver submits
    r = await approve(t, "bob", body)
    assert r.status == 403
    assert (await r.json())["error"].startswith("four eyes")
    page = await (await t.client.get(f"/runs/{body['id']}", headers=await t.login("bob"))).text()
    assert 'id="approve"' not in page
    assert 'id="four-eyes"' in page
    r = await approve(t, "erin", body)  # another approver
    assert r.status == 200
    await wait_team(t, "erin", body["id"], "finished", "failed", "stopped")


async def test_four_simultaneous_approvals_start_one_run(team_app: Team) -> None:
    t = team_app
    body = await upload(t, "alice", sheet(OPENIDS[:300], ["销售"]))
    for who in ("bob", "erin", "carol"):
        await t.login(who)
    answers = await asyncio.gather(*(approve(t, who, body)
                                     for who in ("bob", "erin", "carol", "bob")))
    statuses = sorted(r.status for r in answers)
    assert statuses == [200, 409, 409, 409]
    for r in answers:
        if r.status == 409:
            refused = await r.json()
            assert refused["run"]["state"] in ("running", "finished")  # the run as it is
    info = await wait_team(t, "bob", body["id"], "finished", "failed", "stopped")
    assert (info["state"], info["counts"]["moved"], info["exit_code"]) == ("finished", 300, 0)
    approvals = [e for e in audit_of(t) if e["action"] == "approve"]
    assert len(approvals) == 1
    assert len([e for e in audit_of(t) if e["action"] == "approve_refused"]) == 3
    log = (t.workspace / body["id"] / "console.log").read_text()
    assert log.count("loaded 300 rows") == 1  # one `batchmove run` process


async def test_discard_a_plan(team_app: Team) -> None:
    t = team_app
    mine = await upload(t, "alice", sheet(OPENIDS[:5], ["销售"]))
    r = await t.client.post(f"/api/runs/{mine['id']}/discard", headers=await t.login("dave"))
    assert r.status == 403  # another submitter's plan
    r = await t.client.post(f"/api/runs/{mine['id']}/discard", headers=await t.login("alice"))
    assert r.status == 200
    assert not (t.workspace / mine["id"]).exists()
    assert [e["who"] for e in audit_of(t) if e["action"] == "discard"] == ["alice"]
    other = await upload(t, "dave", sheet(OPENIDS[:5], ["销售"]))
    assert (await approve(t, "bob", other)).status == 200
    r = await t.client.post(f"/api/runs/{other['id']}/discard", headers=await t.login("bob"))
    assert r.status == 409  # approved: no longer a plan
    await wait_team(t, "bob", other["id"], "finished", "failed", "stopped")


# --- sessions ---------------------------------------------------------------------------------
async def test_login_sets_a_port_named_session_cookie_that_holds_no_secret(
        team_app: Team) -> None:
    t = team_app
    prefix = t.client.prefix
    r = await t.client.post("/login", data={"name": "alice", "secret": t.secrets["alice"],
                                            "next": f"{prefix}audit"},
                            headers={"Origin": t.base_url}, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == f"{prefix}audit"
    cookie = r.headers["Set-Cookie"]
    name, value = cookie.split(";")[0].split("=", 1)
    assert name == f"batchmove_{t.client.server.port}_{prefix.strip('/').removeprefix('c/')}"
    assert t.secrets["alice"] not in cookie
    assert value not in t.secrets.values()
    assert re.search(r"Path=([^;]+)", cookie)[1] == prefix  # type: ignore[index]
    for flag in ("HttpOnly", "SameSite=Strict", "Max-Age=43200"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback
    page = await t.client.get("/audit")  # the jar sends it
    assert page.status == 200
    r = await t.client.post("/logout", headers={"Origin": t.base_url}, allow_redirects=False)
    assert r.status == 303
    t.client.session.cookie_jar.update_cookies({name: value})  # replayed after logout
    assert (await t.client.get("/audit")).status == 401


async def test_wrong_secrets_are_audited_and_throttled(team_app: Team) -> None:
    t = team_app
    for _ in range(5):
        r = await t.client.post("/api/login", json={"name": "alice", "secret": "guess" * 3})
        assert r.status == 401
    r = await t.client.post("/api/login", json={"name": "alice", "secret": t.secrets["alice"]})
    assert r.status == 429  # throttled, even with the right secret
    failed = [e for e in audit_of(t) if e["action"] == "login_failed"]
    assert [(e["who"], e["client"]) for e in failed] == [("alice", "127.0.0.1")] * 5
    assert t.secrets["alice"] not in (t.workspace / AUDIT_FILE).read_text()


async def test_the_key_is_no_way_in_with_people(team_app: Team) -> None:
    t = team_app
    r = await t.client.get("/api/runs", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status == 401
    r = await t.client.get(f"/?key={KEY}", allow_redirects=False)
    assert r.status == 401
    assert 'name="secret"' in await r.text()  # the login form


# --- the audit log ------------------------------------------------------------------------------
async def test_the_audit_log_cannot_be_rewritten_through_the_api(team_app: Team) -> None:
    t = team_app
    body = await upload(t, "alice", sheet(OPENIDS[:5], ["销售"]))
    admin = await t.login("carol")
    before = (t.workspace / AUDIT_FILE).read_bytes()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = await t.client.request(method, "/api/audit", headers=admin, json={"entries": []})
        assert r.status in (404, 405), method
        r = await t.client.request(method, "/api/audit/download", headers=admin, data=b"x")
        assert r.status in (404, 405), method
    for name in (AUDIT_FILE, f"..%2F{AUDIT_FILE}"):
        r = await t.client.get(f"/api/runs/{body['id']}/files/{name}", headers=admin)
        assert r.status == 404
    r = await t.client.get(f"/api/runs/{AUDIT_FILE}", headers=admin)
    assert r.status == 404
    r = await t.client.post("/api/uploads", data=form(b"x", backend="groups"),
                            headers={**admin, "Content-Disposition": AUDIT_FILE})
    after = (t.workspace / AUDIT_FILE).read_bytes()
    assert after.startswith(before)  # only ever appended to
    listed = await (await t.client.get("/api/audit", headers=admin)).json()
    assert listed["intact"] is True
    assert listed["entries"] == audit_of(t)[::-1]  # newest first
    download = await t.client.get("/api/audit/download", headers=admin)
    assert "attachment" in download.headers["Content-Disposition"]
    assert (await download.read()) == after


def test_a_line_changed_on_disk_breaks_the_chain(tmp_path: Any) -> None:
    log = AuditLog(tmp_path / AUDIT_FILE)
    for n in range(4):
        log.add("download", who="alice", role="submitter", client="127.0.0.1", run=f"r{n}")
    assert log.verify_chain() is None
    lines = log.path.read_text().splitlines()
    lines[1] = lines[1].replace('"r1"', '"r9"')
    log.path.write_text("\n".join(lines) + "\n")
    assert log.verify_chain() == 3  # the line after the changed one no longer links


async def test_the_run_page_and_the_audit_page_show_who(team_app: Team) -> None:
    t = team_app
    body = await upload(t, "alice", sheet(OPENIDS[:5], ["销售"]))
    page = await (await t.client.get(f"/runs/{body['id']}", headers=await t.login("dave"))).text()
    assert 'id="submitted-by">alice<' in page
    assert 'id="cannot-approve"' in page  # dave is a submitter
    assert 'data-action="discard"' not in page  # not his plan
    audit = await (await t.client.get("/audit?who=alice", headers=await t.login("dave"))).text()
    assert 'data-action="upload"' in audit
    assert 'id="audit-intact"' in audit
    settings = await t.client.get("/settings", headers=await t.login("dave"))
    assert settings.status == 403
    settings = await t.client.get("/settings", headers=await t.login("carol"))
    assert settings.status == 200
    assert ">bob<" in await settings.text()


async def test_an_admin_ends_a_persons_sessions(team_app: Team) -> None:
    t = team_app
    alice = await t.login("alice")
    r = await t.client.post("/api/sessions/end", json={"name": "alice"}, headers=alice)
    assert r.status == 403
    r = await t.client.post("/api/sessions/end", json={"name": "alice"},
                            headers=await t.login("carol"))
    assert (await r.json())["ended"] == 1
    assert (await t.client.get("/api/runs", headers=alice)).status == 401


# --- the history --------------------------------------------------------------------------------
async def test_the_history_filters_by_state_and_person_and_pages(team_app: Team) -> None:
    t = team_app
    for who in ("alice", "dave", "dave"):
        await upload(t, who, sheet(OPENIDS[:3], ["销售"]))
    headers = await t.login("bob")
    page = await (await t.client.get("/?who=dave&state=planned", headers=headers)).text()
    assert page.count("<tr data-run=") == 2
    page = await (await t.client.get("/?who=alice", headers=headers)).text()
    assert page.count("<tr data-run=") == 1
    page = await (await t.client.get("/?state=finished", headers=headers)).text()
    assert page.count("<tr data-run=") == 0
    assert "history.none_match" not in page
    page = await (await t.client.get("/?since=2000-01-01&until=2000-01-02", headers=headers)).text()
    assert page.count("<tr data-run=") == 0


# --- key mode: the one admin ----------------------------------------------------------------------
async def test_key_mode_is_one_admin_and_the_cookie_is_a_session(
        console_app: ConsoleUnderTest) -> None:
    c = console_app
    r = await c.client.get(f"/?key={KEY}", allow_redirects=False)
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"batchmove_{c.client.server.port}_")
    assert KEY not in cookie
    me = await (await c.client.get("/api/me")).json()
    assert me == {"name": "admin", "role": "admin"}
    entries = [json.loads(line) for line in (c.workspace / AUDIT_FILE).read_text().splitlines()]
    assert [(e["who"], e["role"], e["action"]) for e in entries] == [("admin", "admin", "login")]


@pytest.mark.parametrize(("host", "status"), [
    ("10.1.2.3:{port}", 200), ("[fe80::1]:{port}", 200), ("evil.test:{port}", 400),
    ("10.1.2.3:1", 400)])
async def test_an_address_of_the_machine_is_a_host_a_name_is_not(
        console_app: ConsoleUnderTest, host: str, status: int) -> None:
    c = console_app
    r = await c.client.get("/api/runs", headers=c.auth(
        Host=host.format(port=c.client.server.port)))
    assert r.status == status


# --- overlaps on one account --------------------------------------------------------------------
async def test_overlapping_plans_show_the_overlap_and_need_the_acknowledgement(
        team_app: Team) -> None:
    t = team_app
    first = await upload(t, "alice", sheet(OPENIDS[:100], ["销售"]))
    assert first["run"]["overlaps"] == []
    second = await upload(t, "dave", sheet(OPENIDS[50:150], ["销售"]))
    assert [(o["id"], o["users"], o["state"]) for o in second["run"]["overlaps"]] == [
        (first["id"], 50, "pending")]
    headers = await t.login("bob")
    page = await (await t.client.get(f"/runs/{second['id']}", headers=headers)).text()
    assert f'<a href="{t.client.prefix}runs/{first["id"]}">' in page  # the other run, linked
    assert 'id="acknowledge"' in page
    assert str(t.workspace) not in page  # no server path
    r = await approve(t, "bob", second)
    assert r.status == 409
    refused = await r.json()
    assert refused["error"] == "overlap"
    assert refused["overlaps"] == [{"id": first["id"], "job": "users", "state": "pending",
                                    "users": 50}]
    r = await t.client.post(f"/api/runs/{second['id']}/approve", headers=headers,
                            json={"digest": second["digest"], "acknowledge": True})
    assert r.status == 200, await r.text()
    info = await wait_team(t, "bob", second["id"], "finished", "failed", "stopped")
    assert (info["state"], info["counts"]["moved"] + info["counts"]["already"]) == (
        "finished", 100)
    approved = [e for e in audit_of(t) if e["action"] == "approve"]
    assert approved[0]["who"] == "bob"
    assert approved[0]["detail"].startswith("overlap acknowledged: 50 users also moved by")
    refused_entries = [e["detail"] for e in audit_of(t) if e["action"] == "approve_refused"]
    assert refused_entries == ["overlap"]
    r = await t.client.post(f"/api/runs/{first['id']}/discard", headers=await t.login("alice"))
    assert r.status == 200  # and its claim on the account goes with it


async def test_a_plan_without_a_usable_target_offers_no_approval(team_app: Team) -> None:
    t = team_app
    body = await upload(t, "alice", sheet(OPENIDS[:5], ["没有这个组"]))  # not created
    assert body["run"]["can_run"] is False
    assert body["run"]["blocked"] == "no target of this plan can be used"
    page = await (await t.client.get(f"/runs/{body['id']}", headers=await t.login("bob"))).text()
    assert 'id="approve"' not in page
    assert 'id="blocked"' in page
    r = await approve(t, "bob", body)
    assert r.status == 409
    zh = await t.client.post(f"/api/runs/{body['id']}/approve", json={"digest": body["digest"]},
                             headers={**await t.login("bob"), "Accept-Language": "zh-CN"})
    assert (await zh.json())["text"] == "此计划无法运行：此计划没有可用的目标：不会移动任何用户"
