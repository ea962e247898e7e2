"""The console's aiohttp application (pages, the JSON API, static files) and `serve`.

Pages are rendered on the server (jinja2, autoescaped); the vendored script only uploads,
posts the buttons' actions, pages the invalid rows and shows the live figures, always through
`textContent`, so no name from a spreadsheet is ever parsed as HTML.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from batchmove.console import jsonapi, login, pages
from batchmove.console.audit import AUDIT_FILE, AuditLog
from batchmove.console.jsonapi import CONSOLE
from batchmove.console.login import AUDIT, GATE, unauthorized
from batchmove.console.people import People
from batchmove.console.runfiles import instance_id
from batchmove.console.security import (
    Gate,
    Handler,
    QuietAccessLogger,
    allowed_hosts,
    guard,
    host_guard,
)
from batchmove.console.service import Console, ConsoleConfig

HERE = Path(__file__).parent
LOG = logging.getLogger("batchmove.console")


def make_app(config: ConsoleConfig, key: str | None,
             hosts: Callable[[], frozenset[str]] | None = None,
             planner: Executor | None = None, people: People | None = None,
             tls: bool = False) -> web.Application:
    """The application: the console under its prefix `/c/<id>/` (a sub-application: pages,
    the JSON API, static files), and around it the host's other paths, which only redirect
    there. `key`: the key mode's key (None with `people`, the --users mode); `hosts` gives
    the Host names to accept (by default the configured address, so a port the OS chose is
    passed in once known: set `app[GATE].port` too); `planner` runs the plans (default: two
    planning processes of the console's own, started at once)."""
    allowed = hosts or (lambda: allowed_hosts(config.host, config.port, config.public_urls))
    prefix = f"/c/{instance_id(config.workspace)}/"
    gate = Gate(key if people is None else None, people, config.port, tls, prefix=prefix)
    app = web.Application(middlewares=[host_guard(gate, allowed), _with_slash],
                          client_max_size=config.max_upload + (1 << 20))
    app[CONSOLE] = Console(config, planner)
    app[GATE] = gate
    gate.on_login = lambda request, person: login.audit(request, "login", person)
    app[AUDIT] = AuditLog(config.workspace / AUDIT_FILE)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                         autoescape=jinja2.select_autoescape(default=True),
                         undefined=jinja2.StrictUndefined)
    app[aiohttp_jinja2.static_root_key] = prefix + "static"
    console = web.Application(middlewares=[guard(gate, unauthorized), jsonapi.api_errors])
    console.router.add_static("/static/", HERE / "static")
    pages.add_routes(console)
    login.add_routes(console)
    jsonapi.add_routes(console)
    app.add_subapp(prefix, console)
    app.router.add_route("*", "/{tail:.*}", elsewhere)

    async def starting(app: web.Application) -> None:
        if planner is None:
            app[CONSOLE].planner.warm_up()

    async def closing(app: web.Application) -> None:
        app[CONSOLE].close()

    app.on_startup.append(starting)
    app.on_cleanup.append(closing)
    return app


@web.middleware
async def _with_slash(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/c/<id>` (no slash) is the console's address too: to `/c/<id>/`, which the
    sub-application answers (it never sees its prefix without the slash)."""
    prefix = request.config_dict[GATE].prefix
    if request.path == prefix.rstrip("/"):
        query = request.rel_url.raw_query_string
        return web.Response(status=307, headers={"Location": prefix + (f"?{query}" if query
                                                                       else "")})
    return await handler(request)


async def elsewhere(request: web.Request) -> web.Response:
    """A path outside the console's prefix: to the same path under it (307 keeps the method
    and body; `/` and old bookmarks land on the console). The API's old paths also say in
    the body where the API is now."""
    prefix = request.config_dict[GATE].prefix
    path = request.rel_url.raw_path
    if path.startswith("/c/"):  # another console's address (another workspace's)
        return web.Response(status=404, text=f"batchmove console: this console is at {prefix}\n")
    target = prefix + path.lstrip("/")
    if request.rel_url.raw_query_string:
        target += "?" + request.rel_url.raw_query_string
    if not path.startswith("/api/"):
        return web.Response(status=307, headers={"Location": target})
    return web.json_response({"error": f"the API is under the console's address: {prefix}api/",
                              "api": f"{prefix}api/"}, status=307, headers={"Location": target})


def tls_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 at least) with the certificate and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


async def serve(config: ConsoleConfig, key: str | None, announce: Callable[[str], None],
                stop: asyncio.Event | None = None, *, people: People | None = None,
                tls: ssl.SSLContext | None = None) -> None:
    """Listen until SIGINT/SIGTERM (or `stop`); `announce` gets the address (with the key in
    key mode)."""
    bound: list[int] = []
    app = make_app(config, key, lambda: allowed_hosts(
        config.host, bound[0] if bound else config.port, config.public_urls),
        people=people, tls=tls is not None)
    runner = web.AppRunner(app, access_log_class=QuietAccessLogger, access_log=LOG,
                           handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=tls)
    try:
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else config.port
        bound.append(port)
        gate = app[GATE]
        gate.port = port
        announce(address(config, port, tls is not None, key if people is None else None,
                         gate.prefix))
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
    finally:
        await runner.cleanup()


def address(config: ConsoleConfig, port: int, tls: bool, key: str | None, prefix: str) -> str:
    """`console on URL`: the first --public-url, else the address it listens on, with the
    console's prefix; `?key=` in key mode."""
    if config.public_urls:
        base = config.public_urls[0].rstrip("/")
    else:
        shown = f"[{config.host}]" if ":" in config.host else config.host
        base = f"{'https' if tls else 'http'}://{shown}:{port}"
    return f"console on {base}{prefix}" + (f"?key={key}" if key else "")
