"""`plan` says how many users will really move, and its calls are the run's: from an exported
file's current groups or tags, or read now with `count_moves`; otherwise "up to"."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batchmove.flows.export import export_followers, export_spec
from batchmove.flows.plan import plan_job
from batchmove.results import Plan
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.engine import QuietEvents, run, spec_for, write_moves
from tests.support.sandboxes import SandboxFactory

pytestmark = pytest.mark.usefixtures("sandbox_credentials")

USERS = 600
MOVE = "groups/members/batchupdate"
TAG = "tags/members/batchtagging"
UNTAG = "tags/members/batchuntagging"
READ = "user/info/batchget"
#: calls a run makes beside its plan's: its token, and nothing else without confirmation
TOKEN = "stable_token"


async def account(sandbox_factory: SandboxFactory) -> RunningSandbox:
    """Followers spread over groups 0, 100 and 101, and tags 100 (every third) and 101."""
    sb = await sandbox_factory(SandboxConfig(users=USERS, groups=["A", "B"], tags=["T", "U"]))
    for i, openid in enumerate(sb.state.followers):
        if i % 3:
            sb.state.move_directly(openid, 99 + i % 3)
        if i % 3 == 0:
            sb.state.tag_directly(openid, 100)
        if i % 4 == 0:
            sb.state.tag_directly(openid, 101)
    return sb


async def exported(sb: RunningSandbox, path: Path, backend: str, where: tuple[str, str],
                   change: tuple[str, str]) -> Path:
    """The account exported, then 100 rows whose `where` column holds its value edited:
    their `change` column set to its value."""
    result = await export_followers(export_spec(path, api_base=sb.base_url, rate=0,
                                                backend=backend))
    assert result.exit_code == 0, result.message
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in [r for r in rows if r[where[0]] == where[1]][:100]:
        row[change[0]] = change[1]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


async def plan_then_run(sb: RunningSandbox, path: Path, tmp_path: Path, *,
                        count_moves: bool = False, **settings: Any) -> tuple[Plan, Counter[str]]:
    """The plan, and the calls the run then made (the sandbox's count, per endpoint)."""
    spec = spec_for(sb, path, tmp_path / "run", snapshot=True, create_groups=False, **settings)
    plan = await plan_job(spec, QuietEvents(), count_moves=count_moves)
    before = Counter(sb.state.calls)
    result = await run(spec)
    assert result.exit_code == 0, result.message
    return plan, Counter(sb.state.calls) - before


def assert_run_made_the_planned_calls(plan: Plan, made: Counter[str]) -> None:
    planned = {e: n for e, n in plan.calls.items() if e != "total"}
    assert dict(made - Counter({TOKEN: 1})) == planned


async def test_an_edited_groups_export_plans_exactly_its_edits(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    """The issue's case: 3,000 exported, 100 edited: 100 to move, 2 move calls, not 60."""
    sb = await account(sandbox_factory)
    path = await exported(sb, tmp_path / "g.csv", "groups", ("current_groupid", "100"),
                          ("to_group_name", "B"))
    plan, made = await plan_then_run(sb, path, tmp_path)
    assert (plan.users_to_move, plan.already, plan.already_source) == (100, USERS - 100, "input")
    assert plan.moves_exact
    assert plan.calls[MOVE] == 2
    assert plan.calls[READ] == math.ceil(USERS / 100)  # the snapshot still reads everyone
    assert_run_made_the_planned_calls(plan, made)


async def test_an_edited_tags_export_plans_its_tag_and_untag_calls(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await account(sandbox_factory)
    path = await exported(sb, tmp_path / "t.csv", "tags", ("tagid_list", "100"),
                          ("tagid_list", "101"))
    plan, made = await plan_then_run(sb, path, tmp_path, backend="tags")
    assert (plan.users_to_move, plan.already_source) == (100, "input")
    assert (plan.calls[TAG], plan.calls[UNTAG]) == (2, 2)  # 100 tagged 101, 100 untagged 100
    assert not any("not counted" in w for w in plan.warnings)
    assert_run_made_the_planned_calls(plan, made)


@pytest.mark.parametrize("backend", ["groups", "tags"])
async def test_a_plain_input_is_up_to_unless_counted(
        tmp_path: Path, sandbox_factory: SandboxFactory, backend: str) -> None:
    sb = await account(sandbox_factory)
    target = "A" if backend == "groups" else "T"  # either: a third of the users have it
    rows = [(o, target) for o in sb.state.followers]
    path = write_moves(tmp_path / "in.csv", rows)
    spec = spec_for(sb, path, tmp_path / "up-to", snapshot=True, backend=backend)
    bound = await plan_job(spec, QuietEvents())
    assert (bound.users_to_move, bound.moves_exact, bound.already_source) == (USERS, False, None)
    assert bound.count_calls == {}
    reads = sb.state.calls[READ]
    plan, made = await plan_then_run(sb, path, tmp_path, count_moves=True, backend=backend)
    assert plan.count_calls == {READ: USERS // 100}
    assert sb.state.calls[READ] - reads == 2 * (USERS // 100)  # the count's and the run's
    assert (plan.already, plan.users_to_move) == (USERS // 3, USERS - USERS // 3)
    assert plan.moves_exact
    assert_run_made_the_planned_calls(plan, made)


async def test_without_the_snapshot_every_user_is_sent_and_nothing_is_counted(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await account(sandbox_factory)
    path = write_moves(tmp_path / "in.csv", [(o, "A") for o in sb.state.followers])
    spec = spec_for(sb, path, tmp_path / "run", snapshot=False)
    reads = sb.state.calls[READ]
    plan = await plan_job(spec, QuietEvents(), count_moves=True)
    assert (plan.users_to_move, plan.moves_exact, plan.calls[MOVE]) == (USERS, True, 12)
    assert sb.state.calls[READ] == reads
    assert plan.warnings == ["--count-moves: without the snapshot every user is sent; "
                             "nothing to count"]
