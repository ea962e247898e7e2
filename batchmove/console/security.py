"""Who may use the console: a signed-in person, through the console's own address and pages.

- A login exchanges the key (`?key=` once, or the login form) or a person's name and secret
  (`--users`) for a session (sessions.py); the cookie holds only the session's random token.
  API clients send `Authorization: Bearer TOKEN` (from `POST /api/login`) or, in key mode,
  the key itself. Without it: 401 (pages show the login form), no data.
- The console lives under its own path, `/c/<id>/` (the id is kept in the workspace), and
  the session cookie's `Path` is that prefix: browsers send a host's cookies to every port,
  but only to the paths a cookie's `Path` matches, so another server on this host (another
  console, any program on another port) is not sent it. The rest of the host's paths only
  redirect there (app.py).
- `Host` must name this console: `--host`, a `--public-url`, a loopback name, or an IP address
  (a DNS-rebinding page always names a host name of its own, never an address); 400 otherwise.
- A POST must come from the console's own origin (`Origin`, CSRF); a client that sends no
  Origin and no session cookie (a Bearer client, a login by script) is no browser and is let
  through.
- The access log shows paths without their query strings: the key never reaches the log.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware

from batchmove.console.people import KEY_HOLDER, People, Person
from batchmove.console.sessions import Sessions, Throttle, cookie_name
from batchmove.errors import UsageError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PERSON: web.RequestKey[Person] = web.RequestKey("person", Person)
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: reachable without a session (paths under the console's prefix): the login page and form,
#: the API's login, the tab's icon
PUBLIC = frozenset({"/login", "/api/login", "/favicon.ico"})
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'")


def console_key(env_name: str | None) -> str:
    """The key from the named environment variable, or a fresh random one."""
    if env_name is None:
        return secrets.token_urlsafe(24)
    value = os.environ.get(env_name, "")
    if len(value) < 16:
        raise UsageError(f"--key-env {env_name}: the variable must hold a key of at least 16 "
                         "characters")
    return value


def public_host(url: str) -> str:
    """`https://moves.lan:8700/` -> `moves.lan:8700` (the Host such a URL sends)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--public-url must be an http:// or https:// address, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host.lower()}:{port}"


def allowed_hosts(host: str, port: int, public: Iterable[str] = ()) -> frozenset[str]:
    """The Host header values this console answers to by name (IP addresses: `host_ok`)."""
    names = {host, "localhost", "127.0.0.1", "[::1]"}
    try:
        if ipaddress.ip_address(host).version == 6:
            names.add(f"[{host}]")
    except ValueError:
        pass
    return frozenset({f"{n}:{port}" for n in names} | {public_host(u) for u in public})


def host_ok(value: str, named: frozenset[str], port: int) -> bool:
    if value in named:
        return True
    address, _, given = value.rpartition(":")
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return given == str(port)


def _same(given: str, key: str) -> bool:
    return bool(given) and bool(key) and hmac.compare_digest(given.encode(), key.encode())


@dataclass
class Gate:
    """The console's sign-in state: the key (key mode) or the people (`--users`), sessions."""

    key: str | None
    people: People | None
    port: int
    tls: bool = False
    #: the console's prefix, `/c/<id>/`: every page, the API and the cookie's Path
    prefix: str = "/"
    sessions: Sessions = field(default_factory=Sessions)
    throttle: Throttle = field(default_factory=Throttle)
    #: told of each login by the key in the address (the audit log)
    on_login: Callable[[web.Request, Person], None] | None = None

    @property
    def cookie(self) -> str:
        return cookie_name(self.port, self.prefix.strip("/").removeprefix("c/"))

    def with_key(self, given: str) -> Person | None:
        return Person(KEY_HOLDER, "admin") if self.key and _same(given, self.key) else None

    def signed_in(self, request: web.Request) -> tuple[Person | None, bool]:
        """The request's person, and whether it came by a Bearer header (no browser)."""
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            token = bearer.removeprefix("Bearer ").strip()
            return self.with_key(token) or self.sessions.find(token), True
        return self.sessions.find(request.cookies.get(self.cookie, "")), False

    def local(self, request: web.BaseRequest) -> str:
        """The request's path inside the console (`/c/<id>/api/runs` -> `/api/runs`)."""
        return "/" + request.path.removeprefix(self.prefix)

    def set_cookie(self, response: web.StreamResponse, token: str) -> None:
        response.set_cookie(self.cookie, token, httponly=True, samesite="Strict",
                            path=self.prefix, secure=self.tls or None,
                            max_age=int(self.sessions.ttl))

    def clear_cookie(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.cookie, path=self.prefix)


def host_guard(gate: Gate, hosts: Callable[[], frozenset[str]]) -> Middleware:
    """The outer middleware (every path of the host): the right Host, and hardening headers."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_ok(request.host.lower(), hosts(), gate.port):
            return web.Response(status=400, text="batchmove console: unexpected Host header\n")
        response = await handler(request)
        _harden(response)
        return response

    return check


def guard(gate: Gate,
          unauthorized: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Middleware:
    """The console's middleware (paths under its prefix): refuses requests without a session
    or from another origin, and exchanges `?key=` for a session."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        person, by_bearer = gate.signed_in(request)
        if request.method == "GET" and "key" in request.query:
            exchanged = _exchange_key(request, gate)
            return exchanged or await unauthorized(request)
        if request.method in _UNSAFE and not _same_origin(request, by_bearer, gate.cookie):
            return web.json_response({"error": "cross-origin request refused"}, status=403)
        if person is None and gate.local(request) not in PUBLIC:
            return await unauthorized(request)
        if person is not None:
            request[PERSON] = person
        return await handler(request)

    return check


def _same_origin(request: web.Request, by_bearer: bool, cookie: str) -> bool:
    """An Origin must be ours; none at all is a client that is no browser, unless it carries
    the session cookie (which a browser adds by itself: CSRF)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return by_bearer or cookie not in request.cookies
    return origin == f"{request.scheme}://{request.host}"


def _exchange_key(request: web.Request, gate: Gate) -> web.StreamResponse | None:
    """`?key=KEY` (the printed address): a session cookie, and the same address without it
    (None: not the key)."""
    person = gate.with_key(request.query.get("key", ""))
    if person is None:
        return None
    target = request.rel_url.with_query([(k, v) for k, v in request.query.items() if k != "key"])
    moved = web.Response(status=303, headers={"Location": str(target)})
    gate.set_cookie(moved, gate.sessions.open(person))
    if gate.on_login is not None:
        gate.on_login(request, person)
    return moved


def _harden(response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")  # no-referrer: Origin null
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", _CSP)


class QuietAccessLogger(AbstractAccessLogger):
    """Method, path (no query: it may hold the key), status, time taken."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)

