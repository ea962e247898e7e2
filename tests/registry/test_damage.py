"""A damaged account registry (malformed pages, not a database at all) is set aside and a new one
started, never renamed under another live process; stale registrations of every account are
swept. Seen on a development machine: a registry of 47 MB, two claims tables of killed runs
"malformed", every run on the machine one DROP TABLE away from refusing with a ledger's advice
("restore it from a copy")."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.errors import EXIT_STOPPED, StorageError
from batchmove.registry import Claims, Registry, store
from batchmove.registry.store import LOCK_NAME, REGISTRY_NAME, RegistryReplaced, state_dir
from batchmove.sandbox import SandboxConfig
from tests.support.cli import batchmove_async
from tests.support.engine import assert_state_matches, spread, write_moves
from tests.support.processes import holder
from tests.support.sandboxes import ENV, REPO_ROOT, SandboxFactory

GARBAGE = b"this is no database " * 300
HOLD = """
import time
from batchmove.registry import Registry
registry = Registry()
registry.conn.execute("SELECT count(*) FROM runs").fetchall()
print("ready", flush=True)
time.sleep(600)
"""


def corrupt(directory: Path, table: str) -> None:
    """Overwrite the root page of `table` (every connection of this process closed first)."""
    path = directory / REGISTRY_NAME
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                            (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xde\xad" * (size // 2))


def set_aside(directory: Path) -> list[Path]:
    return sorted(directory.glob("registry.damaged-*.sqlite"))


def copied_registration(registry: Registry, account: str, run: Path, users: int,
                        pid: int | None = None) -> int:
    """A run of `account` registered with its users copied (a claims table), then made the
    registration of process `pid` (a dead one: stale)."""
    Claims(registry, account).register(run, "job", [[f"o{i}" for i in range(users)]],
                                       state="running")
    with registry.transaction() as conn:
        conn.execute("UPDATE runs SET pid = ? WHERE run_dir = ?", (pid, str(run)))
    return int(registry.conn.execute("SELECT id FROM runs WHERE run_dir = ?",
                                     (str(run),)).fetchone()[0])


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


@pytest.fixture
def warnings_said() -> Iterator[list[str]]:
    """What the registry's logger says, whatever handlers an in-process JSON log left on it
    (`log_to_json` stops it propagating to pytest's capture)."""
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("batchmove.registry")
    logger.addHandler(handler)
    yield said
    logger.removeHandler(handler)


def test_a_file_that_is_no_database_is_set_aside_and_a_new_registry_started(
        warnings_said: list[str]) -> None:
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / REGISTRY_NAME).write_bytes(GARBAGE)
    registry = Registry()
    with registry.transaction() as conn:
        conn.execute("INSERT INTO spent VALUES ('acct', '2026-12-07', 'x', 1)")
    assert registry.conn.execute("SELECT calls FROM spent").fetchall() == [(1,)]
    [aside] = set_aside(directory)
    assert aside.read_bytes() == GARBAGE  # kept as it was, for whoever wants to look
    assert warnings_said == [(
        f"batchmove: warning: the account registry {directory / REGISTRY_NAME} was damaged "
        f"(file is not a database); set aside as {aside.name}, a new one is started (tokens "
        "and rates are fetched again)")]
    assert (directory / LOCK_NAME).stat().st_mode & 0o777 == 0o600
    registry.close()


@pytest.mark.parametrize("table", ["tokens", "buckets", "leases", "runs", "run_spent", "spent"])
def test_a_damaged_table_is_found_when_the_registry_opens_not_half_way_through_a_run(
        table: str) -> None:
    directory = state_dir()
    registry = Registry()
    with registry.transaction() as conn:
        conn.execute("INSERT INTO tokens VALUES ('acct', 'token', 'v', 1, 2, 3)")
    registry.close()
    corrupt(directory, table)
    registry = Registry()
    assert registry.conn.execute("SELECT count(*) FROM tokens").fetchone() == (0,)  # new
    assert len(set_aside(directory)) == 1
    registry.close()


