"""An imitation of a WeCom (企业微信) group robot and of a healthchecks-style ping receiver.

    POST /cgi-bin/webhook/send?key=KEY   the robot: `{"msgtype": "markdown"|"text", ...}`
    GET  /sandbox/robot/messages         admin: what was accepted, oldest first (no keys)
    POST /sandbox/robot/faults           admin: `{"errcode": -1}`, `{"status": 503}`,
                                         `{"hang_s": 30}` or `{}` to answer normally again
    GET|POST /ping/{uuid}[/{what}]       the ping receiver (`start`, an exit code, or nothing)
    GET  /sandbox/pings                  admin: the pings received, oldest first
    POST /hook/{name}                    a generic webhook receiver (records the JSON body)
    GET  /sandbox/hooks                  admin: the bodies received

The robot enforces WeCom's documented limits: markdown content at most 4,096 bytes of UTF-8,
text at most 2,048 bytes, at most 20 messages a minute per robot (a sliding 60 s window of
accepted messages on the injected clock). The answers use WeCom's own codes:

| errcode | errmsg (as WeCom words it) | when |
|---|---|---|
| 0 | ok | accepted |
| 40058 | markdown.content exceed max length 4096. invalid Request Parameter | content too long |
| 44004 | empty content | content missing or empty |
| 40008 | invalid message type | msgtype other than markdown / text |
| 45009 | api freq out of limit | a 21st message inside 60 s |
| 93000 | invalid webhook url | a key the robot does not know (only when `keys` is given) |

Where the codes come from (public sources, read with the search tool): WxJava's table of WeCom
global codes, `weixin-java-common/.../error/WxCpErrorMsgEnum.java` (40008 不合法的msgtype,
40058 不合法的参数, 44004 文本消息content参数为空, 45009 接口调用超过限制); the over-long
markdown answer quoted verbatim in a PrometheusAlert-derived WeCom relay (`{"errcode":40058,
"errmsg":"markdown.content exceed max length 4096. invalid Request Parameter, hint: ..."}`,
feiyu563/PrometheusAlert issue 155); `{"errcode":45009,"errmsg":"api freq out of limit"}` and
`{"errcode":93000,"errmsg":"invalid webhook url"}` as seen by several robot clients' tests. The
text variant of 40058 ("text.content exceed max length 2048") is inferred by analogy.

Keys are secrets: nothing here prints or returns one; messages are filed under a short hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MARKDOWN_MAX_BYTES = 4096
TEXT_MAX_BYTES = 2048
MESSAGES_PER_MINUTE = 20
WINDOW_S = 60.0

_ERRMSG = {
    0: "ok",
    40008: "invalid message type",
    44004: "empty content",
    45009: "api freq out of limit",
    93000: "invalid webhook url",
}


def key_hash(key: str) -> str:
    """How the sandbox files a robot's messages without keeping its key in sight."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@dataclass
class RobotState:
    """Every robot behind one sandbox: accepted messages, pings, webhook bodies, faults."""

    clock: Callable[[], float] = time.monotonic
    keys: frozenset[str] | None = None  # None: any key is a robot
    per_minute: int = MESSAGES_PER_MINUTE
    messages: list[dict[str, Any]] = field(default_factory=list)
    pings: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # every errcode answered, in order
    fault: dict[str, Any] = field(default_factory=dict)
    _sent: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.keys is not None:
            self.keys = frozenset(self.keys)

    def send(self, key: str, raw: bytes) -> dict[str, Any]:
        """One `webhook/send` call: the answer WeCom would give, recording it if accepted."""
        code, errmsg, message = self._check(key, raw)
        self.answers.append(code)
        if code == 0 and message is not None:
            self._sent.setdefault(key, deque()).append(self.clock())
            self.messages.append({"robot": key_hash(key), **message})
        return {"errcode": code, "errmsg": errmsg}

    def _check(self, key: str, raw: bytes) -> tuple[int, str, dict[str, Any] | None]:
        if not key or (self.keys is not None and key not in self.keys):
            return 93000, _ERRMSG[93000], None
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return 40058, "invalid json request", None
        msgtype = body.get("msgtype") if isinstance(body, dict) else None
        if msgtype not in ("markdown", "text"):
            return 40008, _ERRMSG[40008], None
        part = body.get(msgtype)
        content = part.get("content") if isinstance(part, dict) else None
        if not isinstance(content, str) or not content:
            return 44004, _ERRMSG[44004], None
        limit = MARKDOWN_MAX_BYTES if msgtype == "markdown" else TEXT_MAX_BYTES
        if len(content.encode("utf-8")) > limit:
            return 40058, (f"{msgtype}.content exceed max length {limit}. "
                           "invalid Request Parameter"), None
        if not self._has_room(key):
            return 45009, _ERRMSG[45009], None
        return 0, "ok", {"msgtype": msgtype, "content": content}

    def _has_room(self, key: str) -> bool:
        sent = self._sent.setdefault(key, deque())
        now = self.clock()
        while sent and now - sent[0] >= WINDOW_S:
            sent.popleft()
        return len(sent) < self.per_minute

    def messages_of(self, key: str) -> list[dict[str, Any]]:
        digest = key_hash(key)
        return [m for m in self.messages if m["robot"] == digest]

    def ping(self, uuid: str, what: str, method: str) -> None:
        self.pings.append({"uuid": uuid, "what": what, "method": method, "at": self.clock()})


