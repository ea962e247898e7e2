"""Fixtures of the console's tests.

- `console_app`: the console's aiohttp application on a test server (in-process) with a real
  sandbox on 127.0.0.1 behind it, for the fast API tests.
- `browser` (module scope: one Chromium per module, the machine has 2 cores): Debian's
  /usr/bin/chromium driven by Playwright; the test is skipped, with the reason printed, where it
  is missing. `shot(page, name)` saves a screenshot under tests/.screenshots/.
- `ConsoleProcess`: `python -m batchmove serve --port 0 ...` as a real process, restartable.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest

from batchmove.console import ConsoleConfig, add_person, make_app, read_people
from batchmove.console.login import GATE
from batchmove.console.security import allowed_hosts
from batchmove.sandbox import DEFAULT_APPID, DEFAULT_SECRET, SandboxConfig, running_sandbox
from tests.support.console import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    KEY,
    ConsoleUnderTest,
    Prefixed,
    Stage,
    Team,
    write_defaults,
)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", DEFAULT_APPID)
    monkeypatch.setenv("WECHAT_APPSECRET", DEFAULT_SECRET)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


@pytest.fixture(scope="session")
def planner() -> Iterator[ProcessPoolExecutor]:
    """One planning process for every in-process console of the session (a process each
    would import pandas again and again on a 2-core machine). It starts at the first plan,
    inside a test that set the sandbox's credentials (`credentials`), and keeps them."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        yield pool


@pytest.fixture
async def console_app(tmp_path: Path, aiohttp_client: Any, credentials: None,
                      planner: ProcessPoolExecutor) -> AsyncIterator[ConsoleUnderTest]:
    config = SandboxConfig(users=300, groups=("销售",))
    async with running_sandbox(config, host="127.0.0.1", port=0) as sb:
        workspace = tmp_path / "runs"
        workspace.mkdir(mode=0o700)
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        console = ConsoleConfig(workspace=workspace, jobs=jobs,
                                defaults_path=write_defaults(tmp_path, sb.base_url),
                                max_upload=1 << 20)
        port: list[int] = []
        app = make_app(console, KEY, lambda: allowed_hosts("127.0.0.1", port[0]), planner)
        client = await aiohttp_client(app)
        port.append(client.server.port)
        app[GATE].port = client.server.port
        yield ConsoleUnderTest(Prefixed(client, app[GATE].prefix), workspace,
                               f"http://127.0.0.1:{port[0]}", sb.base_url, sb)


@pytest.fixture(scope="session")
def team_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A users file (four eyes) of two submitters, two approvers and an admin, and their
    secrets (scrypt costs ~70 ms a person: made once a session)."""
    path = tmp_path_factory.mktemp("people") / "users.toml"
    roles = {"alice": "submitter", "dave": "submitter", "bob": "approver",
             "erin": "approver", "carol": "admin"}
    secrets = {name: add_person(path, name, role, four_eyes=True)
               for name, role in roles.items()}
    return path, secrets


@pytest.fixture
async def team_app(tmp_path: Path, aiohttp_client: Any, credentials: None,
                   planner: ProcessPoolExecutor,
                   team_file: tuple[Path, dict[str, str]]) -> AsyncIterator[Team]:
    """The console in --users mode (four eyes) over a real sandbox, with signed-in clients."""
    config = SandboxConfig(users=300, groups=("销售",))
    people = read_people(team_file[0])
    async with running_sandbox(config, host="127.0.0.1", port=0) as sb:
        workspace = tmp_path / "runs"
        workspace.mkdir(mode=0o700)
        console = ConsoleConfig(workspace=workspace, defaults_path=write_defaults(
            tmp_path, sb.base_url), max_upload=1 << 20, four_eyes=True)
        port: list[int] = []
        app = make_app(console, None, lambda: allowed_hosts("127.0.0.1", port[0]), planner,
                       people=people)
        client = await aiohttp_client(app)
        port.append(client.server.port)
        app[GATE].port = client.server.port
        yield Team(Prefixed(client, app[GATE].prefix), workspace,
                   f"http://127.0.0.1:{port[0]}", sb.base_url, sb, team_file[1])


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    (tmp_path / "jobs").mkdir()
    s = Stage(tmp_path, ["--users", "2000", "--group", "销售", "--latency-ms", "20"])
    try:
        yield s
    finally:
        s.close()
        _stop_children(tmp_path / "runs")


def _stop_children(workspace: Path) -> None:
    """Runs the console started (in their own sessions) must not outlive the test."""
    if not workspace.is_dir():
        return
    for state in workspace.glob("*/console.json"):
        child = json.loads(state.read_text()).get("child") or {}
        pid = child.get("pid")
        if isinstance(pid, int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- the browser -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        reason = (f"browser tests skipped: no Chromium at {CHROMIUM} (apt-get install chromium; "
                  "or set BATCHMOVE_CHROMIUM)")
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="browser tests skipped: playwright missing")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it plainly at the end of the run when the browser tests could not run."""
    reasons = {str(r.longrepr[-1]) for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and "browser tests skipped" in str(r.longrepr)}
    for reason in sorted(reasons):
        terminalreporter.write_line(reason.removeprefix("Skipped: "), yellow=True, bold=True)
