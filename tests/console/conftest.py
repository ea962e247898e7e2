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
import select
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest

from batchmove.console import ConsoleConfig, make_app
from batchmove.console.security import allowed_hosts
from batchmove.sandbox import DEFAULT_APPID, DEFAULT_SECRET, SandboxConfig, running_sandbox
from tests.conftest import REPO_ROOT

CHROMIUM = Path(os.environ.get("BATCHMOVE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  # a loaded 2-core CI machine: no throttled timers or frames in the tab
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  "--disable-backgrounding-occluded-windows"]
SCREENSHOTS = REPO_ROOT / "tests" / ".screenshots"
KEY = "test-console-key-0123456789abcdef"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", DEFAULT_APPID)
    monkeypatch.setenv("WECHAT_APPSECRET", DEFAULT_SECRET)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


def write_defaults(folder: Path, api_base: str, **more: Any) -> Path:
    keys = {"api_base": api_base, "rate": 0, **more}
    lines = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path = folder / "defaults.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sheet(openids: list[str], targets: list[str], extra: str = "") -> bytes:
    lines = ["openid,group_name"]
    lines += [f"{o},{targets[i % len(targets)]}" for i, o in enumerate(openids)]
    return ("\n".join(lines) + "\n" + extra).encode()


@dataclass
class ConsoleUnderTest:
    client: Any  # aiohttp TestClient
    workspace: Path
    base_url: str
    sandbox_url: str
    sandbox: Any

    def auth(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}", **headers}


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
        yield ConsoleUnderTest(client, workspace, f"http://127.0.0.1:{port[0]}", sb.base_url,
                               sb)


# --- real processes ---------------------------------------------------------------------------
def _line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def cli_env() -> dict[str, str]:
    env = {**os.environ, "WECHAT_APPID": DEFAULT_APPID, "WECHAT_APPSECRET": DEFAULT_SECRET,
           "PYTHONUNBUFFERED": "1", "BATCHMOVE_TEST_KEY": KEY}
    env.pop("WECHAT_ACCESS_TOKEN", None)
    return env


@dataclass
class Process:
    proc: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def start_process(args: list[str], prefix: str, log: Path) -> Process:
    err = log.open("a")
    proc = subprocess.Popen([sys.executable, "-m", "batchmove", *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=err, text=True, env=cli_env())
    err.close()
    line = _line(proc, 20.0)
    if not line.startswith(prefix):
        proc.kill()
        proc.wait()
        raise AssertionError(f"{args[0]} did not start: {line!r}; see {log}")
    return Process(proc, line[len(prefix):].strip())


@dataclass
class Stage:
    """A sandbox process and a console process over one workspace, for browser tests."""

    root: Path
    sandbox_args: list[str]
    sandbox: Process | None = None
    console: Process | None = None
    extra: list[str] = field(default_factory=list)

    def start_sandbox(self) -> str:
        self.sandbox = start_process(["sandbox", "--port", "0", *self.sandbox_args],
                                     "listening on ", self.root / "sandbox.log")
        return self.sandbox.url

    def start_console(self) -> str:
        assert self.sandbox is not None
        defaults = write_defaults(self.root, self.sandbox.url, rate=20)
        self.console = start_process(
            ["serve", "--port", "0", "--workspace", str(self.root / "runs"),
             "--jobs", str(self.root / "jobs"), "--defaults", str(defaults),
             "--key-env", "BATCHMOVE_TEST_KEY", *self.extra],
            "console on ", self.root / "console.log")
        return self.console.url

    @property
    def base(self) -> str:
        assert self.console is not None
        return self.console.url.split("/?key=")[0]

    def sandbox_state(self) -> dict[str, Any]:
        assert self.sandbox is not None
        with urllib.request.urlopen(f"{self.sandbox.url}/sandbox/state", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def close(self) -> None:
        for p in (self.console, self.sandbox):
            if p is not None:
                p.stop()


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


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions (polled without `eval`, which the CSP forbids)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    for attempt in (1, 2):  # a screenshot waits for a frame, which a loaded machine can delay
        try:
            page.screenshot(path=str(path), full_page=True, animations="disabled",
                            timeout=45_000)
            break
        except Exception as exc:  # playwright's TimeoutError: once more, then fail
            if attempt == 2 or "Timeout" not in type(exc).__name__:
                raise
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it plainly at the end of the run when the browser tests could not run."""
    reasons = {str(r.longrepr[-1]) for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and "browser tests skipped" in str(r.longrepr)}
    for reason in sorted(reasons):
        terminalreporter.write_line(reason.removeprefix("Skipped: "), yellow=True, bold=True)
