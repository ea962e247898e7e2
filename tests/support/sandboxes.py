"""Sandboxes and the things every test that talks to one needs: the repository's root, a clock
that moves only when told, the factory fixture's type, the CLI's environment for the sandbox
account, and `Api`, a bare aiohttp caller of the sandbox's wire protocol."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from batchmove.sandbox import RunningSandbox, SandboxConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING = "listening on "
#: the environment of a `batchmove` process run against the sandbox's account (no token)
ENV = {**os.environ, "WECHAT_APPID": SandboxConfig().appid,
       "WECHAT_APPSECRET": SandboxConfig().secret, "PYTHONUNBUFFERED": "1"}
ENV.pop("WECHAT_ACCESS_TOKEN", None)
Json = dict[str, Any]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SandboxFactory(Protocol):
    def __call__(self, config: SandboxConfig | None = None, *,
                 clock: Callable[[], float] = ...) -> Awaitable[RunningSandbox]: ...


class Api:
    """A bare aiohttp caller: what a WeChat client sends, nothing more."""

    def __init__(self, session: aiohttp.ClientSession, sb: RunningSandbox) -> None:
        self.session, self.sb, self.token = session, sb, ""

    async def fetch_token(self, **params: str) -> Json:
        query = {"grant_type": "client_credential", "appid": self.sb.state.appid,
                 "secret": self.sb.state.secret, **params}
        async with self.session.get(f"{self.sb.base_url}/cgi-bin/token", params=query) as resp:
            body: Json = await resp.json()
        self.token = body.get("access_token", self.token)
        return body

    async def stable(self, force: bool = False, fields: dict[str, str] | None = None) -> Json:
        payload = {"grant_type": "client_credential", "appid": self.sb.state.appid,
                   "secret": self.sb.state.secret, "force_refresh": force, **(fields or {})}
        url = f"{self.sb.base_url}/cgi-bin/stable_token"
        async with self.session.post(url, json=payload) as resp:
            result: Json = await resp.json()
            return result

    async def call(self, endpoint: str, body: Any = None, *, token: str | None = None,
                   method: str | None = None, **query: str) -> Json:
        params = {"access_token": self.token if token is None else token, **query}
        if token == "":
            del params["access_token"]
        method = method or ("GET" if body is None else "POST")
        url = f"{self.sb.base_url}/cgi-bin/{endpoint}"
        async with self.session.request(method, url, params=params, json=body) as resp:
            assert resp.status == 200
            result: Json = await resp.json()
            return result

    async def admin(self, path: str, body: Any = None) -> Any:
        method = "GET" if body is None else "POST"
        async with self.session.request(method, f"{self.sb.base_url}/sandbox/{path}",
                                        json=body) as resp:
            return await resp.json()


async def api_for(session: aiohttp.ClientSession, sb: RunningSandbox) -> Api:
    api = Api(session, sb)
    await api.fetch_token()
    return api
