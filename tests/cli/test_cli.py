"""`batchmove run` as a user (or a scheduler) runs it: a real process, exit codes, first lines.

The crash-resume test SIGKILLs real `batchmove run` processes mid-flight against an in-process
sandbox, and checks after every resume that no row recorded as moved was ever sent again.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from contextlib import suppress
from pathlib import Path

import pytest

from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.cli import batchmove
from tests.support.engine import (
    account,
    assert_state_matches,
    group_ids_by_name,
    ledger_statuses,
    moved_in_ledger,
    moves_applied,
    report_rows,
    spread,
    write_moves,
)
from tests.support.sandboxes import ENV, REPO_ROOT, SandboxFactory


async def start(sb: RunningSandbox, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchmove", "run", *args, "--api-base", sb.base_url, "--yes",
        cwd=REPO_ROOT, env=ENV, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def until_calls(sb: RunningSandbox, proc: asyncio.subprocess.Process, n: int) -> None:
    """Wait until the run has made n move calls (and fail fast if it ended instead)."""
    for _ in range(1500):
        if sb.state.calls["groups/members/batchupdate"] >= n:
            return
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    _, err = await proc.communicate()
    raise AssertionError(f"run ended early ({proc.returncode}): {err.decode()}")


@pytest.mark.parametrize(("content", "first_line"), [
    (None, "batchmove: "),
    (b"", "batchmove: "),
    (b"\x00\x01\x02binary\xff\xfe" * 100, "batchmove: "),
    (b"name,age\nalice,3\n", "batchmove: "),
])
def test_refused_input_exits_2_with_one_line(tmp_path: Path, content: bytes | None,
                                             first_line: str) -> None:
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_bytes(content)
    done = batchmove("run", str(path), "--api-base", "http://127.0.0.1:9", "--yes",
                     "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.startswith(first_line)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "report.csv").exists()


def test_bad_option_value_exits_2(tmp_path: Path) -> None:
    path = write_moves(tmp_path / "in.csv", spread(3, ["A"]))
    done = batchmove("run", str(path), "--batch-size", "80", "--yes")
    assert done.returncode == 2
    assert "batch_size" in done.stderr or "batch-size" in done.stderr
    assert "Traceback" not in done.stderr


async def test_no_tty_without_yes_refuses_before_sending(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10))
    path = write_moves(tmp_path / "in.csv", spread(10, ["A"]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchmove", "run", str(path), "--api-base", sb.base_url,
        "--create-groups", "--out", str(tmp_path / "run"), cwd=REPO_ROOT, env=ENV,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().splitlines()[-1].startswith("batchmove: this run needs confirmation")
    assert sb.state.calls["groups/create"] == 0
    assert sb.state.calls["groups/members/batchupdate"] == 0


async def test_run_csv_with_defaults_and_report_command(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=120, groups=["A"]))
    path = write_moves(tmp_path / "in.csv", spread(120, ["A"]))
    proc = await start(sb, str(path), "--out", str(tmp_path / "run"), "--quiet")
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("finished (120 moved)")
    (tmp_path / "run" / "report.csv").unlink()
    done = await asyncio.to_thread(batchmove, "report", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert len(report_rows(tmp_path / "run")) == 120


async def test_sigterm_exits_143_and_resumes(tmp_path: Path,
                                             sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(SandboxConfig(users=3000, latency_ms=10))
    rows = spread(3000, ["A", "B"])
    path = write_moves(tmp_path / "in.csv", rows)
    args = (str(path), "--out", str(tmp_path / "run"), "--create-groups", "--concurrency", "1",
            "--rate", "0", "--no-snapshot")
    proc = await start(sb, *args)
    await until_calls(sb, proc, 5)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 143, err.decode()
    assert "run the same command again" in err.decode()
    proc = await start(sb, *args)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert_state_matches(sb, rows)


@pytest.mark.slow  # ~20 s each; tests/reliability/test_crash_resume.py kills 20 times more
@pytest.mark.parametrize("backend", ["groups", "tags"])
async def test_sigkill_many_times_loses_nothing_and_resends_nothing(
        tmp_path: Path, sandbox_factory: SandboxFactory, backend: str) -> None:
    """SIGKILL at random moments (group creation included); every resume is exact."""
    n = 8_000
    sb = await sandbox_factory(account(["A"], users=n, latency_ms=15, jitter_ms=10))
    rows = spread(n, ["A", "新一", "新二", "新三", "新四"])
    path = write_moves(tmp_path / "in.csv", rows)
    run_dir = tmp_path / "run"
    args = (str(path), "--out", str(run_dir), "--create-groups", "--concurrency", "2",
            "--rate", "0", "--backend", backend)
    rng = random.Random(7)
    kills = 0
    for _ in range(15):
        moved = moved_in_ledger(run_dir)
        mark = len(moves_applied(sb, backend))
        proc = await start(sb, *args)
        try:
            await asyncio.wait_for(proc.wait(), rng.uniform(0.4, 1.8))
        except TimeoutError:
            # The run may end between the timeout and the kill (seen in CI): then there is
            # nothing to kill and it counts as the run that finished, not as a kill.
            with suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            kills += proc.returncode == -signal.SIGKILL
        await asyncio.sleep(0.1)  # calls the sandbox already received are applied
        assert not moved & set(moves_applied(sb, backend)[mark:]), "a moved row was re-sent"
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
    else:
        final = await start(sb, *args)
        _, err = await final.communicate()
        assert final.returncode == 0, err.decode()
    assert kills >= 4
    assert_state_matches(sb, rows, backend)
    assert all(len(ids) == 1 for ids in group_ids_by_name(sb, backend).values())
    assert ledger_statuses(run_dir) == {"moved": n}
