"""Races between processes that use one account registry at once, found with four processes of
two threads each registering on a fresh registry (`/tmp/race2.py` of stop 30): opening a new
registry together answered "database is locked" (exit 2 for a run, 6 of 240 processes), and a
registration that ended while another compared against it gave "no such table: claims_N". And
in CI, one process in 120 of that stress test: "disk I/O error" (see the third test)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from batchmove.registry import Claims, Registry
from batchmove.registry import claims as claims_module
from tests.support.sandboxes import REPO_ROOT

REGISTER = r"""
import os, sys, threading
from pathlib import Path
from batchmove.registry import Claims, Registry
directory, errors = Path(sys.argv[1]), []
def register(i):
    try:
        registry = Registry(directory)
        Claims(registry, "acct").register(directory / f"run-{os.getpid()}-{i}", "job", [[f"{i}"]])
        with registry.transaction() as conn:
            conn.execute("INSERT INTO spent VALUES ('acct', 'day', ?, 1)", (f"{os.getpid()}-{i}",))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=register, args=(i,)) for i in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(errors))
"""


@pytest.mark.slow  # ~15 s: 30 rounds of four processes
def test_processes_that_open_a_new_registry_together_all_get_it(tmp_path: Path) -> None:
    for trial in range(30):
        directory = tmp_path / f"state{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", REGISTER, str(directory)],
                                  cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]
        said = [proc.communicate(timeout=60)[0].strip() for proc in procs]
        assert said == [""] * 4, said
        registry = Registry(directory)
        assert registry.conn.execute("SELECT count(*) FROM spent").fetchone() == (8,)
        registry.close()


def test_a_registration_that_ends_while_another_compares_against_it_overlaps_nobody(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry()
    claims = Claims(registry, "acct")
    assert claims.register(tmp_path / "other", "other", [["a", "b"]]) == []
    assert claims.register(tmp_path / "third", "third", [["c", "d"]]) == []
    fill = Claims._hashes

    def ended_meanwhile(self: Claims, registration: claims_module._Registration,
                        name: str) -> str:
        if registration.run.job == "other":  # listed as live, released before the compare
            Claims(Registry(), "acct").release(tmp_path / "other")
        return fill(self, registration, name)

    monkeypatch.setattr(Claims, "_hashes", ended_meanwhile)
    overlaps = claims.register(tmp_path / "mine", "mine", [["a", "b", "c"]])
    assert [(o.job, o.users) for o in overlaps] == [("third", 1)]  # "other" shared 2
    registry.close()


def test_a_thread_that_opens_the_registry_as_another_makes_it_keeps_the_others_locks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "disk I/O error" of CI: a thread that had seen no registry file opened and closed a
    descriptor of it to make it 600 once another thread's connection had it open, which drops
    every POSIX lock of the process on the file. Another process's last close then took the
    file for its own, checkpointed, and deleted the WAL and -shm under the live connection."""
    first = Registry(tmp_path)
    first.conn.execute("INSERT INTO spent VALUES ('acct', 'day', 'first', 1)")
    wal = tmp_path / "registry.sqlite-wal"
    assert wal.exists()
    exists = Path.exists
    monkeypatch.setattr(Path, "exists",
                        lambda path: path.name != "registry.sqlite" and exists(path))
    second = Registry(tmp_path)
    second.conn.execute("SELECT count(*) FROM spent").fetchone()
    monkeypatch.undo()
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
                    " c.execute('SELECT count(*) FROM spent').fetchone(); c.close()",
                    str(tmp_path / "registry.sqlite")], check=True, timeout=60)
    assert wal.exists()  # not taken from under us
    assert (tmp_path / "registry.sqlite-shm").exists()
    assert stat.S_IMODE(os.stat(tmp_path / "registry.sqlite").st_mode) == 0o600
    first.conn.execute("INSERT INTO spent VALUES ('acct', 'day', 'then', 1)")
    assert second.conn.execute("SELECT count(*) FROM spent").fetchone() == (2,)
    first.close()
    second.close()
