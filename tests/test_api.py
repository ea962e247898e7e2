"""The public API as a scheduler or a notebook uses it: from any thread, typed, silent, and
polite with the caller's signal handlers. Runs against real sandboxes over loopback."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import pytest

import batchmove
from batchmove.sandbox import SandboxConfig
from tests.support.engine import assert_state_matches, spread, write_moves
from tests.support.sandboxes import REPO_ROOT, SandboxFactory

StartProcess = Callable[..., str]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox account's appid and secret, as a scheduler's environment would hold them."""
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


def test_all_is_exactly_what_is_exported() -> None:
    public = {n for n in dir(batchmove) if not n.startswith("_")}
    modules = {n for n in public if isinstance(getattr(batchmove, n), ModuleType)}
    exported = [n for n in batchmove.__all__ if not n.startswith("__")]
    assert sorted(public - modules) == sorted(exported)
    assert len(set(batchmove.__all__)) == len(batchmove.__all__)
    for name in batchmove.__all__:
        assert getattr(batchmove, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = batchmove.nope  # type: ignore[attr-defined]


def test_all_the_lazy_table_and_the_type_checking_imports_agree() -> None:
    """`__all__`, `_EXPORTS` and the TYPE_CHECKING imports list the same names, each from the
    module the lazy table says: a name added to one and not the others fails here."""
    tree = ast.parse(Path(batchmove.__file__).read_text(encoding="utf-8"))
    checked: dict[str, str] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Attribute)
                and node.test.attr == "TYPE_CHECKING"):
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom)
                assert stmt.module is not None
                checked |= {alias.name: stmt.module for alias in stmt.names}
    exported = {n for n in batchmove.__all__ if not n.startswith("__")}
    assert set(batchmove._EXPORTS) == exported
    assert checked == batchmove._EXPORTS


def test_importing_batchmove_loads_no_dependency() -> None:
    """`python3 -m batchmove.dev` must work on a bare Python: the package's import is free."""
    code = ("import sys, batchmove; heavy = {'pandas', 'aiohttp', 'click', 'tenacity'} & "
            "set(sys.modules); print(sorted(heavy))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("typed", [batchmove.RunResult, batchmove.Plan, batchmove.Progress,
                                   batchmove.VerifyResult, batchmove.RollbackFile,
                                   batchmove.ReportFiles])
def test_results_are_frozen_dataclasses(typed: type) -> None:
    assert dataclasses.is_dataclass(typed)
    assert typed.__dataclass_params__.frozen  # type: ignore[attr-defined]


