"""A sandbox started from an export file (`SandboxConfig(from_file=...)`, `--from`): the round
trip through `batchmove export` and back, ids kept, and every kind of bad file refused in one
line naming the file and the row."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import python_calamine

import batchmove
from batchmove.flows.export import export_followers, export_spec
from batchmove.sandbox import (
    RunningSandbox,
    SandboxConfig,
    SandboxConfigError,
    SandboxState,
    sandbox_openids,
)
from batchmove.sandbox.seed import PlanFacts, quota_from_plan, read_plan
from tests.support.cli import batchmove as batchmove_cli
from tests.support.sandboxes import SandboxFactory

pytestmark = pytest.mark.usefixtures("sandbox_credentials")

USERS = 50_000
GROUPS = [f"分组{i}" for i in range(27)] + ["-负号组", 'a "quoted", name', "=SUM(1)"]
TAGS = [f"标签{i}" for i in range(18)] + ["+plus", "with, comma"]
GROUP_IDS = [0, 1, 2, *range(100, 100 + len(GROUPS))]  # 33 ids, 3 reserved


async def spread(sandbox_factory: SandboxFactory) -> RunningSandbox:
    """50,000 followers spread over the 30 groups (and 0, 1, 2) and 0 to 3 of the 20 tags
    (and tag 2), through the sandbox's own admin calls."""
    sb = await sandbox_factory(SandboxConfig(users=USERS, groups=GROUPS, tags=TAGS))
    state = sb.state
    tag_ids = [2, *range(100, 100 + len(TAGS))]
    for i, openid in enumerate(state.followers):
        group = GROUP_IDS[(i * 7) % len(GROUP_IDS)]
        if group:
            state.move_directly(openid, group)
        for k in range(i % 4):
            state.tag_directly(openid, tag_ids[(i + 5 * k) % len(tag_ids)])
    return sb


async def export(base_url: str, out: Path, backend: str) -> Path:
    result = await export_followers(export_spec(out, api_base=base_url, rate=0,
                                                backend=backend))
    assert result.exit_code == 0, result.message
    assert result.rows == USERS
    return out


def xlsx_rows(path: Path) -> list[list[object]]:
    return python_calamine.CalamineWorkbook.from_path(str(path)).get_sheet_by_index(
        0).to_python()


@pytest.mark.parametrize("suffix", [".csv", pytest.param(".xlsx", marks=pytest.mark.slow)])
async def test_export_then_sandbox_from_it_then_export_again_is_identical(
        sandbox_factory: SandboxFactory, tmp_path: Path, suffix: str) -> None:
    first = await spread(sandbox_factory)
    for backend in ("groups", "tags"):
        exported = await export(first.base_url, tmp_path / f"{backend}-1{suffix}", backend)
        second = await sandbox_factory(SandboxConfig(from_file=str(exported)))
        again = await export(second.base_url, tmp_path / f"{backend}-2{suffix}", backend)
        if suffix == ".csv":
            assert again.read_bytes() == exported.read_bytes()
        else:
            assert xlsx_rows(again) == xlsx_rows(exported)
        assert second.state.followers == first.state.followers
        if backend == "groups":
            assert dict(second.state.members) == dict(first.state.members)
            kept = {g.id: (g.name, g.count) for g in second.state.groups.values()}
            assert kept == {g.id: (g.name, g.count) for g in first.state.groups.values()}
        else:
            assert second.state.tags.user_tags == first.state.tags.user_tags
            assert second.state.tags.listing() == first.state.tags.listing()