@pytest.mark.parametrize("where", ["transaction", "read"])
def test_damage_met_in_use_stops_the_command_resumable_and_sets_the_file_aside(
        tmp_path: Path, where: str) -> None:
    directory = state_dir()
    registry = Registry()
    run_id = copied_registration(registry, "acct", tmp_path / "run", 5_000, os.getpid())
    registry.close()
    corrupt(directory, f"claims_{run_id}")
    registry = Registry()
    def use() -> None:
        if where == "transaction":
            with registry.transaction() as conn:
                conn.execute(f"SELECT count(*) FROM claims_{run_id}").fetchall()
        else:
            registry.conn.execute(f"SELECT * FROM claims_{run_id}").fetchall()

    with pytest.raises(RegistryReplaced) as caught:
        use()
    [aside] = set_aside(directory)
    assert caught.value.exit_code == EXIT_STOPPED
    assert caught.value.message == (
        f"the account registry {directory / REGISTRY_NAME} was damaged (database disk image is "
        f"malformed) and is set aside as {aside.name}: run the same command to resume")
    assert registry.conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)  # the new one
    registry.close()


def test_a_damaged_registry_another_process_has_open_is_left_where_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "SET_ASIDE_WAIT_S", 0.3)  # how long it waits for the other
    directory = state_dir()
    registry = Registry()
    run_id = copied_registration(registry, "acct", tmp_path / "run", 5_000, os.getpid())
    registry.close()
    with holder(HOLD, "ready") as other:
        corrupt(directory, f"claims_{run_id}")
        inode = (directory / REGISTRY_NAME).stat().st_ino
        registry = Registry()
        with pytest.raises(StorageError) as caught:
            registry.conn.execute(f"SELECT * FROM claims_{run_id}").fetchall()
        assert not isinstance(caught.value, RegistryReplaced)
        assert caught.value.exit_code == EXIT_STOPPED
        assert caught.value.message == (
            f"the account registry {directory / REGISTRY_NAME} is damaged (database disk image "
            "is malformed), and other batchmove processes of this machine have it open: once "
            "they have ended, run the same command again (it sets the file aside and starts a "
            "new registry)")
        assert (directory / REGISTRY_NAME).stat().st_ino == inode
        assert set_aside(directory) == []
        assert other.poll() is None  # still holding it
        other.kill()
        other.wait()
    with pytest.raises(RegistryReplaced):  # the same command once the other has ended
        registry.conn.execute(f"SELECT * FROM claims_{run_id}").fetchall()
    assert len(set_aside(directory)) == 1
    registry.close()


def test_the_processs_other_connections_follow_it_to_the_new_registry(tmp_path: Path) -> None:
    directory = state_dir()
    registry = Registry()
    run_id = copied_registration(registry, "acct", tmp_path / "run", 5_000, os.getpid())
    registry.close()
    corrupt(directory, f"claims_{run_id}")
    first, second = Registry(), Registry()  # another part of the run, another thread
    assert second.conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # the old one
    with pytest.raises(RegistryReplaced):
        first.conn.execute(f"SELECT * FROM claims_{run_id}").fetchall()
    assert second.conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)  # the new one
    first.close()
    second.close()


SWEEP = """
import sys
from pathlib import Path
from batchmove.registry import Claims, Registry
registry = Registry()
registry.conn  # open, as a run's registry is before it registers
print("ready", flush=True)
sys.stdin.readline()
print(Claims(registry, "acct").register(Path(sys.argv[1]), "job", [[sys.argv[1]]]), flush=True)
"""


