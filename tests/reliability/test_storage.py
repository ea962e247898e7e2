"""The ledger and the files fail closed: a full disk, a read-only file system, a damaged,
deleted or replaced ledger each end in one `batchmove: ` line naming the file and what to do
(exit 3 where the ledger is intact and the same command resumes, 2 where it is not), never a
traceback, and the same command then finishes exactly, sending no user the ledger recorded as
moved again.

Figures: a sandbox of 20,000 followers; runs of 20,000 users (one group), rate-limited where a
fault must land mid-run. Disk-full and read-only cases run the run directory on a tmpfs of
their own (`mount -t tmpfs -o size=...`, then `remount`): they need root and a kernel that
lets us mount, and are skipped otherwise, saying why.
- disk full while loading (9 MB tmpfs: the 8 MB reserve fits, the load does not): exit 3, the
  ledger empty and intact, 0 API calls; the tmpfs grown, the same command finishes.
- disk full while four move calls are in flight (their answers held 3 s by the sandbox, the WAL
  emptied and held by a reader so the next commit must grow it): exit 3 within seconds; the
  reserve takes every answer (400 users moved, 400 recorded, 0 sent but not recorded); the
  filler gone, the same command finishes and sends none of the recorded users again.
- disk full after 40 move calls with room left in the WAL: the reports cannot be written,
  exit 3, no report named that was not written; `batchmove report` writes them all (a
  complete summary.json) once there is room; the same command finishes.
- read-only file system under a stopped run: exit 3, 0 calls; writable again, it finishes.
- damaged ledgers of a stopped run: 4 KiB of garbage in the middle, statuses like `zubtb`
  written into row values, a row deleted: `run`, `report`, `rollback` and `verify` each exit 2
  with one line naming the ledger, 0 API calls.
- the ledger deleted mid-run: exit 3, what the run held saved as `ledger-saved.sqlite`, the
  same command puts it back and finishes, `rollback.csv` covers every moved user; replaced
  mid-run (another ledger copied over it): exit 3, then exit 2 asking which to keep.
- a run directory whose ledger is gone but whose reports are there: a new run archives them to
  `history/` before writing its own. About 90 s.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from batchmove.ledger.storage import SAVED_NAME
from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import (
    SECRET,
    Child,
    Running,
    ThreadedSandbox,
    assert_one_line_error,
    batchmove,
    ledger_check,
    moved_openids,
    spawn,
    write_csv,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SEED = 41
N = 20_000
FOLLOWERS = sandbox_openids(N, SEED)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    config = SandboxConfig(users=N, seed=SEED, secret=SECRET, groups=["A"])
    with ThreadedSandbox(config) as running:
        yield running


@pytest.fixture
def reset(sandbox: ThreadedSandbox) -> Iterator[ThreadedSandbox]:
    """Every follower back in group 0 and no quota used, before and after a case."""
    def clean() -> None:
        sandbox.call(lambda: [sandbox.state.move_directly(o, 0) for o in FOLLOWERS])
        sandbox.call(sandbox.state.quotas.clear)
        sandbox.set_faults(daily_quota={"groups/members/batchupdate": 100_000})
    clean()
    yield sandbox
    clean()


# --- a file system of our own ---------------------------------------------------------------
def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `where` (skipped, saying why, where it cannot be mounted)."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full and read-only cases mount a tmpfs: they need root")
    where.mkdir()
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full and "
                    "read-only cases need one")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    done = _mount("-o", f"remount,{options}", str(where))
    assert done.returncode == 0, done.stderr


def fill(where: Path) -> Path:
    """Fill the file system at `where` to its last byte; the filler file."""
    filler = where / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            with suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


@contextmanager
def watcher(run_dir: Path) -> Iterator[None]:
    """The ledger's WAL emptied (a checkpoint that truncates it), then held by a reader in
    the middle of a read transaction (as the console's may be): every commit from now on has
    to grow the WAL file."""
    db = sqlite3.connect(run_dir / "ledger.sqlite", timeout=10)
    try:
        deadline = time.monotonic() + 30
        while db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the WAL could not be emptied"
            time.sleep(0.01)
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM rows").fetchone()
        yield
    finally:
        db.close()


# --- runs -----------------------------------------------------------------------------------
def _input(tmp: Path) -> Path:
    return write_csv(tmp / "in.csv", ["openid", "group_name"], ((o, "A") for o in FOLLOWERS))


def _args(sb: ThreadedSandbox, tmp: Path, run_dir: Path, *extra: str) -> tuple[str, ...]:
    return ("run", str(tmp / "in.csv"), "--api-base", sb.base_url, "--out", str(run_dir),
            "--yes", *extra)


def _calls(sb: ThreadedSandbox) -> int:
    return sum(sb.state.calls.values())


def _changes(sb: ThreadedSandbox) -> int:
    """Calls that change the account: moves and creations."""
    return sum(n for endpoint, n in sb.state.calls.items()
               if endpoint.startswith(("groups/members", "groups/create", "tags/")))


def _stopped_run(sb: ThreadedSandbox, tmp: Path, run_dir: Path) -> Child:
    """A run stopped by the daily quota after 40 move calls: 2,000 moved, the rest pending."""
    sb.set_faults(daily_quota={"groups/members/batchupdate": 40})
    first = batchmove(*_args(sb, tmp, run_dir, "--rate", "0"))
    assert first.returncode == 3, first.output[-2000:]
    sb.call(sb.state.quotas.clear)
    sb.set_faults(daily_quota={"groups/members/batchupdate": 100_000})
    return first


def _finishes_exactly(sb: ThreadedSandbox, tmp: Path, run_dir: Path, recorded: set[str]
                      ) -> Child:
    """The same command again: exit 0, every follower in A, no recorded user sent again."""
    mark = len(sb.state.move_log)
    again = batchmove(*_args(sb, tmp, run_dir, "--rate", "0"))
    assert again.returncode == 0, again.output[-2000:]
    resent = recorded & set(sb.state.move_log[mark:])
    assert not resent, f"{len(resent)} users recorded as moved were sent again"
    group = next(g.id for g in list(sb.state.groups.values()) if g.name == "A")
    assert {sb.state.members[o] for o in FOLLOWERS} == {group}
    return again


def _stop_line(child: Child) -> str:
    """A stop after calls were sent: exit 3, no traceback, its verdict on stderr's last line
    naming the cause."""
    assert child.returncode == 3, child.output[-2000:]
    assert "Traceback" not in child.output
    lines = [line for line in child.stderr.splitlines() if line.strip()
             and not line.startswith(("moving:", "report: "))]
    return lines[-1]


def _under_way(sb: ThreadedSandbox, tmp: Path, run_dir: Path) -> Running:
    """A run sending at 100 calls a second, once 40 of its move calls were answered."""
    mark = sb.state.calls["groups/members/batchupdate"]
    running = spawn(*_args(sb, tmp, run_dir, "--rate", "100", "--concurrency", "4"))
    while sb.state.calls["groups/members/batchupdate"] < mark + 40:
        assert running.alive(), running.finish().output[-2000:]
        time.sleep(0.005)
    return running


# --- disk full ------------------------------------------------------------------------------
def test_disk_full_while_loading(reset: ThreadedSandbox, tmp_path: Path) -> None:
    sb = reset
    _input(tmp_path)
    with tmpfs(tmp_path / "disk", "9m") as disk:
        run_dir = disk / "run"
        calls, changes = _calls(sb), _changes(sb)
        child = batchmove(*_args(sb, tmp_path, run_dir, "--rate", "0"))
        line = assert_one_line_error(child, 3)
        assert f"the disk holding {run_dir / 'ledger.sqlite'} is full" in line
        # nothing changed on the account: at most what a run asks while its input loads
        # (the token, the groups; engine/early.py), never a move or a creation
        assert _changes(sb) == changes
        assert _calls(sb) - calls <= 2
        assert ledger_check(run_dir) == ("ok", {})
        remount(disk, "size=200m")
        _finishes_exactly(sb, tmp_path, run_dir, set())


def test_disk_full_while_moves_are_in_flight(reset: ThreadedSandbox, tmp_path: Path) -> None:
    """The disk fills up while the first four move calls are in flight (the sandbox holds
    their answers 3 s) and SQLite has to grow its WAL for the next commit (emptied, then held
    by a reader): the answers' commit finds no room, takes the reserve's, and the run stops
    with every answered user recorded."""
    sb = reset
    _input(tmp_path)
    sb.set_faults(latency_ms=3000, fault_endpoints=["groups/members/batchupdate"])
    try:
        with tmpfs(tmp_path / "disk", "64m") as disk:
            run_dir = disk / "run"
            mark, calls = len(sb.state.move_log), sb.state.calls["groups/members/batchupdate"]
            running = spawn(*_args(sb, tmp_path, run_dir, "--concurrency", "4"))
            while sb.state.calls["groups/members/batchupdate"] < calls + 4:  # arrived
                assert running.alive(), running.finish().output[-2000:]
                time.sleep(0.005)
            with watcher(run_dir):
                filler = fill(disk)
                child = running.finish(120)
            line = _stop_line(child)
            assert f"the disk holding {run_dir / 'ledger.sqlite'} is full" in line
            sent = set(sb.state.move_log[mark:])
            recorded = moved_openids(run_dir)
            assert ledger_check(run_dir)[0] == "ok"
            print(f"\nmoved {len(sent)} users, recorded {len(recorded)}, sent but not "
                  f"recorded {len(sent - recorded)}")
            assert len(sent) >= 4 * 50
            assert sent - recorded == set()  # the reserve had room for every answer
            sb.set_faults(latency_ms=0, fault_endpoints=[])
            filler.unlink()
            _finishes_exactly(sb, tmp_path, run_dir, recorded)
    finally:
        sb.set_faults(latency_ms=0, fault_endpoints=[])


def test_disk_full_while_moving(reset: ThreadedSandbox, tmp_path: Path) -> None:
    """The disk fills up after 40 move calls. Either a commit finds no room (the reserve's
    then takes the answers and perhaps the reports) or the ledger has room enough (SQLite
    reuses its WAL) and the reports do not: exit 3 either way, a report named only if it was
    written, and `batchmove report` writes them all once there is room."""
    sb = reset
    _input(tmp_path)
    with tmpfs(tmp_path / "disk", "64m") as disk:
        run_dir = disk / "run"
        mark = len(sb.state.move_log)
        running = _under_way(sb, tmp_path, run_dir)
        filler = fill(disk)
        child = running.finish(120)
        line = _stop_line(child)
        assert "is full" in line or "No space left on device" in line, line
        assert ("report: " in child.output) == (run_dir / "report.csv").exists()
        recorded = moved_openids(run_dir)
        assert ledger_check(run_dir)[0] == "ok"
        assert len(set(sb.state.move_log[mark:]) - recorded) <= 4 * 50
        filler.unlink()
        rewrite = batchmove("report", str(run_dir))
        assert rewrite.returncode == 0, rewrite.output
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        assert {"exit_code", "run_id", "job", "message", "stop_reason"} <= set(summary)
        _finishes_exactly(sb, tmp_path, run_dir, recorded)


def test_read_only_file_system_under_a_stopped_run(reset: ThreadedSandbox,
                                                  tmp_path: Path) -> None:
    sb = reset
    _input(tmp_path)
    with tmpfs(tmp_path / "disk", "64m") as disk:
        run_dir = disk / "run"
        _stopped_run(sb, tmp_path, run_dir)
        recorded = moved_openids(run_dir)
        remount(disk, "ro")
        calls = _calls(sb)
        child = batchmove(*_args(sb, tmp_path, run_dir, "--rate", "0"))
        line = assert_one_line_error(child, 3)
        assert str(run_dir) in line
        assert "read-only" in line
        assert _calls(sb) == calls
        remount(disk, "rw")
        _finishes_exactly(sb, tmp_path, run_dir, recorded)


# --- damaged ledgers ------------------------------------------------------------------------
def _garbage_in_the_middle(ledger: Path) -> None:
    size = ledger.stat().st_size
    with ledger.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(os.urandom(4096))


def _foreign_statuses(ledger: Path) -> None:
    """Bytes of 199 rows' status rewritten in place: the file stays well formed."""
    data = bytearray(ledger.read_bytes())
    at = 0
    for _ in range(199):
        at = data.index(b"pending", at)
        data[at:at + 7] = b"zubtbxx"
    ledger.write_bytes(bytes(data))


def _a_row_deleted(ledger: Path) -> None:
    db = sqlite3.connect(ledger)
    db.execute("DELETE FROM rows WHERE row = 5000")
    db.commit()
    db.close()


DAMAGE = {"garbage_4k": (_garbage_in_the_middle, ""),
          "foreign_statuses": (_foreign_statuses, "rows have a status batchmove never writes"),
          "row_deleted": (_a_row_deleted, "but the run loaded 20000")}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_ledger_is_refused_by_every_command(reset: ThreadedSandbox, tmp_path: Path,
                                                      damage: str) -> None:
    sb = reset
    _input(tmp_path)
    run_dir = tmp_path / "run"
    _stopped_run(sb, tmp_path, run_dir)
    ledger = run_dir / "ledger.sqlite"
    spoil, why = DAMAGE[damage]
    spoil(ledger)
    before = ledger.read_bytes()
    calls = _calls(sb)
    for args in (_args(sb, tmp_path, run_dir, "--rate", "0"), ("report", str(run_dir)),
                 ("rollback", str(run_dir)), ("verify", str(run_dir))):
        child = batchmove(*args)
        line = assert_one_line_error(child, 2)
        assert line.startswith(f"batchmove: {ledger} is "), (args[0], line)
        assert why in line, (args[0], line)
    assert _calls(sb) == calls
    assert ledger.read_bytes() == before  # refused, not repaired or rewritten


# --- the ledger deleted or replaced under the run -------------------------------------------


def test_the_ledger_deleted_mid_run(reset: ThreadedSandbox, tmp_path: Path) -> None:
    sb = reset
    _input(tmp_path)
    run_dir = tmp_path / "run"
    running = _under_way(sb, tmp_path, run_dir)
    (run_dir / "ledger.sqlite").unlink()
    child = running.finish(120)
    line = _stop_line(child)
    assert f"{run_dir / 'ledger.sqlite'} was deleted or replaced" in line
    assert f"saved in {run_dir / SAVED_NAME}" in line
    recorded = moved_openids(run_dir)  # nothing there: the copy is beside it
    assert not recorded
    shutil.copyfile(run_dir / SAVED_NAME, tmp_path / "saved-copy.sqlite")
    recorded = moved_openids_of(tmp_path / "saved-copy.sqlite")
    assert len(recorded) >= 40 * 50 - 4 * 50
    again = _finishes_exactly(sb, tmp_path, run_dir, recorded)
    assert "was put back from ledger-saved.sqlite" in again.output
    undo = batchmove("rollback", str(run_dir))
    assert undo.returncode == 0, undo.output
    with (run_dir / "rollback.csv").open(encoding="utf-8-sig", newline="") as f:
        assert {r["openid"] for r in csv.DictReader(f)} == set(FOLLOWERS)


def moved_openids_of(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {o for (o,) in db.execute("SELECT openid FROM rows WHERE status = 'moved'")}
    finally:
        db.close()


def test_the_ledger_replaced_mid_run(reset: ThreadedSandbox, tmp_path: Path) -> None:
    sb = reset
    _input(tmp_path)
    run_dir = tmp_path / "run"
    other = tmp_path / "other"
    other.mkdir()
    running = _under_way(sb, tmp_path, run_dir)
    shutil.copyfile(run_dir / "ledger.sqlite", other / "ledger.sqlite")  # an older copy
    os.replace(other / "ledger.sqlite", run_dir / "ledger.sqlite")
    line = _stop_line(running.finish(120))
    assert "was deleted or replaced" in line
    refused = batchmove(*_args(sb, tmp_path, run_dir, "--rate", "0"))
    line = assert_one_line_error(refused, 2)
    assert f"holds both ledger.sqlite and {SAVED_NAME}" in line
    (run_dir / "ledger.sqlite").unlink()  # the user keeps the copy the run saved
    recorded = moved_openids_of(run_dir / SAVED_NAME)
    _finishes_exactly(sb, tmp_path, run_dir, recorded)


def test_reports_without_their_ledger_are_archived_before_a_new_run(
        reset: ThreadedSandbox, tmp_path: Path) -> None:
    sb = reset
    _input(tmp_path)
    run_dir = tmp_path / "run"
    _stopped_run(sb, tmp_path, run_dir)
    first_report = (run_dir / "report.csv").read_bytes()
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        (run_dir / name).unlink(missing_ok=True)
    _finishes_exactly(sb, tmp_path, run_dir, set())
    [archived] = list((run_dir / "history").iterdir())
    assert (archived / "report.csv").read_bytes() == first_report
    assert {p.name for p in archived.iterdir()} >= {"report.csv", "failed.csv", "summary.json"}
    assert (run_dir / "report.csv").read_bytes() != first_report
