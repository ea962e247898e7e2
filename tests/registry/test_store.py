"""The registry file shared by every process: a second connection in one process must not
take away the first one's locks (four runs at once once left it "malformed")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from batchmove.registry.store import Registry

# SQLite's SHARED lock on a database file is a POSIX read lock on these bytes (os_unix.c)
SHARED_FIRST, SHARED_SIZE = 0x40000000 + 2, 510
PROBE = f"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, {SHARED_SIZE}, {SHARED_FIRST})
    print("free")
except OSError:
    print("held")
"""


def shared_lock(path: Path) -> str:
    """What another process finds on the file's SHARED range: "held" or "free"."""
    probe = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True,
                           text=True, check=True)
    return probe.stdout.strip()


def test_a_second_registry_keeps_the_first_ones_lock(tmp_path: Path) -> None:
    first = Registry(tmp_path)
    first.conn.execute("SELECT count(*) FROM tokens").fetchall()
    assert shared_lock(first.path) == "held"  # a WAL connection keeps its SHARED lock
    second = Registry(tmp_path)
    second.conn.execute("SELECT count(*) FROM tokens").fetchall()
    assert shared_lock(first.path) == "held"
    first.close()
    second.close()
    assert shared_lock(first.path) == "free"


def test_the_registry_file_is_created_mode_600(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "state")
    registry.conn.execute("SELECT 1").fetchall()
    assert (registry.path.stat().st_mode & 0o777, registry.directory.stat().st_mode & 0o777) \
        == (0o600, 0o700)
    registry.close()
