"""Shared fixtures: real sandboxes on 127.0.0.1, in-process or as a `batchmove sandbox` process.

- `sandbox_factory`: `await sandbox_factory(SandboxConfig(...), clock=...)` -> a started
  `RunningSandbox`, stopped after the test (any number per test).
- `sandbox`: one started with `SandboxConfig(users=200)`.
- `sandbox_credentials`: WECHAT_APPID/WECHAT_APPSECRET of the sandbox account, no token.
- `fake_clock`: a `FakeClock` to pass as `clock=`; `.advance(seconds)` moves time on.
- `sandbox_process`: `sandbox_process("--users", "50", ...)` -> base_url of a separate
  `python -m batchmove sandbox --port 0 ...` process, terminated after the test.
- `state_dir` (autouse): a fresh `BATCHMOVE_STATE_DIR` (the account registry) for each test;
  `session_state_dir` (autouse) one for what module and session fixtures start.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from batchmove.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from tests.support.sandboxes import ENV, LISTENING, REPO_ROOT, FakeClock, SandboxFactory


@pytest.fixture(scope="session", autouse=True)
def session_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The account registry of what runs before a test's own `state_dir`: the processes that
    module fixtures start (a crash campaign's runs) used to reach the user's registry."""
    path = tmp_path_factory.mktemp("session-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BATCHMOVE_STATE_DIR", str(path))
        patch.setitem(ENV, "BATCHMOVE_STATE_DIR", str(path))
        yield path


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own account registry (`BATCHMOVE_STATE_DIR`), inherited by the
    processes it starts: no test touches the user's state or sees another test's runs."""
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("BATCHMOVE_STATE_DIR", str(path))
    monkeypatch.setitem(ENV, "BATCHMOVE_STATE_DIR", str(path))  # copied from os.environ early
    return path


@pytest.fixture
def sandbox_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox account's appid and secret in the environment, as a user would set them."""
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    async with AsyncExitStack() as stack:

        async def start(config: SandboxConfig | None = None, *,
                        clock: Callable[[], float] = time.monotonic) -> RunningSandbox:
            context = running_sandbox(config, host="127.0.0.1", port=0, clock=clock)
            return await stack.enter_async_context(context)

        yield start


@pytest.fixture
async def sandbox(sandbox_factory: SandboxFactory) -> RunningSandbox:
    return await sandbox_factory(SandboxConfig(users=200))


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


@pytest.fixture
def sandbox_process() -> Iterator[Callable[..., str]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, timeout: float = 15.0) -> str:
        command = [sys.executable, "-m", "batchmove", "sandbox", "--port", "0", *args]
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(proc)
        line = _read_line(proc, timeout)
        if not line.startswith(LISTENING):
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"sandbox did not start: {line!r} {err!r}")
        return line[len(LISTENING):].strip()

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
