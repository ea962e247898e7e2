"""`batchmove run A.toml B.toml ... --parallel N`: one process a job, the worst exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchmove.cli.parallel import child_args, worst
from batchmove.sandbox import SandboxConfig
from tests.support.cli import batchmove_async
from tests.support.engine import assert_state_matches, spread
from tests.support.notify import KEY, NOTIFY_TABLE, env_for, write_job
from tests.support.sandboxes import ENV, SandboxFactory


@pytest.mark.parametrize(("codes", "expected"), [
    ([], 0), ([0, 0], 0), ([0, 1], 1), ([1, 2], 2), ([2, 3, 1], 3), ([3, 143], 143),
    ([143, 130, 3], 130), ([0, 137], 137), ([137, 130], 130),
])
def test_worst_exit_code(codes: list[int], expected: int) -> None:
    assert worst(codes) == expected


def test_child_args_repeat_the_options() -> None:
    args = child_args({"rate": 5.0, "api_base": None, "create_groups": False,
                       "snapshot": True}, yes=True, restart=False, retry_failed=True)
    assert args == ["--quiet", "--rate", "5.0", "--no-create-groups", "--snapshot", "--yes",
                    "--retry-failed"]


async def test_out_with_several_jobs_is_refused(tmp_path: Path) -> None:
    code, _, err = await batchmove_async("run", "a.toml", "b.toml", "--out", str(tmp_path), env=ENV)
    assert code == 2
    assert err.startswith("batchmove: --out names one run directory")


@pytest.mark.slow
async def test_ten_accounts_one_fatal_the_other_nine_finish_exact(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    users = 300
    sandboxes = [await sandbox_factory(SandboxConfig(users=users, groups=["A"], seed=i))
                 for i in range(10)]
    robot = sandboxes[0]
    jobs = []
    for i, sb in enumerate(sandboxes):
        table = NOTIFY_TABLE + ('[credentials]\nsecret_env = "BAD_SECRET"\n' if i == 7 else "")
        jobs.append(str(write_job(tmp_path, sb, f"account{i}", table, users, seed=i)))
    env = {**ENV, **env_for(robot), "BAD_SECRET": "not-the-secret"}
    code, out, err = await batchmove_async("run", *jobs, "--parallel", "4", env=env)
    assert code == 3, out + err
    lines = out.splitlines()
    assert len(lines) == 10
    for i, sb in enumerate(sandboxes):
        [line] = [s for s in lines if s.startswith(f"{jobs[i]}: ")]
        if i == 7:
            assert line.startswith(f"{jobs[i]}: exit 3 (stopped early, resumable): ")
            assert "stopped: " not in line
            assert sb.state.calls["groups/members/batchupdate"] == 0
            continue
        assert line == f"{jobs[i]}: exit 0 (done): finished ({users} moved)"
        assert_state_matches(sb, spread(users, ["A"], seed=i))
        summary = json.loads((tmp_path / "runs" / f"account{i}" / "summary.json").read_text())
        assert summary["counts"]["moved"] == users
    assert len(robot.robot.messages_of(KEY)) == 10
    assert sum("fatal configuration" in m["content"] for m in robot.robot.messages) == 1
    assert sorted(p["what"] for p in robot.robot.pings) == sorted(["start"] * 10 + ["0"] * 9
                                                                  + ["3"])
    assert KEY not in out + err
