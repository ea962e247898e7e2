"""`export` end to end against the real sandbox on 127.0.0.1: pages smaller than the account,
every follower once with its true group/tags, and the file fed back as an input."""

from __future__ import annotations

import csv
import math
import stat
from pathlib import Path
from typing import Any

import pytest

from batchmove.errors import UsageError
from batchmove.flows.export import ExportResult, export_followers, export_spec
from batchmove.ledger.checkpoint import checkpoint_dir
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.engine import run, spec_for
from tests.support.sandboxes import SandboxFactory

pytestmark = pytest.mark.usefixtures("sandbox_credentials")

USERS = 1_234
PAGE = 100  # 13 user/get pages for 1,234 followers
GROUPS = ["老客户", "沉睡用户", "-负号组"]
TAGS = ["旧分层A", "高价值客户", "华东"]
MOVE = "groups/members/batchupdate"
TAG = "tags/members/batchtagging"


async def populated(sandbox_factory: SandboxFactory, **settings: Any) -> RunningSandbox:
    """An account whose followers are spread over groups 0, 100-102 (and 2), and carry zero
    to two of the tags 100-102 in a pattern the test can recompute."""
    config = SandboxConfig(users=USERS, page_size=PAGE, groups=GROUPS, tags=TAGS, **settings)
    sb = await sandbox_factory(config)
    for i, openid in enumerate(sb.state.followers):
        group = (0, 100, 101, 102, 2)[i % 5]
        if group:
            sb.state.move_directly(openid, group)
        for tag in (100 + i % 3, 100 + i % 7) if i % 4 else ():
            if tag <= 102:
                sb.state.tag_directly(openid, tag)
    return sb


async def export(sb: RunningSandbox, out: Path, **kwargs: Any) -> ExportResult:
    spec = export_spec(out, api_base=sb.base_url, rate=0, **kwargs)
    return await export_followers(spec)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def group_name(sb: RunningSandbox, gid: int) -> str:
    name = sb.state.groups[gid].name
    return "'" + name if name.startswith("-") else name  # Excel-safe, as every report


