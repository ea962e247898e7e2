"""`batchmove` as a process, the way a user or a scheduler runs it: blocking (`batchmove`) or
from a test's event loop (`batchmove_async`), stdin closed, output captured."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.support.sandboxes import ENV, REPO_ROOT


def batchmove(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchmove", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


async def batchmove_async(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchmove", *args, cwd=REPO_ROOT, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
