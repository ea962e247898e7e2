"""Notifications against the sandbox's WeCom robot, ping and webhook receivers on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from batchmove.models import Notify
from batchmove.output.message import MAX_BYTES, cut_utf8, format_message, outcome_of
from batchmove.output.notify import Notifier, RobotLimiter, notify_finished, redact_url
from batchmove.sandbox import RunningSandbox
from tests.support.notify import KEY, SETTINGS, UUID, env_for, free_port
from tests.support.sandboxes import FakeClock


def summary(code: int = 0, stop: str = "done", **more: Any) -> dict[str, Any]:
    return {"job": "nightly", "run_id": "r1", "exit_code": code, "stop_reason": stop,
            "message": "finished", "started_at": "2026-12-01T03:00:00+00:00",
            "finished_at": "2026-12-01T03:01:00+00:00", "duration_s": 60.0,
            "users_moved_per_s": 12.5, "counts": {"moved": 750, "failed": 2}, **more}


@pytest.mark.parametrize(("code", "stop", "outcome"), [
    (0, "done", "finish"), (1, "done", "failure"), (2, "done", "failure"),
    (3, "daily_quota", "stop"), (3, "fatal", "failure"), (3, "failure_threshold", "failure"),
    (3, "done", "stop"), (130, "sigint", "stop"), (143, "sigterm", "stop"),
])
def test_outcomes(code: int, stop: str, outcome: str) -> None:
    assert outcome_of(code, stop) == outcome


@pytest.mark.parametrize("limit", range(MAX_BYTES - 8, MAX_BYTES + 1))
@pytest.mark.parametrize("char", ["a", "é", "好", "🙂"])
def test_cut_utf8_never_splits_a_character(limit: int, char: str) -> None:
    cut = cut_utf8("x" + char * 5000, limit)
    data = cut.encode("utf-8")
    assert len(data) <= limit
    assert data.decode("utf-8") == cut
    assert cut.endswith("…(cut)")


def test_a_5000_byte_summary_is_cut_to_4096_keeping_the_resume_command(tmp_path: Path) -> None:
    reasons = [(f"errcode 40003: 无效的用户 {i} " + "很长的原因" * 30, 100 - i) for i in range(12)]
    long = summary(3, "daily_quota", job="夜间批处理" * 120)
    full = format_message(long, tmp_path, reasons, "batchmove run job.toml", limit=100_000)
    assert len(full.encode("utf-8")) > 5000
    text = format_message(long, tmp_path, reasons, "batchmove run job.toml")
    data = text.encode("utf-8")
    assert len(data) <= MAX_BYTES
    assert data.decode("utf-8") == text
    assert "**Resume:** `batchmove run job.toml`" in text
    assert "stopped by the daily quota, resumable" in text
    assert "> 100 × errcode 40003" in text


def test_redact_url() -> None:
    assert redact_url(f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}") == (
        "https://qyapi.weixin.qq.com/***")
    assert redact_url(f"http://127.0.0.1:8080/ping/{UUID}") == "http://127.0.0.1:8080/***"
    assert redact_url("not a url") == "***"


async def test_finish_sends_message_webhook_and_ping(sandbox: RunningSandbox,
                                                     tmp_path: Path) -> None:
    notifier = Notifier(SETTINGS, env=env_for(sandbox))
    assert [r["result"] for r in await notifier.start()] == ["sent"]
    records = await notifier.finish(summary(1), tmp_path, reasons=[("errcode 40003", 2)],
                                    resume="batchmove run job.toml --retry-failed")
    assert {r["channel"]: r["result"] for r in records} == {
        "ping": "sent", "webhook": "sent", "wecom": "sent"}
    [message] = sandbox.robot.messages_of(KEY)
    assert "finished with row failures" in message["content"]
    assert "moved 750" in message["content"]
    assert "> 2 × errcode 40003" in message["content"]
    assert [p["what"] for p in sandbox.robot.pings] == ["start", "1"]
    assert sandbox.robot.hooks[0]["body"]["exit_code"] == 1
    assert KEY not in json.dumps(notifier.records)
    assert UUID not in json.dumps(notifier.records)


async def test_on_filters_messages_but_never_pings(sandbox: RunningSandbox,
                                                   tmp_path: Path) -> None:
    settings = Notify(wecom_webhook_env="BM_ROBOT", ping_env="BM_PING", on=("failure",))
    records = await Notifier(settings, env=env_for(sandbox)).finish(summary(0), tmp_path)
    assert {r["channel"]: r["result"] for r in records} == {"wecom": "skipped", "ping": "sent"}
    assert sandbox.robot.messages == []
    assert [p["what"] for p in sandbox.robot.pings] == ["0"]


async def test_unset_variable_is_skipped_not_an_error(tmp_path: Path) -> None:
    records = await Notifier(SETTINGS, env={}).finish(summary(0), tmp_path)
    assert {r["result"] for r in records} == {"skipped"}
    assert "environment variable BM_ROBOT is not set" in {r["reason"] for r in records}


async def test_25_runs_in_a_minute_keep_to_the_robots_limit(
        sandbox_factory: Any, fake_clock: FakeClock, tmp_path: Path) -> None:
    sb = await sandbox_factory(clock=fake_clock)
    limiter = RobotLimiter(clock=fake_clock)
    results = []
    for _ in range(25):
        notifier = Notifier(Notify(wecom_webhook_env="BM_ROBOT"), env=env_for(sb),
                            limiter=limiter)
        [record] = await notifier.finish(summary(0), tmp_path)
        results.append(record["result"])
        fake_clock.advance(2.0)
    assert results == ["sent"] * 20 + ["failed"] * 5
    assert len(sb.robot.messages_of(KEY)) == 20
    assert 45009 not in sb.robot.answers  # the client kept to the limit by itself


async def test_a_full_window_waits_when_a_slot_frees_within_the_budget(
        sandbox_factory: Any, fake_clock: FakeClock, tmp_path: Path) -> None:
    sb = await sandbox_factory(clock=fake_clock)
    limiter = RobotLimiter(clock=fake_clock)
    for _ in range(20):
        limiter.take(env_for(sb)["BM_ROBOT"])
    fake_clock.advance(57.0)
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        fake_clock.advance(seconds)

    notifier = Notifier(Notify(wecom_webhook_env="BM_ROBOT"), env=env_for(sb),
                        limiter=limiter, sleep=sleep)
    [record] = await notifier.finish(summary(0), tmp_path)
    assert record["result"] == "sent"
    assert waited == [pytest.approx(3.0)]


@pytest.mark.parametrize("fault", [{"errcode": -1}, {"status": 503}, {"errcode": 93000},
                                   "unreachable"])
async def test_a_failing_robot_costs_little_and_is_recorded(
        sandbox: RunningSandbox, tmp_path: Path, fault: Any) -> None:
    env = env_for(sandbox)
    if fault == "unreachable":
        env["BM_ROBOT"] = f"http://127.0.0.1:{free_port()}/cgi-bin/webhook/send?key={KEY}"
    else:
        sandbox.robot.fault = fault
    began = time.monotonic()
    records = await Notifier(SETTINGS, env=env).finish(summary(0), tmp_path)
    assert time.monotonic() - began < 10
    [wecom] = [r for r in records if r["channel"] == "wecom"]
    assert wecom["result"] == "failed"
    assert wecom["attempts"] == (1 if fault == {"errcode": 93000} else 3)
    assert KEY not in json.dumps(records)


async def test_a_hanging_robot_is_cut_off_by_the_budget(sandbox: RunningSandbox,
                                                        tmp_path: Path) -> None:
    sandbox.robot.fault = {"hang_s": 30}
    began = time.monotonic()
    notifier = Notifier(Notify(wecom_webhook_env="BM_ROBOT"), env=env_for(sandbox),
                        budget_s=1.0)
    [record] = await notifier.finish(summary(0), tmp_path)
    assert time.monotonic() - began < 2.0
    assert record["result"] == "failed"
    assert Notifier(Notify()).budget_s == 10.0


async def test_an_unreadable_run_directory_costs_only_the_reasons(sandbox: RunningSandbox,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite").write_bytes(b"not a database")
    notifier = Notifier(Notify(wecom_webhook_env="BM_ROBOT"), env=env_for(sandbox))
    [record] = await notify_finished(notifier, tmp_path, summary(3, "fatal"))
    assert record["result"] == "sent"
    assert not (tmp_path / "summary.json").exists()
    [message] = sandbox.robot.messages_of(KEY)
    assert "stopped: fatal configuration error" in message["content"]
