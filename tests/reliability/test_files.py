"""Files: what a run writes is its owner's alone, and a run directory it cannot use stops the
run with one line before any API call.

Figures: every file of a finished run, a `plan`, a `rollback`, a `report` rewrite and a
second run that archives the first into history/ is checked under umask 000 (so the modes
come from batchmove, not from the umask): files 600, run directory and history/<run id>
700 (the WAL, lock and report temp files of a killed run are checked by the crash suite).
Unusable run directories, as root (which ignores permission bits): a path under a regular
file, a path under a /proc file, a new directory in /sys (sysfs refuses mkdir even to root),
an existing /sys directory (no file can be created in it), a ledger locked by a test-held
lock and by a stopped (SIGSTOP) `batchmove run`, and a ledger.sqlite that is not SQLite:
exit 2, one `batchmove: ` line, 0 API calls. Regression tests for two fixed bugs: history/
took the umask's mode, and reports that could not be written after the moves exited 2
("nothing was sent"; now 3). About 20 s.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.ledger.store import Ledger
from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import (
    SECRET,
    LeakAudit,
    ThreadedSandbox,
    assert_one_line_error,
    batchmove,
    spawn,
    write_csv,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 6
FOLLOWERS = sandbox_openids(600, SEED)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    config = SandboxConfig(users=len(FOLLOWERS), seed=SEED, secret=SECRET, groups=["A"])
    with ThreadedSandbox(config) as running:
        yield running


def _input(tmp: Path, n: int = 300, group: str = "A", name: str = "in.csv") -> Path:
    return write_csv(tmp / name, ["openid", "group_name"],
                     ((o, group) for o in FOLLOWERS[:n]))


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def written(sandbox: ThreadedSandbox, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, dict[str, int]]:
    """Modes of everything a run, plan, rollback, report and an archiving second run wrote."""
    tmp = tmp_path_factory.mktemp("modes")
    run_dir = tmp / "deep" / "run"
    base = ("--api-base", sandbox.base_url, "--out", str(run_dir))
    audit = LeakAudit(roots=[tmp / "deep"])
    first = batchmove("run", str(_input(tmp)), *base, "--yes", "--create-groups", umask=0)
    assert first.returncode == 0, first.stderr
    plan = batchmove("plan", str(_input(tmp, 200, "B", "next.csv")), "--api-base",
                     sandbox.base_url, "--out", str(tmp / "deep" / "plan"), umask=0)
    assert plan.returncode == 0, plan.stderr
    rollback = batchmove("rollback", str(run_dir), umask=0)
    assert rollback.returncode == 0, rollback.stderr
    rewrite = batchmove("report", str(run_dir), umask=0)
    assert rewrite.returncode == 0, rewrite.stderr
    second = batchmove("run", str(tmp / "next.csv"), *base, "--yes", "--create-groups",
                       umask=0)  # a new input after a finished run: the first goes to history/
    assert second.returncode == 0, second.stderr
    for label, child in (("run", first), ("plan", plan), ("rollback", rollback),
                         ("report", rewrite), ("second run", second)):
        audit.add_child(label, child)
    audit.check(sandbox.state)
    files = {name for name in _modes(run_dir) if (run_dir / name).is_file()}
    return {"run": _modes(run_dir), "plan": _modes(tmp / "deep" / "plan"),
            "files": dict.fromkeys(files, 0)}


def test_everything_a_run_writes_is_owner_only(written: dict[str, dict[str, int]]) -> None:
    modes = written["run"]
    (history,) = {name.split("/")[1] for name in modes if name.startswith("history/")}
    expected_files = {"ledger.sqlite", "report.csv", "report.xlsx", "failed.csv",
                      "summary.json", ".lock"}
    assert expected_files <= set(modes)
    archived = ("ledger.sqlite", "report.csv", "rollback.csv")  # the first run's undo too
    assert {f"history/{history}/{f}" for f in archived} <= set(modes)
    files = {name: modes[name] for name in written["files"]}
    assert files == dict.fromkeys(files, 0o600), files
    assert modes["."] == 0o700
    assert modes[f"history/{history}"] == 0o700
    assert written["plan"] == {".": 0o700, "plan.json": 0o600}


def test_history_directory_is_owner_only(written: dict[str, dict[str, int]]) -> None:
    assert written["run"]["history"] == 0o700


def _sysfs_dir_without_files() -> Path:
    """An existing directory in which even root cannot create a file (sysfs)."""
    path = Path("/sys/kernel")
    probe = path / "batchmove-probe"
    try:
        probe.touch()
    except OSError:
        return path
    probe.unlink()
    pytest.skip("/sys is writable here")


UNUSABLE = {
    "under_a_regular_file": lambda tmp: tmp / "a-file" / "run",
    "under_a_proc_file": lambda tmp: Path("/proc/version/run"),
    "new_directory_in_sysfs": lambda tmp: Path("/sys/batchmove-run"),
    "existing_sysfs_directory": lambda tmp: _sysfs_dir_without_files(),
}


@pytest.mark.parametrize("where", sorted(UNUSABLE))
def test_unusable_run_directory_stops_before_any_call(sandbox: ThreadedSandbox, tmp_path: Path,
                                                      where: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    _refused_before_any_call(sandbox, tmp_path, UNUSABLE[where](tmp_path),
                             "cannot use run directory")


def test_ledger_locked_by_another_holder_stops_before_any_call(sandbox: ThreadedSandbox,
                                                                tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    calls = sum(sandbox.state.calls.values())
    with Ledger(run_dir).open():
        child = batchmove("run", str(_input(tmp_path)), "--api-base", sandbox.base_url,
                          "--out", str(run_dir), "--yes", "--create-groups")
    line = assert_one_line_error(child, 2)
    assert "another batchmove process is running this job" in line
    assert sum(sandbox.state.calls.values()) == calls


def test_ledger_locked_by_a_running_batchmove_stops_the_second(sandbox: ThreadedSandbox,
                                                                tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ("run", str(_input(tmp_path, 600, "C")), "--api-base", sandbox.base_url, "--out",
            str(run_dir), "--yes", "--create-groups", "--rate", "5", "--concurrency", "1")
    first = spawn(*args)
    deadline = time.monotonic() + 60
    while not (run_dir / "ledger.sqlite").exists() or \
            sandbox.state.calls["groups/members/batchupdate"] == 0:
        assert first.alive()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGSTOP)  # holds the lock, sends nothing meanwhile
    try:
        calls = _settled_calls(sandbox)  # a call already on the wire still lands
        second = batchmove(*args)
        assert sum(sandbox.state.calls.values()) == calls
    except BaseException:
        first.kill()  # never leave it running into the next test's call counts
        raise
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = assert_one_line_error(second, 2)
    assert "another batchmove process is running this job" in line
    finished = first.finish(120)
    assert finished.returncode == 0, finished.stderr


def _settled_calls(sandbox: ThreadedSandbox, quiet: float = 0.5) -> int:
    """The sandbox's call count once it has not moved for `quiet` seconds."""
    count, since = sum(sandbox.state.calls.values()), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.02)
        now = sum(sandbox.state.calls.values())
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_a_ledger_that_is_not_sqlite_is_one_clear_line(sandbox: ThreadedSandbox,
                                                       tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / "ledger.sqlite").write_bytes(b"this is not a database\x00" * 400)
    _refused_before_any_call(sandbox, tmp_path, run_dir, "not a batchmove ledger")