def test_runs_that_meet_the_damage_together_set_it_aside_once_and_all_go_on(
        tmp_path: Path) -> None:
    """Each holds the registry open, so none may set it aside under the others: each lets go
    of its hold while it waits, one sets it aside, the others find it gone."""
    directory = state_dir()
    registry = Registry()
    stale = copied_registration(registry, "old-sandbox", tmp_path / "old", 5_000, dead_pid())
    registry.close()
    corrupt(directory, f"claims_{stale}")
    runs = [subprocess.Popen([sys.executable, "-c", SWEEP, str(tmp_path / f"run{i}")],
                             cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(4)]
    try:
        for run in runs:
            assert run.stdout is not None
            assert run.stdout.readline() == "ready\n"
        for run in runs:
            assert run.stdin is not None
            run.stdin.write("go\n")
            run.stdin.flush()
        ends = [run.communicate(timeout=60) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert [(run.returncode, out) for run, (out, _) in zip(runs, ends, strict=True)] == [
        (0, "[]\n")] * 4
    assert sum("set aside as" in err for _, err in ends) == 1
    assert len(set_aside(directory)) == 1
    with sqlite3.connect(directory / REGISTRY_NAME) as conn:  # all four in the new one
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (4,)
    conn.close()


def test_stale_registrations_of_every_account_are_swept_when_a_run_registers(
        tmp_path: Path) -> None:
    registry = Registry()
    gone = dead_pid()
    copied_registration(registry, "elsewhere", tmp_path / "live", 10, os.getpid())
    copied_registration(registry, "old-sandbox", tmp_path / "old", 2_000, gone)
    with registry.transaction() as conn:
        conn.execute("INSERT INTO run_spent VALUES ('old-sandbox', ?, 'x', 5)", (gone,))
        conn.execute("INSERT INTO run_spent VALUES ('elsewhere', ?, 'x', 7)", (os.getpid(),))
    assert Claims(registry, "acct").register(tmp_path / "mine", "mine", [["a", "b"]]) == []
    runs = dict(registry.conn.execute("SELECT run_dir, id FROM runs"))
    assert set(runs) == {str(tmp_path / "live"), str(tmp_path / "mine")}
    tables = {t for (t,) in registry.conn.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 'claims_%'")}
    assert tables == {f"claims_{i}" for i in runs.values()}  # the dead run's users are gone
    assert registry.conn.execute("SELECT account, calls FROM run_spent").fetchall() == [
        ("elsewhere", 7)]
    registry.close()


def test_a_dead_runs_damaged_claims_are_set_aside_and_the_registration_goes_on(
        tmp_path: Path, warnings_said: list[str]) -> None:
    directory = state_dir()
    registry = Registry()
    stale = copied_registration(registry, "old-sandbox", tmp_path / "old", 5_000, dead_pid())
    registry.close()
    corrupt(directory, f"claims_{stale}")
    registry = Registry()
    claims = Claims(registry, "acct")
    assert claims.register(tmp_path / "mine", "mine", [["a", "b"]]) == []
    assert len(set_aside(directory)) == 1
    [said] = warnings_said
    assert "was damaged (database disk image is malformed)" in said
    assert [r.job for r in claims.runs()] == ["mine"]  # registered in the new registry
    registry.close()


async def test_a_run_on_a_damaged_registry_says_so_sets_it_aside_and_moves_everyone(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / REGISTRY_NAME).write_bytes(GARBAGE)
    sb = await sandbox_factory(SandboxConfig(users=120, groups=["A", "B"]))
    rows = spread(120, ["A", "B"])
    path = write_moves(tmp_path / "in.csv", rows)
    code, out, err = await batchmove_async("run", str(path), "--api-base", sb.base_url,
                                           "--out", str(tmp_path / "run"), "--yes", env=ENV)
    [aside] = set_aside(directory)
    assert code == 0, err
    assert out.startswith("finished (120 moved)")
    assert (f"batchmove: warning: the account registry {directory / REGISTRY_NAME} was damaged "
            f"(file is not a database); set aside as {aside.name}, a new one is started (tokens "
            "and rates are fetched again)") in err.splitlines()
    assert_state_matches(sb, rows)