async def test_run_from_a_worker_thread_without_a_loop(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    """Airflow's PythonOperator: a worker thread with no event loop calls `batchmove.run`."""
    sb = await sandbox_factory(SandboxConfig(users=240, groups=["A"]))
    rows = spread(240, ["A", "新分组"])
    job = write_moves(tmp_path / "in.csv", rows)
    seen: list[batchmove.Progress] = []
    result = await asyncio.to_thread(
        batchmove.run, job, api_base=sb.base_url, out=tmp_path / "run", rate=0,
        create_groups=True, on_progress=seen.append)
    assert isinstance(result, batchmove.RunResult)
    assert result.exit_code == 0
    assert result.ok
    assert result.stop_reason == "done"
    assert result.counts == {"moved": 240, "already": 0, "failed": 0, "invalid": 0,
                             "duplicate": 0, "unknown": 0, "pending": 0}
    assert result.calls["groups/members/batchupdate"] == 6
    assert result.run_dir == tmp_path / "run"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert result.summary == summary
    assert seen[-1].moved == 240
    assert seen[-1].pending == 0
    assert_state_matches(sb, rows)


def test_run_leaves_the_callers_signal_handlers(
        tmp_path: Path, sandbox_process: StartProcess, signal_handlers: list[Any]) -> None:
    base_url = sandbox_process("--users", "100", "--group", "A")
    job = write_moves(tmp_path / "in.csv", spread(100, ["A"]))
    result = batchmove.run(job, api_base=base_url, out=tmp_path / "run", rate=0)
    assert result.exit_code == 0
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == signal_handlers
    again = batchmove.run(job, api_base=base_url, out=tmp_path / "run", handle_signals=True)
    assert again.exit_code == 0  # resumed: nothing left to do
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == signal_handlers


async def test_plan_from_a_thread_whose_loop_is_running(
        tmp_path: Path, sandbox_process: StartProcess) -> None:
    """A notebook cell: the calling thread already runs a loop; `plan` still blocks and works."""
    base_url = sandbox_process("--users", "100", "--group", "A")
    rows = [*spread(100, ["A", "新分组"]), ("bad", "A")]
    plan = batchmove.plan(write_moves(tmp_path / "in.csv", rows), api_base=base_url,
                          out=tmp_path / "run", create_groups=True, rate=0)
    assert isinstance(plan, batchmove.Plan)
    assert plan.can_run
    assert plan.exit_code == 0
    assert plan.users_to_move == 100
    assert plan.rows == {"pending": 100, "invalid": 1}
    assert plan.invalid_by_reason == {"openid is shorter than 10 characters": 1}
    assert [c["name"] for c in plan.groups["create"]] == ["新分组"]
    assert plan.calls == {"groups/get": 1, "groups/create": 1, "user/info/batchget": 1,
                          "groups/members/batchupdate": 2, "total": 5}
    assert plan.plan_json == tmp_path / "run" / "plan.json"
    assert json.loads(plan.plan_json.read_text(encoding="utf-8"))["calls"] == plan.calls


@pytest.mark.parametrize(("overrides", "error", "first"), [
    ({"batchsize": 10}, batchmove.JobFileError, "override: unknown key 'batchsize'"),
    ({"rate": -1}, batchmove.UsageError, "rate must be >= 0"),
    ({"api_base": "ftp://x"}, batchmove.UsageError, 'api_base must be "sandbox"'),
])
def test_bad_overrides_raise_before_anything_is_sent(
        tmp_path: Path, overrides: dict[str, Any], error: type[Exception], first: str) -> None:
    job = write_moves(tmp_path / "in.csv", spread(3, ["A"]))
    with pytest.raises(error) as info:
        batchmove.run(job, out=tmp_path / "run", **overrides)
    assert str(info.value).startswith(first)
    assert isinstance(info.value, batchmove.BatchmoveError)
    assert info.value.exit_code == batchmove.EXIT_USAGE
    assert not (tmp_path / "run").exists()


def test_a_missing_job_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(batchmove.UsageError, match=r"^no such file: "):
        batchmove.plan(tmp_path / "nope.toml")


async def test_the_embedded_sandbox_rollback_and_reports(tmp_path: Path) -> None:
    """`api_base="sandbox"` needs no credentials; a duck-typed `events` gets the info lines."""
    rows = spread(60, ["A", "B"])
    job = write_moves(tmp_path / "in.csv", rows)

    class Lines:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def info(self, message: str) -> None:
            self.lines.append(message)

    lines = Lines()
    result = await batchmove.run_async(job, api_base="sandbox", out=tmp_path / "run",
                                       create_groups=True, rate=0, events=lines)
    assert result.exit_code == 0
    assert lines.lines[0].startswith("loaded 60 rows from ")
    undo = batchmove.rollback(tmp_path / "run")
    assert (undo.path, undo.users, undo.backend) == (tmp_path / "run" / "rollback.csv", 60,
                                                     "groups")
    assert undo.command == f"batchmove rollback {tmp_path / 'run'} --apply"
    (tmp_path / "run" / "report.csv").unlink()
    files = batchmove.write_reports(tmp_path / "run")
    assert files.report_csv.exists()
    assert [p.name for p in files.written] == ["report.csv", "report.xlsx", "failed.csv",
                                               "summary.json"]


@pytest.fixture
def signal_handlers() -> Iterator[list[Any]]:
    """Custom SIGINT/SIGTERM handlers in place for the test (the caller's own)."""
    def mine(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("no signal is sent in this test")

    assert threading.current_thread() is threading.main_thread()
    before = [signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)]
    yield [mine, mine]
    for sig, handler in zip((signal.SIGINT, signal.SIGTERM), before, strict=True):
        signal.signal(sig, handler)


# --- what watchers (the console) use ------------------------------------------------------------
def test_a_job_spec_from_a_mapping_is_checked_as_a_job_file(tmp_path: Path) -> None:
    source = tmp_path / "defaults.toml"
    (tmp_path / "in.csv").write_text("openid,group_name\n", encoding="utf-8")
    spec = batchmove.job_spec({"input": "in.csv", "rate": 5}, source=source)
    assert (spec.input, spec.rate) == (tmp_path / "in.csv", 5.0)
    settings = batchmove.job_spec({"rate": 7}, source=source, need_input=False)
    assert settings.rate == 7.0
    with pytest.raises(batchmove.JobFileError) as info:
        batchmove.job_spec({"rate": "fast"}, source=source, need_input=False)
    assert info.value.message.startswith(f"{source}: rate must be a number")
    with pytest.raises(batchmove.JobFileError, match="missing required key 'input'"):
        batchmove.job_spec({"rate": 7}, source=source)


async def test_a_plan_keeps_its_rows_and_a_watch_pages_them(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=30, groups=["A"]))
    job = write_moves(tmp_path / "in.csv", [*spread(30, ["A"]), ("bad id!", "A"), ("", "A")])
    plan = await batchmove.plan_async(job, api_base=sb.base_url, out=tmp_path / "run",
                                      rows_dir=tmp_path / "rows")
    assert plan.rows_dir == tmp_path / "rows"
    watch = batchmove.watch_run(tmp_path / "rows")
    try:
        assert watch.counts()["invalid"] == 2
        assert [(r.row, r.status) for r in watch.rows(("invalid",), 0, 10)] == [
            (32, "invalid"), (33, "invalid")]
        assert set(watch.targets()) == {"A"}
    finally:
        watch.close()
    again = await batchmove.plan_async(job, api_base=sb.base_url, out=tmp_path / "run",
                                       rows_dir=tmp_path / "rows")  # replaces the rows
    assert again.rows == plan.rows


async def test_view_run_of_a_finished_run_and_of_none(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    empty = batchmove.view_run(tmp_path / "nothing")
    assert (empty.counts, empty.running, empty.summary) == (None, False, {})
    sb = await sandbox_factory(SandboxConfig(users=20, groups=["A"]))
    job = write_moves(tmp_path / "in.csv", spread(20, ["A"]))
    result = await batchmove.run_async(job, api_base=sb.base_url, out=tmp_path / "run", rate=0)
    view = batchmove.view_run(tmp_path / "run")
    assert view.counts == result.counts
    assert (view.running, view.exit_code, view.input_name, view.job) == (False, 0, "in.csv", "in")
    assert view.api_base == sb.base_url
    assert view.finished_at == result.summary["finished_at"]
    assert batchmove.view_run(tmp_path / "run", recount=True).counts == result.counts
