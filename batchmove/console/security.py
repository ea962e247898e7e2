"""Who may use the console: the holder of its key, from this machine, from its own pages.

- The key (Jupyter-style) comes once as `?key=`; the answer sets an HttpOnly SameSite=Strict
  cookie and redirects to the same address without it, so the key leaves the address bar and
  the browser's history. API clients send `Authorization: Bearer KEY`. Without it: 401, no data.
- `Host` must name the address the console listens on (a DNS-rebinding page names its own).
- A POST must come from the console's own origin (`Origin`, CSRF); a Bearer client that sends
  no Origin is no browser and is let through.
- The access log shows paths without their query strings: the key never reaches the log.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware

from batchmove.errors import UsageError

COOKIE = "batchmove_console"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def console_key(env_name: str | None) -> str:
    """The key from the named environment variable, or a fresh random one."""
    if env_name is None:
        return secrets.token_urlsafe(24)
    value = os.environ.get(env_name, "")
    if len(value) < 16:
        raise UsageError(f"--key-env {env_name}: the variable must hold a key of at least 16 "
                         "characters")
    return value


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values this console answers to."""
    names = {host, "localhost", "127.0.0.1", "[::1]"}
    try:
        if ipaddress.ip_address(host).version == 6:
            names.add(f"[{host}]")
    except ValueError:
        pass
    return frozenset(f"{n}:{port}" for n in names)


def _same(given: str, key: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def guard(key: str, hosts: Callable[[], frozenset[str]],
          unauthorized: Callable[[web.Request], web.StreamResponse]) -> Middleware:
    """The middleware that refuses requests without the key, the right Host or Origin."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host.lower() not in hosts():
            return web.Response(status=400, text="batchmove console: unexpected Host header\n")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        by_bearer = _same(bearer, key)
        if request.method == "GET" and _same(request.query.get("key", ""), key):
            target = request.rel_url.with_query(
                [(k, v) for k, v in request.query.items() if k != "key"])
            moved = web.Response(status=303, headers={"Location": str(target)})
            moved.set_cookie(COOKIE, key, httponly=True, samesite="Strict", path="/")
            return moved
        if not (by_bearer or _same(request.cookies.get(COOKIE, ""), key)):
            return unauthorized(request)
        if request.method in _UNSAFE:
            origin = request.headers.get("Origin")
            if (origin or not by_bearer) and origin != f"{request.scheme}://{request.host}":
                return web.json_response({"error": "cross-origin request refused"}, status=403)
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        return response

    return check


class QuietAccessLogger(AbstractAccessLogger):
    """Method, path (no query: it may hold the key), status, time taken."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)
