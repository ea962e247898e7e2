"""A server that answers like WeChat, badly on purpose: what batchmove does with answers it
must not trust.

Not the sandbox: a small aiohttp app on 127.0.0.1 that forwards every `/cgi-bin/` call to a
real sandbox (`upstream`) and hands its answer back, unless one of its `Fault`s matches the
call. A fault changes one thing:

- `drop` / `retype`: the upstream's answer without a field, or with the field's value of the
  wrong type (`field` is a path: `groups`, `quota.remain`, `user_info_list[*].groupid`);
- `html`: HTTP 200 with an HTML page (a proxy's or a captive portal's);
- `cut`: the headers with the full `Content-Length`, half the body, then the connection closed;
- `hang`: the headers, then nothing until the client gives up;
- `errcode`: `{"errcode": N, "errmsg"}` (45011 windows, 40001 forever), never forwarded.

`drop`, `retype`, `cut` and `hang` forward the call first (`forward=True`): the sandbox applies
it, as WeChat would have, and only the answer is lost or wrong. A fault fires on the calls to
its endpoint after the first `after`, `times` times (None: forever), and (`minute_window`)
only until the wall-clock minute of its first firing ends, as WeChat's minute quotas do.
`ThreadedFaultServer` serves a sandbox and the fault server from one background thread, for
tests that run `batchmove` as a process; `running_fault_server` is the same in a test's loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web

from batchmove.sandbox import RunningSandbox, SandboxConfig, running_sandbox

Kind = Literal["drop", "retype", "html", "cut", "hang", "errcode"]
HTML = (b"<html><head><title>Portal</title></head><body><h1>Please sign in</h1>"
        b"</body></html>")
_STEP = re.compile(r"^(?P<name>[^\[]*)(?:\[(?P<index>\*|\d+)\])?$")


@dataclass
class Fault:
    """One way of answering `endpoint` badly (see the module docstring)."""

    endpoint: str
    kind: Kind
    field: str = ""
    errcode: int = 0
    times: int | None = None
    after: int = 0
    forward: bool = True
    minute_window: bool = False
    seen: int = 0
    fired: int = 0
    window_ends: float | None = None

    def fires(self, now: float) -> bool:
        """Counts the call; True when this one is answered badly."""
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        if self.minute_window:
            if self.window_ends is None:
                self.window_ends = now - now % 60 + 60
            if now >= self.window_ends:
                return False
        self.fired += 1
        return True


@dataclass
class FaultState:
    """The faults in force and what the server saw: calls per endpoint, faults fired."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    clock: Callable[[], float] = time.time

    def match(self, endpoint: str) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint in (endpoint, "*") and fault.fires(self.clock()):
                return fault
        return None


def _steps(path: str) -> list[tuple[str, str | None]]:
    found = []
    for part in path.split("."):
        step = _STEP.match(part)
        assert step is not None, path
        found.append((step["name"], step["index"]))
    return found


def _edit(node: Any, steps: list[tuple[str, str | None]], kind: Kind) -> None:
    """Drop the field at the path's end, or give it a value of another type."""
    (name, index), rest = steps[0], steps[1:]
    if index is None and not rest:
        if kind == "drop":
            node.pop(name, None)
        else:
            value = node.get(name)
            node[name] = "twelve" if isinstance(value, int) else 12 if isinstance(value, str) \
                else {"oops": 1} if isinstance(value, list) else [value]
        return
    child = node[name] if name else node
    if index is None:
        _edit(child, rest, kind)
        return
    targets = child if index == "*" else [child[int(index)]]
    for item in targets:
        if rest:
            _edit(item, rest, kind)
        elif kind == "drop":
            child.remove(item)
        else:
            child[child.index(item)] = "twelve"


class _Gone(Exception):
    """The transport was closed on purpose: nothing more is written."""


