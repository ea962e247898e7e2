"""The platform's side of the sandbox server: routing by token, the admin endpoint, the push.

- `/cgi-bin/component/<endpoint>` is answered by `PlatformState`; any other `/cgi-bin/` call
  goes to the authorizer whose access token it carries (`token`/`stable_token`: whose appid).
- `GET /sandbox/platform`: counts (component calls, authorizer tokens per account, ticket age);
  never a token, ticket or refresh token.
- `POST /sandbox/platform` `{"push_to": URL, "ip_blocked": bool, "revoke": APPID,
  "expire_tickets": true}`: push a fresh ticket to a receiver now (encrypted, as WeChat does;
  the receiver's HTTP status and answer come back), block the caller's IP (61004), revoke an
  authorisation (61003/61023), age every ticket past 12 h (61005).
- With `push_every`, a fresh ticket goes to `push_to` every so many seconds (WeChat: 600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from batchmove.sandbox.platform import PlatformState
from batchmove.sandbox.state import SandboxState
from batchmove.sandbox.wire import Json, error_body

PLATFORM = web.AppKey("platform", PlatformState)
_PUSH = web.AppKey("push", tuple)  # (url or None, seconds)


def routed(platform: PlatformState, endpoint: str, request: web.Request,
           raw: bytes) -> tuple[SandboxState | None, Json]:
    """(the account that answers this call, {}) or (None, the answer itself)."""
    if endpoint.startswith("component/"):
        name = endpoint.removeprefix("component/")
        return None, platform.handle(name, request.method, request.query, raw)
    if endpoint in ("token", "stable_token"):
        appid = request.query.get("appid") if endpoint == "token" else _body_appid(raw)
        state = platform.account_for_appid(appid)
        return (state, {}) if state is not None else (None, error_body(40013))
    token = request.query.get("access_token")
    state = platform.account_for_token(token)
    if state is None:
        return None, error_body(40001 if token else 41001)
    return state, {}


def _body_appid(raw: bytes) -> str | None:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    appid = body.get("appid") if isinstance(body, dict) else None
    return appid if isinstance(appid, str) else None


async def push(platform: PlatformState, url: str) -> dict[str, Any]:
    """POST a fresh ticket to a receiver as WeChat does; its status and (short) answer."""
    body, query = platform.ticket_push()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            url, params=query, data=body.encode(),
            headers={"Content-Type": "text/xml"}) as resp:
        return {"status": resp.status, "answer": (await resp.text())[:200]}


async def _admin(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    result: dict[str, Any] = {}
    if request.method == "POST":
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            if "ip_blocked" in changes:
                platform.ip_blocked = bool(changes["ip_blocked"])
            if "revoke" in changes:
                platform.revoke(str(changes["revoke"]))
            if changes.get("expire_tickets"):
                platform.expire_tickets()
            if "push_to" in changes:
                result["push"] = await push(platform, str(changes["push_to"]))
        except (ValueError, KeyError) as exc:
            return _json({"error": str(exc)}, 400)
        except aiohttp.ClientError as exc:
            return _json({"error": f"push failed: {type(exc).__name__}"}, 502)
    return _json({**platform.snapshot(), **result})


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload),
                        headers={"Content-Type": "application/json; charset=utf-8"})


async def _pusher(app: web.Application) -> AsyncIterator[None]:
    url, every = app[_PUSH]
    task = asyncio.create_task(_push_forever(app[PLATFORM], url, every)) if url else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _push_forever(platform: PlatformState, url: str, every: float) -> None:
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            await push(platform, url)
        await asyncio.sleep(every)


def add_platform_routes(app: web.Application, platform: PlatformState,
                        push_to: str | None = None, push_every: float = 600.0) -> None:
    """Serve `platform` from `app` (before the /cgi-bin/ catch-all is added)."""
    app[PLATFORM] = platform
    app[_PUSH] = (push_to, push_every)
    app.router.add_route("GET", "/sandbox/platform", _admin)
    app.router.add_route("POST", "/sandbox/platform", _admin)
    app.cleanup_ctx.append(_pusher)