def test_ids_are_kept_and_new_ones_come_after_them(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("openid,current_groupid,current_group_name,to_group_name\r\n"
                    "oA,0,未分组,未分组\r\noB,205,VIP,VIP\r\noC,2,星标组,星标组\r\n",
                    encoding="utf-8")
    state = SandboxState(SandboxConfig(from_file=str(path), groups=["new"]))
    assert dict(state.members) == {"oA": 0, "oB": 205, "oC": 2}
    assert {g.id: g.name for g in state.groups.values()} == {
        0: "未分组", 1: "黑名单", 2: "星标组", 205: "VIP", 206: "new"}
    assert state.groups[205].count == 1
    assert state.groups[1].count == 0


def test_tags_keep_their_ids_and_paging(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("openid,current_tag_names,tagid_list\r\noA,,\r\noB,VIP;星标组,300;2\r\n"
                    "oC,VIP,300\r\n", encoding="utf-8")
    state = SandboxState(SandboxConfig(from_file=str(path), tags=["more"]))
    assert state.tags.user_tags == {"oB": {2, 300}, "oC": {300}}
    assert state.tags.followers({"tagid": 300}) == {
        "count": 2, "data": {"openid": ["oB", "oC"]}, "next_openid": "oC"}
    assert [t["id"] for t in state.tags.listing()] == [0, 1, 2, 300, 301]
    assert set(state.members.values()) == {0}


GROUP_HEAD = "openid,current_groupid,current_group_name,to_group_name\n"
TAG_HEAD = "openid,current_tag_names,tagid_list\n"


@pytest.mark.parametrize(("text", "message"), [
    ("openid,current_groupid,to_group_name\noA,0,未分组\n",
     "e.csv: not a batchmove export (missing column 'current_group_name')"),
    ("openid,to_group_name\noA,x\n", "e.csv: not a batchmove export (missing column"),
    ("", "e.csv: not a batchmove export"),
    (GROUP_HEAD + "oA,0,未分组,x\noB,0,未分组,x\noA,0,未分组,x\n",
     "e.csv row 4: openid oA is listed twice (first on row 2)"),
    (GROUP_HEAD + "oA,100,VIP,x\noB,100,Gold,x\n",
     "e.csv row 3: group 100 is named 'Gold' here but 'VIP' on row 2"),
    (GROUP_HEAD + "oA,0,Default,x\n",
     "e.csv row 2: group 0 is reserved as '未分组'; the file names it 'Default'"),
    (GROUP_HEAD + "oA,abc,VIP,x\n", "e.csv row 2: current_groupid 'abc' is not a group id"),
    (GROUP_HEAD + "oA,100,VIP\n", "e.csv row 2: expected 4 cells, found 3"),
    (GROUP_HEAD + ",100,VIP,x\n", "e.csv row 2: the openid is empty"),
    (TAG_HEAD + "oA,VIP;Gold,100\n", "e.csv row 2: current_tag_names 'VIP;Gold' and "
                                     "tagid_list '100' do not pair up"),
    (TAG_HEAD + "oA,VIP,100\noB,Gold,100\n",
     "e.csv row 3: tag 100 is named 'Gold' here but 'VIP' on row 2"),
    (TAG_HEAD + "oA,Star,2\n", "e.csv row 2: tag 2 is reserved as '星标组'"),
    (TAG_HEAD + "oA,未分组,0\n", "e.csv row 2: tag 0 '未分组' cannot be carried by a user"),
    (TAG_HEAD + "oA,VIP,100\noB,VIP,101\n", "e.csv row 3: tag name 'VIP' is held by tags 100"),
    (TAG_HEAD + "oA,VIP,x1\n", "e.csv row 2: tagid_list 'x1' is not a list of tag ids"),
])
def test_a_bad_export_file_is_one_line_naming_the_row(tmp_path: Path, text: str,
                                                       message: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SandboxConfigError) as caught:
        SandboxState(SandboxConfig(from_file=str(path)))
    assert f"{tmp_path}/{message}" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_or_damaged_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SandboxConfigError, match=r"cannot read the export file .*nope\.csv"):
        SandboxState(SandboxConfig(from_file=str(tmp_path / "nope.csv")))
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not a workbook")
    with pytest.raises(SandboxConfigError, match=r"cannot read the export file .*broken\.xlsx"):
        SandboxState(SandboxConfig(from_file=str(broken)))


def test_quota_from_plan_leaves_what_the_plan_saw(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"quota": {"groups/members/batchupdate": {
        "needed": 20, "remain": 120, "others": 20, "daily_limit": 100000, "fits_today": True,
        "days": 1}}}), encoding="utf-8")
    assert quota_from_plan(plan) == {"groups/members/batchupdate": 100}
    plan.write_text(json.dumps({"rows": {}}), encoding="utf-8")
    with pytest.raises(SandboxConfigError, match=r"plan.json: not a plan.json"):
        quota_from_plan(plan)
    plan.write_text(json.dumps({"quota": {"nope/x": {"remain": 1}}}), encoding="utf-8")
    with pytest.raises(SandboxConfigError, match="quota of 'nope/x' is not an endpoint"):
        quota_from_plan(plan)


