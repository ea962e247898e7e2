"""Acceptance: real runs against the sandbox notify its robot, webhook and ping receivers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import batchmove
from batchmove.models import JobSpec, Notify
from batchmove.results import RunResult
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.engine import spec_for, spread, write_moves
from tests.support.notify import KEY, UUID, assert_no_secret, env_for, free_port
from tests.support.sandboxes import SandboxFactory

NOTIFY = Notify(wecom_webhook_env="BM_ROBOT", webhook_env="BM_HOOK", ping_env="BM_PING")
VOLATILE = ("run_id", "started_at", "finished_at", "duration_s", "users_moved_per_s",
            "notifications")


@pytest.fixture(autouse=True)
def _sandbox_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


async def run(spec: JobSpec) -> RunResult:
    """Through the public API, as every caller runs a job (SIGINT handled as the CLI does)."""
    return await batchmove.run_async(spec, handle_signals=True)


def use_robot(monkeypatch: pytest.MonkeyPatch, sb: RunningSandbox) -> None:
    for name, value in env_for(sb).items():
        monkeypatch.setenv(name, value)


async def sigint_after(sb: RunningSandbox, calls: int) -> None:
    for _ in range(1000):
        if sb.state.calls["groups/members/batchupdate"] >= calls:
            break
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize(("case", "code", "words", "resume"), [
    ("done", 0, "done", None),
    ("invalid rows", 1, "finished with row failures", None),  # --retry-failed retries none
    ("missing group", 1, "finished with row failures", "--retry-failed --create-groups"),
    ("daily quota", 3, "stopped by the daily quota, resumable", "batchmove run"),
    ("wrong secret", 3, "stopped: fatal configuration error", "batchmove run"),
    ("sigint", 130, "interrupted, resumable", "batchmove run"),
])
async def test_each_outcome_sends_its_message_and_pings(
        tmp_path: Path, sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
        case: str, code: int, words: str, resume: str | None) -> None:
    n = 600
    quota = {"groups/members/batchupdate": 3} if case == "daily quota" else {}
    sb = await sandbox_factory(SandboxConfig(users=n, groups=["A"], daily_quota=quota,
                                             latency_ms=20 if case == "sigint" else 0))
    use_robot(monkeypatch, sb)
    rows = spread(n, ["A"]) + ([("bad openid!", "A")] if case == "invalid rows" else [])
    if case == "wrong secret":
        monkeypatch.setenv("WECHAT_APPSECRET", "wrong-secret")
    if case == "missing group":
        rows = [(o, "A" if i % 2 else "Nope") for i, (o, _) in enumerate(rows)]
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    notify=NOTIFY, concurrency=1, create_groups=case != "missing group")
    if case == "sigint":
        stopper = asyncio.create_task(sigint_after(sb, 2))
    result = await run(spec)
    if case == "sigint":
        await stopper
    assert result.exit_code == code, result.message
    [message] = sb.robot.messages_of(KEY)
    assert f"{words}</font>" in message["content"]
    assert f"exit {code}" in message["content"]
    assert f"`{(tmp_path / 'run').absolute()}`" in message["content"]
    label = "**Retry:**" if code == 1 else "**Resume:**"
    if resume:
        assert resume in message["content"].split(label)[1]
        assert "--out" in message["content"].split(label)[1]
    else:
        assert label not in message["content"]
    assert [p["what"] for p in sb.robot.pings] == ["start", str(code)]
    assert sb.robot.hooks[0]["body"]["exit_code"] == code
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert {(r["channel"], r["event"], r["result"]) for r in summary["notifications"]} == {
        ("ping", "start", "sent"), ("ping", "end", "sent"), ("wecom", "end", "sent"),
        ("webhook", "end", "sent")}
    assert summary["notifications"] == result.summary["notifications"]


async def test_a_dead_robot_changes_no_exit_code_and_no_file(
        tmp_path: Path, sandbox_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [*spread(300, ["A"]), ("bad openid!", "A")]
    plain_sb = await sandbox_factory(SandboxConfig(users=300, groups=["A"]))
    plain = await run(spec_for(plain_sb, write_moves(tmp_path / "in.csv", rows),
                               tmp_path / "plain"))
    sb = await sandbox_factory(SandboxConfig(users=300, groups=["A"]))
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("BM_ROBOT", f"{dead}/cgi-bin/webhook/send?key={KEY}")
    monkeypatch.setenv("BM_HOOK", f"{dead}/hook")
    monkeypatch.setenv("BM_PING", f"{dead}/ping/{UUID}")
    began = time.monotonic()
    noisy = await run(spec_for(sb, tmp_path / "in.csv", tmp_path / "noisy", notify=NOTIFY))
    assert time.monotonic() - began < 10
    assert noisy.exit_code == plain.exit_code == 1
    for name in ("report.csv", "failed.csv"):
        assert (tmp_path / "noisy" / name).read_bytes() == (
            tmp_path / "plain" / name).read_bytes()
    noisy_summary, plain_summary = (_stable(tmp_path / d / "summary.json")
                                    for d in ("noisy", "plain"))
    assert noisy_summary == plain_summary
    records = json.loads((tmp_path / "noisy" / "summary.json").read_text())["notifications"]
    assert {r["result"] for r in records} == {"failed"}
    assert {r["reason"] for r in records} == {"connection failed"}
    assert_no_secret(tmp_path)


def _stable(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in summary.items() if k not in VOLATILE}


