"""`batchmove run` with [notify] and `batchmove notify RUN_DIR`, as real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

import batchmove as batchmove_api
from batchmove.sandbox import SandboxConfig
from tests.support.cli import batchmove_async
from tests.support.notify import KEY, UUID, assert_no_secret, env_for, write_job
from tests.support.sandboxes import ENV, SandboxFactory


async def test_run_notifies_and_notify_resends(tmp_path: Path,
                                               sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=100, groups=["A"]))
    env = {**ENV, **env_for(sb)}
    job = write_job(tmp_path, sb)
    code, out, err = await batchmove_async("run", str(job), env=env)
    assert code == 0, err
    assert len(sb.robot.messages_of(KEY)) == 1
    assert [p["what"] for p in sb.robot.pings] == ["start", "0"]
    run_dir = tmp_path / "runs" / "nightly"
    code, again_out, again_err = await batchmove_async("notify", str(run_dir), env=env)
    assert code == 0, again_err
    assert again_out.splitlines() == [
        f"ping {sb.base_url}/***: sent", f"wecom {sb.base_url}/***: sent",
        f"webhook {sb.base_url}/***: sent"]
    assert len(sb.robot.messages_of(KEY)) == 2
    assert [p["what"] for p in sb.robot.pings] == ["start", "0", "0"]
    no_robot = {k: v for k, v in env.items() if k != "BM_ROBOT"}
    code, _, unset_err = await batchmove_async("notify", str(run_dir), env=no_robot)
    assert code == 1
    assert "wecom: skipped: environment variable BM_ROBOT is not set" in unset_err
    assert_no_secret(tmp_path, out, err, again_out, again_err, unset_err)


async def test_a_failed_notification_is_said_once_and_changes_nothing(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=100, groups=["A"]))
    sb.robot.fault = {"errcode": 93000}
    env = {**ENV, **env_for(sb)}
    code, out, err = await batchmove_async("run", str(write_job(tmp_path, sb)), "--quiet", env=env)
    assert code == 0, err
    assert out.startswith("finished (100 moved)")
    assert err.splitlines() == [f"notification not sent: wecom {sb.base_url}/***: "
                                "errcode 93000: error"]
    assert_no_secret(tmp_path, out, err)


async def test_notify_without_a_notify_table_exits_2(tmp_path: Path,
                                                     sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=100, groups=["A"]))
    job = write_job(tmp_path, sb, notify="")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WECHAT_APPID", sb.state.appid)
        env.setenv("WECHAT_APPSECRET", sb.state.secret)
        assert (await batchmove_api.run_async(job)).exit_code == 0
    code, _, err = await batchmove_async("notify", str(tmp_path / "runs" / "nightly"), env=ENV)
    assert code == 2
    assert err.startswith("batchmove: ")
    assert "has no [notify] table" in err
    assert UUID not in err