def test_a_plan_is_read_once_for_its_quotas_and_rates(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    quota = {"groups/members/batchupdate": {"remain": 120, "others": 20}}
    plan.write_text(json.dumps({"quota": quota, "rates": {
        "groups/members/batchupdate": 95, "user/info/batchget": 12.5}}), encoding="utf-8")
    assert read_plan(plan) == PlanFacts(plan, {"groups/members/batchupdate": 100}, {
        "groups/members/batchupdate": 95.0, "user/info/batchget": 12.5})
    plan.write_text(json.dumps({"quota": quota}), encoding="utf-8")  # a fixed rate's plan
    assert read_plan(plan).rates == {}


@pytest.mark.parametrize("rates", [
    {"groups/members/batchupdate": 0}, {"groups/members/batchupdate": -3},
    {"groups/members/batchupdate": "95"}, {"groups/members/batchupdate": True},
    {"groups/members/batchupdate": None}, {"groups/members/batchupdate": 1e999},
    [95]])
def test_a_plan_whose_rate_is_not_a_positive_number_is_refused(
        tmp_path: Path, rates: object) -> None:
    """A hand-edited rate is never dropped quietly (the rehearsal's expected time would then
    rest on something else without saying so): one line naming the file and the value."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"quota": {}, "rates": rates}), encoding="utf-8")
    with pytest.raises(SandboxConfigError, match=r"plan\.json: (the rate of|\"rates\" is)"):
        read_plan(plan)


def test_sandbox_from_in_a_job_is_relative_to_the_job_file(tmp_path: Path) -> None:
    """`[sandbox] from` seeds the embedded sandbox: who is already in a target is known."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    a, b, c, d = sandbox_openids(4)
    (folder / "account.csv").write_text(
        "openid,current_groupid,current_group_name,to_group_name\r\n"
        f"{a},0,未分组,未分组\r\n{b},105,VIP,VIP\r\n{c},105,VIP,VIP\r\n{d},2,星标组,星标组\r\n",
        encoding="utf-8")
    (folder / "moves.csv").write_text(f"openid,to_groupid\n{a},105\n{b},105\n{c},2\n{d},105\n",
                                      encoding="utf-8")
    job = folder / "job.toml"
    job.write_text('input = "moves.csv"\napi_base = "sandbox"\nrate = 0\n'
                   f'out = "{tmp_path / "run"}"\n[sandbox]\nfrom = "account.csv"\n',
                   encoding="utf-8")
    spec = batchmove.job_spec(job)
    assert spec.sandbox == {"from_file": str(folder / "account.csv")}
    result = batchmove.run(job)
    assert result.exit_code == 0, result.message
    assert result.counts["moved"] == 3
    assert result.counts["already"] == 1  # oB: in group 105 in the export


@pytest.mark.parametrize(("table", "message"), [
    ('from = "nope.csv"', "sandbox.from: no such file: {folder}/nope.csv"),
    ('from = "bad.csv"', "{folder}/bad.csv row 2: group 0 is reserved as '未分组'"),
    ('from = "bad.csv"\nusers_file = "bad.csv"',
     "from (an export file) gives the followers: leave out users_file and openids"),
    ('form = "bad.csv"', "[sandbox] unknown key 'form' (did you mean 'from'?)"),
])
def test_a_bad_sandbox_from_is_one_line(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(
        "openid,current_groupid,current_group_name,to_group_name\noA,0,Default,x\n",
        encoding="utf-8")
    (tmp_path / "moves.csv").write_text("openid,to_groupid\noA,105\n", encoding="utf-8")
    job = tmp_path / "job.toml"
    job.write_text(f'input = "moves.csv"\napi_base = "sandbox"\n[sandbox]\n{table}\n',
                   encoding="utf-8")
    with pytest.raises(batchmove.JobFileError) as caught:
        batchmove.run(job, out=str(tmp_path / "run"))
    assert message.format(folder=tmp_path) in caught.value.message
    assert "\n" not in caught.value.message


def test_the_sandbox_command_serves_an_export_with_the_plans_quota(
        tmp_path: Path, sandbox_process: Callable[..., str]) -> None:
    export = tmp_path / "account.csv"
    export.write_text("openid,current_groupid,current_group_name,to_group_name\r\n"
                      "oA,0,未分组,未分组\r\noB,300,VIP,VIP\r\n", encoding="utf-8")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"quota": {"groups/members/batchupdate": {
        "remain": 7, "others": 2}}}), encoding="utf-8")
    base = sandbox_process("--from", str(export), "--quota-from-plan", str(plan))
    with urllib.request.urlopen(f"{base}/sandbox/state") as answer:  # 127.0.0.1 only
        state = json.load(answer)
    assert state["members"] == {"oA": 0, "oB": 300}
    assert {"id": 300, "name": "VIP", "count": 1} in state["groups"]
    with urllib.request.urlopen(f"{base}/sandbox/faults") as answer:
        assert json.load(answer)["daily_quota"] == {"groups/members/batchupdate": 5}
    bad = tmp_path / "bad.csv"
    bad.write_text("openid,current_groupid,current_group_name,to_group_name\noA,1,VIP,x\n",
                   encoding="utf-8")
    refused = batchmove_cli("sandbox", "--port", "0", "--from", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"batchmove: {bad} row 2: group 1 is reserved as '黑名单'; the file names it 'VIP'"]