async def test_groups_export_lists_every_follower_once_with_its_group(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await populated(sandbox_factory)
    result = await export(sb, tmp_path / "all.csv")
    assert result.exit_code == 0, result.message
    rows = read_rows(tmp_path / "all.csv")
    assert list(rows[0]) == ["openid", "current_groupid", "current_group_name", "to_group_name"]
    assert [r["openid"] for r in rows] == sb.state.followers  # once each, in listing order
    for r in rows:
        gid = sb.state.members[r["openid"]]
        assert r["current_groupid"] == str(gid)
        assert r["current_group_name"] == r["to_group_name"] == group_name(sb, gid)
    assert result.rows == USERS
    assert result.calls["user/get"] == math.ceil(USERS / PAGE) + 1  # + the empty last page
    assert result.calls["user/info/batchget"] == sum(math.ceil(min(PAGE, USERS - s) / 100)
                                                     for s in range(0, USERS, PAGE))
    assert stat.S_IMODE((tmp_path / "all.csv").stat().st_mode) == 0o600
    assert not checkpoint_dir(tmp_path / "all.csv").exists()


async def test_tags_export_and_tag_selection(tmp_path: Path,
                                            sandbox_factory: SandboxFactory) -> None:
    sb = await populated(sandbox_factory)
    result = await export(sb, tmp_path / "t.xlsx", backend="tags", tags=["旧分层A", "101"])
    assert result.exit_code == 0, result.message
    import openpyxl

    sheet = openpyxl.load_workbook(tmp_path / "t.xlsx").active
    assert sheet is not None
    header, *rows = [tuple("" if c is None else str(c) for c in r) for r in sheet.values]
    assert header == ("openid", "current_tag_names", "tagid_list")
    tagged = sb.state.tags.user_tags_snapshot()
    names = {t["id"]: t["name"] for t in sb.state.tags.listing()}
    wanted = {o for o, ids in tagged.items() if {100, 101} & set(ids)}
    assert sorted(r[0] for r in rows) == sorted(wanted)  # each once, though some carry both
    for openid, label, ids in rows:
        assert sorted(map(int, ids.split(";"))) == sorted(tagged[openid])
        assert label == ";".join(names[int(t)] for t in ids.split(";"))


async def test_group_selection_by_name_and_id(tmp_path: Path,
                                              sandbox_factory: SandboxFactory) -> None:
    sb = await populated(sandbox_factory)
    result = await export(sb, tmp_path / "g.csv", groups=["老客户", 101])
    assert result.exit_code == 0, result.message
    got = {r["openid"]: r["current_groupid"] for r in read_rows(tmp_path / "g.csv")}
    assert got == {o: str(g) for o, g in sb.state.members.items() if g in (100, 101)}


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
async def test_unchanged_file_moves_nobody(tmp_path: Path, sandbox_factory: SandboxFactory,
                                           suffix: str) -> None:
    sb = await populated(sandbox_factory)
    for backend, name in (("groups", "g" + suffix), ("tags", "t" + suffix)):
        assert (await export(sb, tmp_path / name, backend=backend)).exit_code == 0
        before = dict(sb.state.calls)
        result = await run(spec_for(sb, tmp_path / name, tmp_path / f"run-{backend}",
                                    backend=backend, snapshot=True, create_groups=False))
        assert result.exit_code == 0, result.message
        assert result.summary["counts"]["already"] == USERS
        assert sb.state.calls[MOVE] == before.get(MOVE, 0)
        assert sb.state.calls[TAG] == before.get(TAG, 0)


async def test_edited_rows_move_exactly_in_ceil_calls(tmp_path: Path,
                                                      sandbox_factory: SandboxFactory) -> None:
    sb = await populated(sandbox_factory)
    await export(sb, tmp_path / "g.csv")
    rows = read_rows(tmp_path / "g.csv")
    edited = [r for r in rows if r["current_groupid"] == "0"][:100]
    for r in edited:
        r["to_group_name"] = "沉睡用户"
    before, calls = dict(sb.state.members), sb.state.calls[MOVE]
    result = await run(spec_for(sb, write_rows(tmp_path / "edited.csv", rows),
                                tmp_path / "run", snapshot=True, create_groups=False))
    assert result.exit_code == 0, result.message
    assert sb.state.calls[MOVE] - calls == math.ceil(100 / 50)
    moved = {r["openid"] for r in edited}
    assert {o for o, g in sb.state.members.items() if g != before[o]} == moved
    assert all(sb.state.members[o] == 101 for o in moved)


async def test_edited_tag_sets_move_exactly(tmp_path: Path,
                                            sandbox_factory: SandboxFactory) -> None:
    sb = await populated(sandbox_factory)
    await export(sb, tmp_path / "t.csv", backend="tags")
    rows = read_rows(tmp_path / "t.csv")
    edited = [r for r in rows if not r["tagid_list"]][:100]
    for r in edited:
        r["tagid_list"] = "102"
    before, calls = sb.state.tags.user_tags_snapshot(), sb.state.calls[TAG]
    result = await run(spec_for(sb, write_rows(tmp_path / "edited.csv", rows), tmp_path / "r",
                                backend="tags", snapshot=True, create_groups=False))
    assert result.exit_code == 0, result.message
    assert sb.state.calls[TAG] - calls == math.ceil(100 / 50)
    after = sb.state.tags.user_tags_snapshot()
    changed = {o for o in set(before) | set(after) if before.get(o) != after.get(o)}
    assert changed == {r["openid"] for r in edited}


async def test_groups_to_tags_round_trip(tmp_path: Path,
                                         sandbox_factory: SandboxFactory) -> None:
    sb = await populated(sandbox_factory, max_tags=10)
    sb.state.tags.tag_log.clear()
    for openid in sb.state.followers:  # start from no tags at all
        for tag in sb.state.tags.tag_ids_of(openid):
            sb.state.tag_directly(openid, tag, untag=True)
    await export(sb, tmp_path / "g.csv")
    result = await run(spec_for(sb, tmp_path / "g.csv", tmp_path / "run", backend="tags",
                                snapshot=True, create_groups=True))
    assert result.exit_code == 0, result.message
    names = {t["id"]: t["name"] for t in sb.state.tags.listing()}
    tags = sb.state.tags.user_tags_snapshot()
    for openid, gid in sb.state.members.items():
        if gid == 0:
            assert not tags.get(openid), "未分组 followers get no tag"
        else:
            assert [names[t] for t in tags[openid]] == [sb.state.groups[gid].name]


@pytest.mark.parametrize(("kwargs", "first"), [
    ({"groups": ["不存在"]}, "unknown group '不存在'"),
    ({"backend": "tags", "tags": ["999"]}, "unknown tag '999'"),
    ({"groups": ["老客户"], "tags": ["华东"]}, "choose followers by --group or by --tag"),
])
async def test_bad_selection_is_one_clear_error(tmp_path: Path, sandbox_factory: SandboxFactory,
                                                kwargs: dict[str, Any], first: str) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10, groups=GROUPS, tags=TAGS))
    with pytest.raises(UsageError) as caught:
        await export(sb, tmp_path / "x.csv", **kwargs)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(first)
    assert not (tmp_path / "x.csv").exists()
    assert not checkpoint_dir(tmp_path / "x.csv").exists()


@pytest.mark.parametrize(("out", "first"), [
    ("missing/x.csv", "the output directory"),
    ("x.txt", "--out must end in .csv or .xlsx"),
])
def test_bad_output_is_refused_before_any_call(tmp_path: Path, out: str, first: str) -> None:
    with pytest.raises(UsageError) as caught:
        export_spec(tmp_path / out, api_base="http://127.0.0.1:9")
    assert first in caught.value.message


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown export setting 'batch_size'"):
        export_spec(tmp_path / "x.csv", batch_size=3)


async def test_daily_quota_stops_and_the_same_command_resumes(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await populated(sandbox_factory, daily_quota={"user/get": 5})
    out = tmp_path / "all.csv"
    first = await export(sb, out)
    assert first.exit_code == 3
    assert first.stop_reason == "daily_quota"
    assert "run the same command again to resume" in first.message
    assert not out.exists()
    assert 0 < first.rows < USERS
    assert first.estimate["days"] > 1
    sb.state.quotas.clear()
    sb.set_faults(daily_quota={"user/get": 500})
    stale = out.parent / f".{out.name}.k1ll3d.tmp"  # the half file of an export killed
    stale.write_text("o" * 1_000_000)                 # while writing it (follower ids)
    second = await export(sb, out)
    assert second.exit_code == 0, second.message
    assert [r["openid"] for r in read_rows(out)] == sb.state.followers
    assert files_in(tmp_path) == ["all.csv"]  # nothing else left
    pages = math.ceil(USERS / PAGE) + 1
    # no page is read twice: the quota-refused call and the first page of the estimate aside
    assert first.calls["user/get"] + second.calls["user/get"] <= pages + 2