def _refused_before_any_call(sandbox: ThreadedSandbox, tmp_path: Path, out: Path,
                             why: str) -> None:
    """`batchmove run --out OUT` exits 2 with one line saying `why`, and sends nothing."""
    calls = sum(sandbox.state.calls.values())
    child = batchmove("run", str(_input(tmp_path)), "--api-base", sandbox.base_url, "--out",
                      str(out), "--yes", "--create-groups")
    line = assert_one_line_error(child, 2)
    assert why in line
    assert sum(sandbox.state.calls.values()) == calls


def test_report_failure_after_sending_is_not_exit_2(sandbox: ThreadedSandbox,
                                                    tmp_path: Path) -> None:
    """report.csv cannot be written (a directory took its name while the run sent: made
    before the run, it would be archived to history/ as an earlier run's report)."""
    run_dir = tmp_path / "run"
    moves = sandbox.state.calls["groups/members/batchupdate"]
    running = spawn("run", str(_input(tmp_path, 300, "D")), "--api-base", sandbox.base_url,
                    "--out", str(run_dir), "--yes", "--create-groups", "--rate", "10")
    while sandbox.state.calls["groups/members/batchupdate"] == moves:
        assert running.alive()
        time.sleep(0.01)
    (run_dir / "report.csv").mkdir()
    child = running.finish(120)
    sent = sandbox.state.calls["groups/members/batchupdate"] - moves
    assert "Traceback" not in child.output
    assert sent > 0
    assert child.returncode == 3, child.output[-2000:]
    assert "cannot write the reports" in child.stderr
    assert "report: " not in child.output  # nothing claims a file it did not write