ROBOT = web.AppKey("robot", RobotState)


async def _send(request: web.Request) -> web.StreamResponse:
    robot = request.app[ROBOT]
    fault = dict(robot.fault)
    raw = await request.read()
    if fault.get("hang_s"):
        await asyncio.sleep(float(fault["hang_s"]))
    if fault.get("status"):
        return web.Response(status=int(fault["status"]), text="<html>error</html>",
                            content_type="text/html")
    if "errcode" in fault:
        code = int(fault["errcode"])
        robot.answers.append(code)
        return _json({"errcode": code, "errmsg": "system error" if code == -1 else "error"})
    return _json(robot.send(request.query.get("key", ""), raw))


async def _messages(request: web.Request) -> web.Response:
    return _json({"messages": request.app[ROBOT].messages})


async def _faults(request: web.Request) -> web.Response:
    try:
        fault = await request.json()
        if not isinstance(fault, dict):
            raise ValueError("expected a JSON object")
    except ValueError as exc:
        return _json({"error": str(exc)}, status=400)
    request.app[ROBOT].fault = fault
    return _json({"fault": fault})


async def _ping(request: web.Request) -> web.Response:
    robot = request.app[ROBOT]
    await request.read()
    robot.ping(request.match_info["uuid"], request.match_info.get("what", ""), request.method)
    return web.Response(text="OK")


async def _pings(request: web.Request) -> web.Response:
    return _json({"pings": request.app[ROBOT].pings})


async def _hook(request: web.Request) -> web.Response:
    robot = request.app[ROBOT]
    fault = dict(robot.fault)
    if fault.get("status"):
        return web.Response(status=int(fault["status"]), text="error")
    try:
        body = await request.json()
    except ValueError:
        return _json({"error": "expected JSON"}, status=400)
    robot.hooks.append({"name": request.match_info["name"], "body": body})
    return _json({"ok": True})


async def _hooks(request: web.Request) -> web.Response:
    return _json({"hooks": request.app[ROBOT].hooks})


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload, ensure_ascii=False).encode(),
                        headers={"Content-Type": "application/json; charset=utf-8"})


def add_robot_routes(app: web.Application, robot: RobotState) -> None:
    """Serve `robot` from `app` (the sandbox does; so can any small test app)."""
    app[ROBOT] = robot
    app.router.add_post("/cgi-bin/webhook/send", _send)
    app.router.add_get("/sandbox/robot/messages", _messages)
    app.router.add_post("/sandbox/robot/faults", _faults)
    app.router.add_get("/sandbox/pings", _pings)
    app.router.add_get("/sandbox/hooks", _hooks)
    app.router.add_post("/hook/{name}", _hook)
    for path in ("/ping/{uuid}", "/ping/{uuid}/{what}"):
        app.router.add_route("GET", path, _ping)
        app.router.add_route("POST", path, _ping)


def robot_app(robot: RobotState | None = None, keys: Iterable[str] | None = None) -> (
        web.Application):
    """A standalone application with only the robot, ping and hook routes."""
    app = web.Application()
    add_robot_routes(app, robot or RobotState(keys=frozenset(keys) if keys else None))
    return app
