"""`--log-format json`: every stderr line one JSON object, no secret, as a real process."""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from batchmove.cli.logs import JsonEvents, JsonLog
from batchmove.results import Progress
from batchmove.sandbox import SandboxConfig
from tests.support.cli import batchmove_async
from tests.support.notify import KEY, UUID, env_for, write_job
from tests.support.sandboxes import ENV, FakeClock, SandboxFactory

FIELDS = {"ts", "level", "event", "job", "run_id"}


def parse_lines(err: str) -> list[dict[str, Any]]:
    """Every line must be one JSON object with the common fields."""
    records = [json.loads(line) for line in err.splitlines()]
    for record in records:
        assert record.keys() >= FIELDS, record
    return records


async def test_run_logs_json_lines_without_secrets(tmp_path: Path,
                                                   sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=400, groups=["A"]))
    env = {**ENV, **env_for(sb)}
    job = write_job(tmp_path, sb, users=400)
    code, out, err = await batchmove_async("run", str(job), "--log-format", "json", env=env)
    assert code == 0, err
    records = parse_lines(err)
    events = [r["event"] for r in records]
    assert events[0] == "info"
    assert events[-1] == "run_finished"
    assert "progress" in events
    run_id = records[-1]["run_id"]
    assert run_id
    assert {r["job"] for r in records} == {"nightly"}
    assert all(r["run_id"] == run_id for r in records if r["event"] != "info")
    final = records[-1]
    assert final["exit_code"] == 0
    assert final["counts"]["moved"] == 400
    assert {n["result"] for n in final["notifications"]} == {"sent"}
    done = [r for r in records if r["event"] == "progress"][-1]
    assert (done["moved"], done["total"], done["pending"]) == (400, 400, 0)
    assert final["report"].endswith("report.csv")
    assert out == ""  # `>> log.jsonl 2>&1` stays pure JSON
    for secret in (KEY, UUID, ENV["WECHAT_APPSECRET"]):
        assert secret not in out + err


async def test_refusals_are_one_json_error_line(tmp_path: Path) -> None:
    code, _, err = await batchmove_async("run", str(tmp_path / "missing.csv"), "--log-format",
                                   "json", env=ENV)
    assert code == 2
    [record] = parse_lines(err)
    assert record["event"] == "error"
    assert record["level"] == "error"
    assert record["exit_code"] == 2
    assert record["message"].startswith("no such file")


async def test_a_fatal_stop_logs_its_errcode(tmp_path: Path,
                                             sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=100, groups=["A"]))
    job = write_job(tmp_path, sb, notify="")
    env = {**ENV, "WECHAT_APPSECRET": "wrong-secret-value"}
    code, _, err = await batchmove_async("run", str(job), "--log-format", "json", env=env)
    assert code == 3
    final = parse_lines(err)[-1]
    assert (final["event"], final["level"], final["errcode"]) == ("run_finished", "error",
                                                                  40001)
    assert "wrong-secret-value" not in err


async def test_plan_logs_json(tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=100, groups=["A"]))
    job = write_job(tmp_path, sb, notify="")
    code, _, err = await batchmove_async("plan", str(job), "--log-format", "json", env=ENV)
    assert code == 0, err
    final = parse_lines(err)[-1]
    assert final["event"] == "plan_finished"
    assert final["can_run"] is True
    assert final["users_to_move"] == 100


@pytest.mark.slow
async def test_parallel_jobs_log_json_and_one_job_finished_each(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sandboxes = [await sandbox_factory(SandboxConfig(users=50, groups=["A"], seed=i))
                 for i in range(2)]
    jobs = [str(write_job(tmp_path, sb, f"acct{i}", "", 50, seed=i))
            for i, sb in enumerate(sandboxes)]
    code, out, err = await batchmove_async("run", *jobs, "--parallel", "2", "--log-format", "json",
                                     env=ENV)
    assert code == 0, err
    assert out == ""
    records = parse_lines(err)
    ends = {r["job"]: r for r in records if r["event"] == "job_finished"}
    assert set(ends) == set(jobs)
    assert {e["message"] for e in ends.values()} == {"finished (50 moved)"}
    assert {r["job"] for r in records if r["event"] == "run_finished"} == {"acct0", "acct1"}


def test_progress_every_10_s_and_at_the_end(fake_clock: FakeClock) -> None:
    stream = io.StringIO()
    events = JsonEvents(JsonLog("j", stream=stream, clock=lambda: 0.0), clock=fake_clock)
    for moved in range(0, 100, 10):
        events.progress(Progress("moving", moved, 0, 100, 1.0, 10.0, 9.0))
        fake_clock.advance(4.0)
    events.progress(Progress("moving", 100, 0, 100, 40.0, 10.0, 0.0))
    events.progress(Progress("moving", 100, 0, 100, 40.1, 10.0, 0.0))  # the same: not again
    logged = [json.loads(line)["moved"] for line in stream.getvalue().splitlines()]
    assert logged == [0, 30, 60, 90, 100]


async def test_export_logs_json_lines(tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=250, groups=["A"], page_size=100))
    out_file = tmp_path / "followers.csv"
    code, out, err = await batchmove_async("export", "--out", str(out_file), "--api-base",
                                     sb.base_url, "--rate", "0", "--log-format", "json",
                                     env=ENV)
    assert code == 0, err
    records = parse_lines(err)
    final = records[-1]
    assert final["event"] == "export_finished"
    assert (final["exit_code"], final["rows"], final["path"]) == (0, 250, str(out_file))
    assert out == ""
    assert ENV["WECHAT_APPSECRET"] not in err
    assert not any(token in err for token in sb.state.issued_tokens)


def test_serve_logs_json_lines_and_keeps_its_address_on_stdout(tmp_path: Path) -> None:
    from tests.support.console import KEY, start_process

    console = start_process(["serve", "--port", "0", "--workspace", str(tmp_path / "runs"),
                             "--key-env", "BATCHMOVE_TEST_KEY", "--log-format", "json"],
                            "console on ", tmp_path / "console.log")
    try:
        assert console.url.endswith(f"/?key={KEY}")  # stdout: the address with its key
        base = console.url.split("/?key=")[0]
        request = urllib.request.Request(f"{base}/api/runs",
                                         headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    finally:
        console.stop()
    records = parse_lines((tmp_path / "console.log").read_text(encoding="utf-8"))
    assert records[0]["event"] == "console_ready"
    assert records[0]["url"] == base + "/"
    path = urllib.parse.urlsplit(base).path  # the console's own address, /c/<id>
    assert any(r["event"] == "log" and f"GET {path}/api/runs 200" in r["message"]
               for r in records)
    assert KEY not in (tmp_path / "console.log").read_text(encoding="utf-8")