async def _forward(request: web.Request, state: FaultState, session: aiohttp.ClientSession,
                   body: bytes) -> tuple[int, bytes, str]:
    url = f"{state.upstream}{request.path}"
    async with session.request(request.method, url, params=request.query, data=body,
                               headers={"Content-Type": request.content_type}) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def _cgi(request: web.Request) -> web.StreamResponse:
    state: FaultState = request.app[STATE]
    endpoint = request.match_info["endpoint"]
    state.calls[endpoint] += 1
    body = await request.read()
    fault = state.match(endpoint)
    if fault is not None and fault.kind == "html":
        return web.Response(body=HTML, content_type="text/html")
    if fault is not None and fault.kind == "errcode":
        return _json({"errcode": fault.errcode, "errmsg": f"fault server: {fault.errcode}"})
    if fault is None or fault.forward:
        status, raw, ctype = await _forward(request, state, request.app[SESSION], body)
        if fault is None:
            return web.Response(status=status, body=raw, headers={"Content-Type": ctype})
    else:  # not applied: what the answer would have looked like
        raw = b'{"errcode": 0, "errmsg": "ok"}'
    if fault.kind in ("drop", "retype"):
        answer = orjson.loads(raw)
        _edit(answer, _steps(fault.field), fault.kind)
        return _json(answer)
    return await _broken(request, raw, fault.kind)


async def _broken(request: web.Request, raw: bytes, kind: Kind) -> web.StreamResponse:
    """The headers (promising the whole body), then half of it (`cut`) or nothing (`hang`)."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    resp.content_length = len(raw)
    await resp.prepare(request)
    if kind == "cut":
        await resp.write(raw[: len(raw) // 2])
    else:
        with suppress(TimeoutError):
            await asyncio.wait_for(request.app[CLOSING].wait(), 60)
    if request.transport is not None:
        request.transport.close()
    raise _Gone


def _json(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload),
                        headers={"Content-Type": "application/json; charset=utf-8"})


@web.middleware
async def _quiet(request: web.Request,
                 handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _Gone:
        response = web.Response(status=499)  # never reaches the closed socket
    return response


STATE = web.AppKey("state", FaultState)
SESSION = web.AppKey("session", aiohttp.ClientSession)
CLOSING = web.AppKey("closing", asyncio.Event)


@dataclass
class RunningFaults:
    """A started fault server in front of a started sandbox."""

    state: FaultState
    sandbox: RunningSandbox
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, *faults: Fault) -> None:
        """Replace the faults in force (none: every call is forwarded untouched)."""
        self.state.faults = list(faults)


@asynccontextmanager
async def running_fault_server(config: SandboxConfig | None = None,
                               faults: tuple[Fault, ...] = ()) -> AsyncIterator[RunningFaults]:
    """A sandbox on 127.0.0.1 and the fault server in front of it, for the `async with`."""
    async with AsyncExitStack() as stack:
        sandbox = await stack.enter_async_context(running_sandbox(config, "127.0.0.1", 0))
        state = FaultState(sandbox.base_url, list(faults))
        app = web.Application(middlewares=[_quiet])
        app[STATE] = state
        app[SESSION] = await stack.enter_async_context(aiohttp.ClientSession())
        app[CLOSING] = asyncio.Event()
        app.router.add_route("*", "/cgi-bin/{endpoint:.+}", _cgi)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=0.5)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        stack.callback(app[CLOSING].set)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield RunningFaults(state, sandbox, int(runner.addresses[0][1]))


class ThreadedFaultServer:
    """`with ThreadedFaultServer(config) as fs:` the same, served by a background thread, so
    a test can run `batchmove` processes against `fs.base_url` with plain blocking calls."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._ready: Future[RunningFaults] = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="faults", daemon=True)
        self.running: RunningFaults | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running_fault_server(self.config) as running:
                self._ready.set_result(running)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def __enter__(self) -> RunningFaults:
        self._thread.start()
        self.running = self._ready.result(timeout=60)
        return self.running

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
