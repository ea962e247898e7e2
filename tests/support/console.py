"""The console under test: constants, a console in-process or as a `batchmove serve` process
beside a sandbox process (`Stage`), the browser's flags and screenshots, waiting for a state."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchmove.sandbox import DEFAULT_APPID, DEFAULT_SECRET
from tests.support.sandboxes import REPO_ROOT

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


class Prefixed:
    """An aiohttp TestClient whose paths are the console's own: `get("/api/runs")` asks for
    `/c/<id>/api/runs`. `raw` is the client itself (paths as given: the host's other paths)."""

    def __init__(self, raw: Any, prefix: str) -> None:
        self.raw = raw
        self.prefix = prefix
        self.server = raw.server
        self.session = raw.session

    def path(self, path: str) -> str:
        return self.prefix + path.lstrip("/")

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.raw.get(self.path(path), **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.raw.post(self.path(path), **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.raw.request(method, self.path(path), **kwargs)


@dataclass
class ConsoleUnderTest:
    client: Prefixed
    workspace: Path
    base_url: str
    sandbox_url: str
    sandbox: Any

    def auth(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}", **headers}


@dataclass
class Team(ConsoleUnderTest):
    """A console in --users mode: `login(name)` gives that person's Bearer headers."""

    secrets: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    async def login(self, name: str) -> dict[str, str]:
        if name not in self.tokens:
            r = await self.client.post("/api/login", json={
                "name": name, "secret": self.secrets[name]})
            assert r.status == 200, await r.text()
            self.tokens[name] = (await r.json())["token"]
        return {"Authorization": f"Bearer {self.tokens[name]}"}


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
        return self.console.url.split("?key=")[0].rstrip("/")

    def sandbox_state(self) -> dict[str, Any]:
        assert self.sandbox is not None
        with urllib.request.urlopen(f"{self.sandbox.url}/sandbox/state", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def close(self) -> None:
        for p in (self.console, self.sandbox):
            if p is not None:
                p.stop()


@contextmanager
def console_in_thread(workspace: Path, defaults: Path, cookies: list[str]) -> Iterator[str]:
    """A console (key mode) served by a thread of this process, every request's Cookie
    header kept in `cookies` (what its server received); yields its printed address."""
    from aiohttp import web

    from batchmove.console import ConsoleConfig, make_app
    from batchmove.console.login import GATE
    from batchmove.console.security import allowed_hosts

    port: list[int] = []
    app = make_app(ConsoleConfig(workspace=workspace, defaults_path=defaults), KEY,
                   lambda: allowed_hosts("127.0.0.1", port[0]), ThreadPoolExecutor(1))

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        cookies.append(request.headers.get("Cookie", ""))
        return await handler(request)  # type: ignore[no-any-return]

    app.middlewares.insert(0, record)
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:  # in the thread's own loop (the browser's holds this thread)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port.append(runner.addresses[0][1])
        app[GATE].port = port[0]
        ready.set()
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(timeout=30), "the console in a thread did not start"
        yield f"http://127.0.0.1:{port[0]}{app[GATE].prefix}?key={KEY}"
    finally:
        stop.set()
        thread.join(timeout=30)


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions (polled without `eval`, which the CSP forbids)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def sign_in(page: Any, base: str, name: str, secret: str) -> None:
    """Through the login page, as a person does."""
    page.goto(base + "/login")
    page.fill("#name", name)
    page.fill("#secret", secret)
    page.click("#login-submit")
    page.wait_for_url(lambda url: "/login" not in url)


def run_axe(page: Any) -> list[dict[str, Any]]:
    """axe-core (vendored under tests/vendor/) on the page as it is: the violations of impact
    serious or critical. The context must bypass the page's CSP (`bypass_csp=True`)."""
    source = (REPO_ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js").read_text()
    page.evaluate(source)
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']}))"
                          ".violations.map(v => ({id: v.id, impact: v.impact, help: v.help, "
                          "nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))")
    return [v for v in found if v["impact"] in ("serious", "critical")]


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


async def wait_state(c: ConsoleUnderTest, run_id: str, *states: str) -> dict[str, Any]:
    for _ in range(300):
        info = await (await c.client.get(f"/api/runs/{run_id}", headers=c.auth())).json()
        if info["state"] in states:
            return info  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} stayed {info['state']}")
