"""The aiohttp.web server around `SandboxState`: WeChat's URLs, fault injection, admin endpoints.

Admin endpoints (never faulted, no token): `GET /sandbox/state`, `GET /sandbox/timeline`,
`GET|POST /sandbox/faults`, `POST /sandbox/move`, `GET /sandbox/moves?since=N`,
`POST /sandbox/tag`, `GET /sandbox/tag_log?since=N`, `POST /sandbox/expire_tokens`; and the
WeCom robot, ping and webhook receivers of `batchmove.sandbox.robot` (for notifications).
With a third-party platform (`platform=`), /cgi-bin/component/ is the platform, every other
/cgi-bin/ call goes to the authorizer whose token it carries, the admin endpoints take
`?appid=` to pick an account, and `GET|POST /sandbox/platform` reads and steers the platform
(`platweb.py`).

Faults (latency, errcode -1, HTTP 5xx, dropped connections, hung responses) apply to /cgi-bin/
only, drawn from an RNG seeded by `SandboxConfig.seed`. Nothing is logged per request and no
token or secret is ever printed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson
from aiohttp import web

from batchmove.sandbox.config import DEFAULT_PORT, ENDPOINTS, Faults, SandboxConfig
from batchmove.sandbox.platform import PlatformConfig, PlatformState
from batchmove.sandbox.platweb import PLATFORM, add_platform_routes, routed
from batchmove.sandbox.pushback import latency_s
from batchmove.sandbox.robot import RobotState, add_robot_routes
from batchmove.sandbox.state import SandboxState
from batchmove.sandbox.wire import ApiFault, error_body

_STATE = web.AppKey("state", SandboxState)
_CLOSING = web.AppKey("closing", asyncio.Event)
_RNG = web.AppKey("rng", random.Random)
_HTML_ERRORS = {
    502: "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
         "</h1></center><hr><center>nginx</center></body></html>",
    503: "<html><head><title>503 Service Unavailable</title></head><body><center><h1>503 "
         "Service Unavailable</h1></center><hr><center>nginx</center></body></html>",
}


def json_response(payload: Any, status: int = 200) -> web.Response:
    """JSON with Chinese left unescaped, as WeChat sends it. orjson: a user/info/batchget
    answer (100 users, 33 kB) took 1.07 ms with json, 0.11 ms (1M-follower export: -10 s)."""
    return web.Response(
        status=status,
        body=orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )


class _Dropped(Exception):
    """Raised after closing the transport so aiohttp sends nothing back."""


def _drop(request: web.Request) -> NoReturn:
    if request.transport is not None:
        request.transport.close()
    raise _Dropped


async def _cgi(request: web.Request) -> web.StreamResponse:
    endpoint = request.match_info["endpoint"]
    raw = await request.read()
    state: SandboxState | None = request.app[_STATE]
    if PLATFORM in request.app:
        state, answer = routed(request.app[PLATFORM], endpoint, request, raw)
        if state is None:
            return json_response(answer)
    assert state is not None
    if endpoint not in ENDPOINTS:
        return json_response({"errcode": 404, "errmsg": "not found"}, status=404)
    rng = request.app[_RNG]
    state.record_arrival(endpoint)
    faults = state.faults
    if state.pushback.busy(faults.busy_above):  # overloaded: the excess is answered -1
        return json_response(error_body(-1))
    if faults.fault_endpoints and endpoint not in faults.fault_endpoints:
        return json_response(state.handle(endpoint, request.method, request.query, raw))
    if faults.latency_ms or faults.jitter_ms:
        await asyncio.sleep(latency_s(faults.latency_ms, faults.jitter_ms, faults.latency_tail,
                                      rng))
    if faults.drop_rate and rng.random() < faults.drop_rate:
        _drop(request)
    if faults.http_error_rate and rng.random() < faults.http_error_rate:
        status = rng.choice((502, 503))
        return web.Response(status=status, text=_HTML_ERRORS[status], content_type="text/html")
    if faults.error_rate and rng.random() < faults.error_rate:
        return json_response(error_body(-1))
    result = state.handle(endpoint, request.method, request.query, raw)
    if faults.hang_rate and rng.random() < faults.hang_rate:
        await _hang(request, state.config.hang_seconds)
    return json_response(result)


async def _hang(request: web.Request, seconds: float) -> None:
    """The call was applied; its answer never comes (until shutdown or `seconds` pass)."""
    with suppress(TimeoutError):
        await asyncio.wait_for(request.app[_CLOSING].wait(), seconds)
    _drop(request)


def _state(request: web.Request) -> SandboxState:
    """The account an admin call is about: `?appid=` on a platform, else the only one."""
    appid = request.query.get("appid")
    if appid and PLATFORM in request.app:
        state = request.app[PLATFORM].account_for_appid(appid)
        if state is None:
            raise web.HTTPNotFound(text=f"no authorizer {appid}")
        return state
    return request.app[_STATE]


async def _admin_state(request: web.Request) -> web.Response:
    return json_response(_state(request).snapshot())


async def _admin_timeline(request: web.Request) -> web.Response:
    return json_response({"calls": _state(request).timeline_calls()})


async def _admin_moves(request: web.Request) -> web.Response:
    """Openids applied by move calls since position `since` (default 0), in order."""
    state = _state(request)
    since = int(request.query.get("since", "0") or 0)
    return json_response({"openids": state.move_log[since:], "next": len(state.move_log)})


async def _admin_tag_log(request: web.Request) -> web.Response:
    """(action, openid, tagid) applied by (un)tagging calls since position `since`, in order."""
    log = _state(request).tag_log
    since = int(request.query.get("since", "0") or 0)
    return json_response({"entries": log[since:], "next": len(log)})


async def _admin_faults(request: web.Request) -> web.Response:
    state = _state(request)
    if request.method == "POST":
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            state.set_faults(**changes)
        except ValueError as exc:
            return json_response({"error": str(exc)}, status=400)
    return json_response(state.faults.as_dict())


async def _admin_move(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        _state(request).move_directly(str(body["openid"]), int(body["to_groupid"]))
    except (ValueError, KeyError, TypeError):
        return json_response(error_body(47001), status=400)
    except ApiFault as fault:
        return json_response(error_body(fault.code), status=400)
    return json_response({"errcode": 0, "errmsg": "ok"})


async def _admin_tag(request: web.Request) -> web.Response:
    """`{"openid", "tagid", "untag": false}`: someone else (un)tags one user."""
    try:
        body = await request.json()
        untag = body.get("untag", False)
        if not isinstance(untag, bool):
            raise TypeError("untag must be true or false")
        _state(request).tag_directly(str(body["openid"]), int(body["tagid"]), untag)
    except (ValueError, KeyError, TypeError, AttributeError):
        return json_response(error_body(47001), status=400)
    except ApiFault as fault:
        return json_response(error_body(fault.code), status=400)
    return json_response({"errcode": 0, "errmsg": "ok"})


async def _admin_expire(request: web.Request) -> web.Response:
    _state(request).expire_tokens()
    return json_response({"errcode": 0, "errmsg": "ok"})


@web.middleware
async def _swallow_drops(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """A dropped call ends here quietly: the transport is closed, nothing is written."""
    try:
        response: web.StreamResponse = await handler(request)
    except _Dropped:
        response = web.Response(status=499)  # never reaches the closed socket
    return response


def build_app(state: SandboxState, robot: RobotState | None = None,
              platform: PlatformState | None = None,
              push_to: str | None = None) -> web.Application:
    """The aiohttp application serving `state` (for embedding in other aiohttp servers), or
    `platform` and its authorizers (`state` is then the first of them)."""
    app = web.Application(middlewares=[_swallow_drops], client_max_size=4 * 1024 * 1024)
    add_robot_routes(app, robot or RobotState())  # before the /cgi-bin/ catch-all
    if platform is not None:
        add_platform_routes(app, platform, push_to)
    app[_STATE] = state
    app[_CLOSING] = asyncio.Event()
    app[_RNG] = random.Random(state.config.seed)
    app.router.add_get("/sandbox/state", _admin_state)
    app.router.add_get("/sandbox/timeline", _admin_timeline)
    app.router.add_route("GET", "/sandbox/faults", _admin_faults)
    app.router.add_route("POST", "/sandbox/faults", _admin_faults)
    app.router.add_post("/sandbox/move", _admin_move)
    app.router.add_get("/sandbox/moves", _admin_moves)
    app.router.add_post("/sandbox/tag", _admin_tag)
    app.router.add_get("/sandbox/tag_log", _admin_tag_log)
    app.router.add_post("/sandbox/expire_tokens", _admin_expire)
    app.router.add_route("*", "/cgi-bin/{endpoint:.+}", _cgi)
    return app


@dataclass(slots=True)
class RunningSandbox:
    """A started sandbox: where it listens and the state behind it."""

    state: SandboxState
    host: str
    port: int
    robot: RobotState = field(default_factory=RobotState)
    platform: PlatformState | None = None

    def robot_url(self, key: str) -> str:
        """The webhook URL of the robot with this key, as WeCom gives it out."""
        return f"{self.base_url}/cgi-bin/webhook/send?key={key}"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def set_faults(self, **changes: Any) -> Faults:
        """Change live settings; same keys as `POST /sandbox/faults`."""
        return self.state.set_faults(**changes)


@asynccontextmanager
async def running_sandbox(
    config: SandboxConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Callable[[], float] = time.monotonic,
    platform: PlatformConfig | None = None,
    push_to: str | None = None,
    state: SandboxState | None = None,
) -> AsyncIterator[RunningSandbox]:
    """Serve a fresh sandbox on host:port (0 = any free port) for the `async with` block;
    with `platform`, a third-party platform and its authorizers (`config` is then unused);
    or the account `state` already built (from an export file, its errors caught first)."""
    plat = PlatformState(platform, clock) if platform is not None else None
    if state is None:
        state = plat.first if plat is not None else SandboxState(config, clock)
    robot = RobotState(clock=clock)
    app = build_app(state, robot, plat, push_to)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        yield RunningSandbox(state=state, host=host, port=bound_port, robot=robot,
                             platform=plat)
    finally:
        app[_CLOSING].set()
        await runner.cleanup()


def serve(config: SandboxConfig | None = None, host: str = "127.0.0.1",
          port: int = DEFAULT_PORT, platform: PlatformConfig | None = None,
          push_to: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; prints `listening on http://HOST:PORT` once bound."""
    asyncio.run(_serve(config, host, port, platform, push_to))


async def _serve(config: SandboxConfig | None, host: str, port: int,
                 platform: PlatformConfig | None, push_to: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running_sandbox(config, host, port, platform=platform,
                               push_to=push_to) as sandbox:
        _announce(f"listening on {sandbox.base_url}")
        await stop.wait()


def _announce(line: str) -> None:
    """Print `line` on stdout; a closed stdout (a reader that went away, as `| head -1` does,
    or none at all) does not stop a sandbox that is serving: later writes go to /dev/null."""
    try:
        print(line, file=sys.stdout, flush=True)
    except (BrokenPipeError, ValueError, AttributeError):
        if sys.stdout is None:
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        with suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush too
        os.close(devnull)
